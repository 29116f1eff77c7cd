// CPU kernels of max_unpool2d (a scatter) and its input gradient (a gather), NCHW and
// channels_last. Units of work are (n, c) planes for NCHW and (n) images for channels_last,
// so scattered writes never race; within a unit inputs are visited in row-major order, so
// where indices repeat the last one wins, as in PyTorch's CPU kernel.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks/pool.h"

namespace fastconv {
namespace {

// Geometry of one call: `in_plane` positions per unit on the indices side, `out_plane`
// positions on the scattered/gathered side; `C` channels interleaved for channels_last.
struct Unpool {
  int64_t N, C, in_plane, out_plane;
  bool channels_last;
};

// Visits every (input offset, output offset) pair of one unit in row-major order, checking
// each index; `f(in_off, out_off)` does the copy.
template <typename F>
void for_each_pair(const int64_t* ind, const Unpool& u, const char* op, F f) {
  const int64_t units = u.channels_last ? u.N : u.N * u.C;
  const int64_t width = u.channels_last ? u.C : 1;
  at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) {
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t in_base = unit * u.in_plane * width, out_base = unit * u.out_plane * width;
      for (int64_t i = 0; i < u.in_plane; ++i) {
        for (int64_t c = 0; c < width; ++c) {
          const int64_t in_off = in_base + i * width + c;
          const int64_t k = ind[in_off];
          if (k < 0 || k >= u.out_plane) fail_index_out_of_range(op, k, u.out_plane);
          f(in_off, out_base + k * width + c);
        }
      }
    }
  });
}

at::Tensor max_unpool2d_cpu(const at::Tensor& input, const at::Tensor& indices,
                            c10::SymIntArrayRef output_size) {
  check_max_unpool2d(input, indices, output_size);
  const bool batched = input.dim() == 4;
  const auto fmt = pool_memory_format(input);
  auto batch = [&](const at::Tensor& t) { return (batched ? t : t.unsqueeze(0)).contiguous(fmt); };
  const at::Tensor x = batch(input), ind = batch(indices);
  const int64_t oh = output_size[0].expect_int(), ow = output_size[1].expect_int();
  at::Tensor out = at::empty({x.size(0), x.size(1), oh, ow}, x.options().memory_format(fmt)).zero_();
  const Unpool u{x.size(0), x.size(1), x.size(2) * x.size(3), oh * ow,
                 fmt == at::MemoryFormat::ChannelsLast};
  if (x.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_unpool2d", [&] {
      const scalar_t* src = x.const_data_ptr<scalar_t>();
      scalar_t* dst = out.mutable_data_ptr<scalar_t>();
      for_each_pair(ind.const_data_ptr<int64_t>(), u, "max_unpool2d",
                    [&](int64_t i, int64_t o) { dst[o] = src[i]; });
    });
  }
  return batched ? out : out.squeeze(0);
}

at::Tensor max_unpool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& indices) {
  check_max_unpool2d_backward(grad_output, indices);
  const bool batched = indices.dim() == 4;
  const auto fmt = pool_memory_format(indices);
  auto batch = [&](const at::Tensor& t) { return (batched ? t : t.unsqueeze(0)).contiguous(fmt); };
  const at::Tensor go = batch(grad_output), ind = batch(indices);
  at::Tensor gi = at::empty(ind.sizes(), go.options().memory_format(fmt));
  const Unpool u{ind.size(0), ind.size(1), ind.size(2) * ind.size(3), go.size(2) * go.size(3),
                 fmt == at::MemoryFormat::ChannelsLast};
  if (gi.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(), "max_unpool2d_backward", [&] {
      const scalar_t* src = go.const_data_ptr<scalar_t>();
      scalar_t* dst = gi.mutable_data_ptr<scalar_t>();
      for_each_pair(ind.const_data_ptr<int64_t>(), u, "_max_unpool2d_backward",
                    [&](int64_t i, int64_t o) { dst[i] = src[o]; });
    });
  }
  return batched ? gi : gi.squeeze(0);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("max_unpool2d", max_unpool2d_cpu);
  m.impl("_max_unpool2d_backward", max_unpool2d_backward_cpu);
}

}  // namespace fastconv
