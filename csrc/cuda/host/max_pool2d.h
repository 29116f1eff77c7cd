// Host side of the max-pool family's CUDA launchers, shared by the nvcc build
// (cuda/max_pool2d.cu) and the emulated one (simt/max_pool2d.cpp), so both validate, lay out,
// allocate, dispatch and launch identically; only the HostLaunch differs (cuda/host/launch.h).
// Validation comes from checks.h (same messages as CPU and Meta), output shapes and memory
// formats match meta/max_pool2d.cpp, the launch plans are in cuda/launch/max_pool2d.h.
//
// Layout: every tensor a kernel sees is made contiguous in one memory format, that of the
// input (forward ops) or of the indices (backward ops), per pool_memory_format; 3-D (C, H, W)
// tensors are viewed as N = 1 and the outputs returned 3-D.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <limits>
#include <vector>

#include "checks/pool.h"
#include "cuda/host/launch.h"
#include "cuda/launch/max_pool2d.h"

namespace fastconv {
namespace FC_KERNEL_NS {
namespace host {

inline std::vector<int64_t> with_spatial(at::IntArrayRef sizes, int64_t h, int64_t w) {
  std::vector<int64_t> out(sizes.begin(), sizes.end());
  out[out.size() - 2] = h;
  out[out.size() - 1] = w;
  return out;
}

// (C, H, W) -> (1, C, H, W); 4-D tensors pass through.
inline at::Tensor as_batched(const at::Tensor& t) { return t.dim() == 3 ? t.unsqueeze(0) : t; }

// The slot in which the unpool kernels record the smallest logical position of an
// out-of-range index: INT64_MAX means none (atomicMin on its unsigned bits).
inline at::Tensor bad_index_slot(const at::Tensor& like) {
  return at::full({1}, std::numeric_limits<int64_t>::max(), like.options().dtype(at::kLong));
}

// Reads the slot back (a device sync: accepted, the error must be raised on the host) and,
// if a position was recorded, raises with the index found there. `indices` is 4-D (N, C, H, W).
inline void raise_if_bad_index(const at::Tensor& slot, const at::Tensor& indices,
                               int64_t plane, const char* op) {
  const int64_t pos = slot.item<int64_t>();
  if (pos == std::numeric_limits<int64_t>::max()) return;
  const int64_t c = indices.size(1), h = indices.size(2), w = indices.size(3);
  const int64_t value =
      indices[pos / (c * h * w)][(pos / (h * w)) % c][(pos / w) % h][pos % w].item<int64_t>();
  fail_index_out_of_range(op, value, plane);
}

inline kernels::Pool2dShape pool_shape(const at::Tensor& input4, int64_t out_h, int64_t out_w,
                                       at::IntArrayRef kernel, at::IntArrayRef stride,
                                       at::IntArrayRef padding, at::IntArrayRef dilation) {
  return {input4.size(0), input4.size(1), input4.size(2), input4.size(3), out_h, out_w,
          kernel[0],      kernel[1],      stride[0],      stride[1],      padding[0],
          padding[1],     dilation[0],    dilation[1]};
}

inline std::tuple<at::Tensor, at::Tensor> max_pool2d_with_indices(
    const HostLaunch& launch, const at::Tensor& input, at::IntArrayRef kernel,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const PoolGeometry g = check_max_pool2d(input, kernel, stride, padding, dilation, ceil_mode);
  const auto fmt = pool_memory_format(input);
  const at::Tensor x = as_batched(input.contiguous(fmt));
  const int64_t out_h = g.out_h.expect_int(), out_w = g.out_w.expect_int();
  const auto size = with_spatial(input.sizes(), out_h, out_w);
  at::Tensor output = launch.empty(size, input.options().memory_format(fmt));
  at::Tensor indices = launch.empty(size, input.options().dtype(at::kLong).memory_format(fmt));
  if (output.numel() == 0) return {output, indices};
  // 4-D views of the outputs (the same tensors when input is 4-D): the kernels write them
  const at::Tensor out4 = as_batched(output), ind4 = as_batched(indices);
  const kernels::Pool2dShape s = pool_shape(x, out_h, out_w, kernel, stride, padding, dilation);
  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv::max_pool2d_with_indices", [&] {
        kernels::launch_max_pool2d_forward<scalar_t, at::opmath_type<scalar_t>>(
            s, channels_last, x.const_data_ptr<scalar_t>(), out4.mutable_data_ptr<scalar_t>(),
            ind4.mutable_data_ptr<int64_t>(), launch.device, launch.stream);
      });
  return {output, indices};
}

inline at::Tensor max_pool2d_backward(const HostLaunch& launch, const at::Tensor& grad_output,
                                      const at::Tensor& indices, c10::SymIntArrayRef input_size,
                                      at::IntArrayRef kernel, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      bool ceil_mode) {
  const PoolGeometry g = check_max_pool2d_backward(grad_output, indices, input_size, kernel,
                                                   stride, padding, dilation, ceil_mode);
  const auto fmt = pool_memory_format(indices);
  const at::Tensor go = as_batched(grad_output.contiguous(fmt));
  const at::Tensor ind = as_batched(indices.contiguous(fmt));
  at::Tensor grad_input = launch.empty(C10_AS_INTARRAYREF_SLOW(input_size),
                                       grad_output.options().memory_format(fmt));
  if (grad_input.numel() == 0) return grad_input;
  const at::Tensor gi = as_batched(grad_input);  // a view: the kernel writes grad_input
  const kernels::Pool2dShape s = pool_shape(gi, g.out_h.expect_int(), g.out_w.expect_int(),
                                            kernel, stride, padding, dilation);
  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, go.scalar_type(), "fastconv::_max_pool2d_backward", [&] {
        kernels::launch_max_pool2d_backward<scalar_t, at::opmath_type<scalar_t>>(
            s, channels_last, go.const_data_ptr<scalar_t>(), ind.const_data_ptr<int64_t>(),
            gi.mutable_data_ptr<scalar_t>(), launch.device, launch.stream);
      });
  return grad_input;
}

