// Emulated CUDA launchers of the max-pool family: csrc/cuda/max_pool2d.cu on CPU tensors, with
// the same validation, layouts and dtype dispatch, the device properties of the emulated target
// (simt::config().target) and the launch plans of cuda/launch/max_pool2d.h, run by csrc/simt.
// Where the CUDA launcher allocates with at::empty, outputs here start as NaN (floating point)
// or all-ones bytes (integers), so an element a kernel forgets to write shows up in tests.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <limits>

#include "simt/simt.h"  // after torch, before anything that includes common/ (SIMT.md 2)
#include "checks.h"
#include "cuda/launch/max_pool2d.h"

namespace fastconv {
namespace {

namespace kernels = ::fastconv::FC_KERNEL_NS;
static_assert(std::is_same_v<kernels::Pool2dShape, ::fastconv::simt::Pool2dShape>,
              "the emulated build compiles kernels into fastconv::simt");

LaunchDevice emulated_device() {
  const ::simt::Target& t = *::simt::config().target;
  return {t.sm_count, t.max_threads_per_sm};
}

void check_cpu(const at::Tensor& t, const char* op, const char* name) {
  FC_CHECK(t.device().is_cpu(), op, name, " on the CPU for the emulated CUDA kernels, got ",
           t.device());
}

// at::empty, poisoned: NaN for floating types, 0xFF bytes (-1) for integers.
at::Tensor poisoned_empty(at::IntArrayRef size, const at::TensorOptions& options) {
  at::Tensor t = at::empty(size, options);
  if (at::isFloatingType(t.scalar_type()))
    t.fill_(std::numeric_limits<double>::quiet_NaN());
  else
    t.fill_(-1);
  return t;
}

std::vector<int64_t> with_spatial(at::IntArrayRef sizes, int64_t h, int64_t w) {
  std::vector<int64_t> out(sizes.begin(), sizes.end());
  out[out.size() - 2] = h;
  out[out.size() - 1] = w;
  return out;
}

at::Tensor as_batched(const at::Tensor& t) { return t.dim() == 3 ? t.unsqueeze(0) : t; }

at::Tensor bad_index_slot(const at::Tensor& like) {
  return at::full({1}, std::numeric_limits<int64_t>::max(), like.options().dtype(at::kLong));
}

void raise_if_bad_index(const at::Tensor& slot, const at::Tensor& indices, int64_t plane,
                        const char* op) {
  const int64_t pos = slot.item<int64_t>();
  if (pos == std::numeric_limits<int64_t>::max()) return;
  const int64_t c = indices.size(1), h = indices.size(2), w = indices.size(3);
  const int64_t value =
      indices[pos / (c * h * w)][(pos / (h * w)) % c][(pos / w) % h][pos % w].item<int64_t>();
  fail_index_out_of_range(op, value, plane);
}

kernels::Pool2dShape pool_shape(const at::Tensor& input4, int64_t out_h, int64_t out_w,
                                at::IntArrayRef kernel, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation) {
  return {input4.size(0), input4.size(1), input4.size(2), input4.size(3), out_h, out_w,
          kernel[0],      kernel[1],      stride[0],      stride[1],      padding[0],
          padding[1],     dilation[0],    dilation[1]};
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_with_indices_simt(
    const at::Tensor& input, at::IntArrayRef kernel, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const PoolGeometry g = check_max_pool2d(input, kernel, stride, padding, dilation, ceil_mode);
  check_cpu(input, "max_pool2d_with_indices", "input");
  const auto fmt = pool_memory_format(input);
  const at::Tensor x = as_batched(input.contiguous(fmt));
  const int64_t out_h = g.out_h.expect_int(), out_w = g.out_w.expect_int();
  const auto size = with_spatial(input.sizes(), out_h, out_w);
  at::Tensor output = poisoned_empty(size, input.options().memory_format(fmt));
  at::Tensor indices = poisoned_empty(size, input.options().dtype(at::kLong).memory_format(fmt));
  if (output.numel() == 0) return {output, indices};
  const at::Tensor out4 = as_batched(output), ind4 = as_batched(indices);
  const kernels::Pool2dShape s = pool_shape(x, out_h, out_w, kernel, stride, padding, dilation);
  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  const LaunchDevice dev = emulated_device();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv_simt::max_pool2d_with_indices", [&] {
        kernels::launch_max_pool2d_forward<scalar_t, at::opmath_type<scalar_t>>(
            s, channels_last, x.const_data_ptr<scalar_t>(), out4.mutable_data_ptr<scalar_t>(),
            ind4.mutable_data_ptr<int64_t>(), dev, nullptr);
      });
  return {output, indices};
}

at::Tensor max_pool2d_backward_simt(const at::Tensor& grad_output, const at::Tensor& indices,
                                    c10::SymIntArrayRef input_size, at::IntArrayRef kernel,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, bool ceil_mode) {
  const PoolGeometry g = check_max_pool2d_backward(grad_output, indices, input_size, kernel,
                                                   stride, padding, dilation, ceil_mode);
  check_cpu(grad_output, "_max_pool2d_backward", "grad_output");
  const auto fmt = pool_memory_format(indices);
  const at::Tensor go = as_batched(grad_output.contiguous(fmt));
  const at::Tensor ind = as_batched(indices.contiguous(fmt));
  at::Tensor grad_input = poisoned_empty(C10_AS_INTARRAYREF_SLOW(input_size),
                                         grad_output.options().memory_format(fmt));
  if (grad_input.numel() == 0) return grad_input;
  const at::Tensor gi = as_batched(grad_input);
  const kernels::Pool2dShape s = pool_shape(gi, g.out_h.expect_int(), g.out_w.expect_int(),
                                            kernel, stride, padding, dilation);
  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  const LaunchDevice dev = emulated_device();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, go.scalar_type(), "fastconv_simt::_max_pool2d_backward", [&] {
        kernels::launch_max_pool2d_backward<scalar_t, at::opmath_type<scalar_t>>(
            s, channels_last, go.const_data_ptr<scalar_t>(), ind.const_data_ptr<int64_t>(),
            gi.mutable_data_ptr<scalar_t>(), dev, nullptr);
      });
  return grad_input;
}

at::Tensor max_unpool2d_simt(const at::Tensor& input, const at::Tensor& indices,
                             c10::SymIntArrayRef output_size) {
  const char* op = "max_unpool2d";
  check_max_unpool2d(input, indices, output_size, op);
  check_cpu(input, op, "input");
  const auto fmt = pool_memory_format(input);
  const at::Tensor x = as_batched(input.contiguous(fmt));
  const at::Tensor ind = as_batched(indices.contiguous(fmt));
  const int64_t out_h = output_size[0].expect_int(), out_w = output_size[1].expect_int();
  at::Tensor output = poisoned_empty(with_spatial(input.sizes(), out_h, out_w),
                                     input.options().memory_format(fmt));
  if (output.numel() == 0) return output;
  const at::Tensor out4 = as_batched(output);
  const kernels::UnpoolShape s{x.size(1), x.size(2) * x.size(3), out_h * out_w};
  const at::Tensor slot = bad_index_slot(x);
  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  const LaunchDevice dev = emulated_device();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "fastconv_simt::max_unpool2d", [&] {
        kernels::launch_max_unpool2d<scalar_t>(
            s, x.size(0), channels_last, x.const_data_ptr<scalar_t>(),
            ind.const_data_ptr<int64_t>(), out4.mutable_data_ptr<scalar_t>(),
            reinterpret_cast<unsigned long long*>(slot.mutable_data_ptr<int64_t>()), dev,
            nullptr);
      });
  raise_if_bad_index(slot, ind, s.out_plane, op);
  return output;
}

at::Tensor max_unpool2d_backward_simt(const at::Tensor& grad_output, const at::Tensor& indices) {
  const char* op = "_max_unpool2d_backward";
  check_max_unpool2d_backward(grad_output, indices);
  check_cpu(grad_output, op, "grad_output");
  const auto fmt = pool_memory_format(indices);
  const at::Tensor go = as_batched(grad_output.contiguous(fmt));
  const at::Tensor ind = as_batched(indices.contiguous(fmt));
  at::Tensor out = poisoned_empty(indices.sizes(), grad_output.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  const at::Tensor o = as_batched(out);
  const kernels::UnpoolShape s{ind.size(1), ind.size(2) * ind.size(3), go.size(2) * go.size(3)};
  const at::Tensor slot = bad_index_slot(go);
  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  const LaunchDevice dev = emulated_device();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, go.scalar_type(), "fastconv_simt::_max_unpool2d_backward", [&] {
        kernels::launch_max_unpool2d_backward<scalar_t>(
            s, ind.size(0), channels_last, go.const_data_ptr<scalar_t>(),
            ind.const_data_ptr<int64_t>(), o.mutable_data_ptr<scalar_t>(),
            reinterpret_cast<unsigned long long*>(slot.mutable_data_ptr<int64_t>()), dev,
            nullptr);
      });
  raise_if_bad_index(slot, ind, s.out_plane, op);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv_simt, CPU, m) {
  m.impl("max_pool2d_with_indices", max_pool2d_with_indices_simt);
  m.impl("_max_pool2d_backward", max_pool2d_backward_simt);
  m.impl("max_unpool2d", max_unpool2d_simt);
  m.impl("_max_unpool2d_backward", max_unpool2d_backward_simt);
}

}  // namespace fastconv