inline at::Tensor max_unpool2d(const HostLaunch& launch, const at::Tensor& input,
                               const at::Tensor& indices, c10::SymIntArrayRef output_size) {
  const char* op = "max_unpool2d";
  check_max_unpool2d(input, indices, output_size, op);
  const auto fmt = pool_memory_format(input);
  const at::Tensor x = as_batched(input.contiguous(fmt));
  const at::Tensor ind = as_batched(indices.contiguous(fmt));
  const int64_t out_h = output_size[0].expect_int(), out_w = output_size[1].expect_int();
  at::Tensor output = launch.empty(with_spatial(input.sizes(), out_h, out_w),
                                input.options().memory_format(fmt));
  if (output.numel() == 0) return output;  // only an empty batch is empty (checks.h)
  const at::Tensor out4 = as_batched(output);  // a view: the kernels write output
  const kernels::UnpoolShape s{x.size(1), x.size(2) * x.size(3), out_h * out_w};
  const at::Tensor slot = bad_index_slot(x);
  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv::max_unpool2d", [&] {
        kernels::launch_max_unpool2d<scalar_t>(
            s, x.size(0), channels_last, x.const_data_ptr<scalar_t>(),
            ind.const_data_ptr<int64_t>(), out4.mutable_data_ptr<scalar_t>(),
            reinterpret_cast<unsigned long long*>(slot.mutable_data_ptr<int64_t>()), launch.device,
            launch.stream);
      });
  raise_if_bad_index(slot, ind, s.out_plane, op);
  return output;
}

inline at::Tensor max_unpool2d_backward(const HostLaunch& launch, const at::Tensor& grad_output,
                                        const at::Tensor& indices) {
  const char* op = "_max_unpool2d_backward";
  check_max_unpool2d_backward(grad_output, indices);
  const auto fmt = pool_memory_format(indices);
  const at::Tensor go = as_batched(grad_output.contiguous(fmt));
  const at::Tensor ind = as_batched(indices.contiguous(fmt));
  at::Tensor out = launch.empty(indices.sizes(), grad_output.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  const at::Tensor o = as_batched(out);  // a view: the kernel writes out
  const kernels::UnpoolShape s{ind.size(1), ind.size(2) * ind.size(3), go.size(2) * go.size(3)};
  const at::Tensor slot = bad_index_slot(go);
  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, go.scalar_type(), "fastconv::_max_unpool2d_backward", [&] {
        kernels::launch_max_unpool2d_backward<scalar_t>(
            s, ind.size(0), channels_last, go.const_data_ptr<scalar_t>(),
            ind.const_data_ptr<int64_t>(), o.mutable_data_ptr<scalar_t>(),
            reinterpret_cast<unsigned long long*>(slot.mutable_data_ptr<int64_t>()), launch.device,
            launch.stream);
      });
  raise_if_bad_index(slot, ind, s.out_plane, op);
  return out;
}

}  // namespace host
}  // namespace FC_KERNEL_NS
}  // namespace fastconv
