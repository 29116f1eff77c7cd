// Argument checks of the max-pool family (max_pool2d_with_indices, its backward, max_unpool2d
// and its backward), used by the CPU, CUDA, emulated and Meta kernels alike.
#pragma once
#include "checks.h"
#include "common/pool.h"

namespace fastconv {

// Validated geometry of one max_pool2d call. `batched` is false for 3-D (C, H, W) input.
struct PoolGeometry {
  bool batched;
  c10::SymInt n, c, h, w, out_h, out_w;
};

inline PoolGeometry check_max_pool2d(const at::Tensor& input, at::IntArrayRef kernel,
                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, bool ceil_mode,
                                     const char* op = "max_pool2d_with_indices") {
  const int64_t dim = input.dim();
  FC_CHECK(dim == 3 || dim == 4, op, "a 3-D (C, H, W) or 4-D (N, C, H, W) input, got ", dim,
           "-D input of shape ", shape_str(input.sym_sizes()));
  check_floating(input, op, "input");
  auto sizes = input.sym_sizes();
  PoolGeometry g{dim == 4, dim == 4 ? sizes[0] : c10::SymInt(1), sizes[dim - 3], sizes[dim - 2],
                 sizes[dim - 1], 0, 0};
  FC_CHECK(g.c != 0 && g.h != 0 && g.w != 0, op,
           "non-zero channel and spatial sizes (only the batch may be empty), got input of shape ",
           shape_str(sizes));
  check_int_pair(kernel, op, "kernel_size", 1);
  check_int_pair(stride, op, "stride", 1);
  check_int_pair(padding, op, "padding", 0);
  check_int_pair(dilation, op, "dilation", 1);
  FC_CHECK(padding[0] <= kernel[0] / 2 && padding[1] <= kernel[1] / 2, op,
           "padding at most half the kernel size, got padding=", padding,
           " and kernel_size=", kernel);
  g.out_h = pool_output_size<c10::SymInt>(g.h, kernel[0], stride[0], padding[0], dilation[0],
                                          ceil_mode);
  g.out_w = pool_output_size<c10::SymInt>(g.w, kernel[1], stride[1], padding[1], dilation[1],
                                          ceil_mode);
  FC_CHECK(g.out_h >= 1 && g.out_w >= 1, op, "an output of at least 1x1, got ", g.out_h, "x",
           g.out_w, " from input ", g.h, "x", g.w, " with kernel_size=", kernel, " stride=",
           stride, " padding=", padding, " dilation=", dilation, " ceil_mode=", ceil_mode);
  return g;
}

inline void check_indices(const at::Tensor& indices, const char* op) {
  FC_CHECK(indices.scalar_type() == at::kLong, op, "indices of dtype int64, got ",
           indices.scalar_type());
}

// max_pool2d backward: grad_output and indices both have the forward's output shape.
inline PoolGeometry check_max_pool2d_backward(const at::Tensor& grad_output,
                                              const at::Tensor& indices,
                                              c10::SymIntArrayRef input_size,
                                              at::IntArrayRef kernel, at::IntArrayRef stride,
                                              at::IntArrayRef padding, at::IntArrayRef dilation,
                                              bool ceil_mode) {
  const char* op = "_max_pool2d_backward";
  check_indices(indices, op);
  check_same_device(grad_output, indices, op, "grad_output", "indices");
  FC_CHECK(input_size.size() == 3 || input_size.size() == 4, op,
           "input_size with 3 or 4 values, got ", shape_str(input_size));
  auto fake_input = at::empty_symint(input_size, grad_output.options().device(at::kMeta));
  PoolGeometry g = check_max_pool2d(fake_input, kernel, stride, padding, dilation, ceil_mode, op);
  std::vector<c10::SymInt> out_size(input_size.begin(), input_size.end());
  out_size[out_size.size() - 2] = g.out_h;
  out_size[out_size.size() - 1] = g.out_w;
  FC_CHECK(grad_output.sym_sizes() == c10::SymIntArrayRef(out_size), op, "grad_output of shape ",
           shape_str(out_size), ", got ", shape_str(grad_output.sym_sizes()));
  FC_CHECK(indices.sym_sizes() == c10::SymIntArrayRef(out_size), op, "indices of shape ",
           shape_str(out_size), ", got ", shape_str(indices.sym_sizes()));
  return g;
}

// max_unpool2d: input and indices share a shape; each index is a flat position in an
// output plane of output_size.
inline void check_max_unpool2d(const at::Tensor& input, const at::Tensor& indices,
                               c10::SymIntArrayRef output_size, const char* op = "max_unpool2d") {
  const int64_t dim = input.dim();
  FC_CHECK(dim == 3 || dim == 4, op, "a 3-D (C, H, W) or 4-D (N, C, H, W) input, got ", dim,
           "-D input of shape ", shape_str(input.sym_sizes()));
  check_floating(input, op, "input");
  check_indices(indices, op);
  check_same_device(input, indices, op, "input", "indices");
  FC_CHECK(indices.sym_sizes() == input.sym_sizes(), op,
           "indices of the same shape as the input ", shape_str(input.sym_sizes()), ", got ",
           shape_str(indices.sym_sizes()));
  FC_CHECK(output_size.size() == 2, op, "output_size with 2 values (H, W), got ",
           shape_str(output_size));
  FC_CHECK(output_size[0] >= 1 && output_size[1] >= 1, op, "a positive output_size, got ",
           shape_str(output_size));
  auto sizes = input.sym_sizes();
  FC_CHECK(sizes[dim - 3] != 0 && sizes[dim - 2] != 0 && sizes[dim - 1] != 0, op,
           "non-zero channel and spatial sizes (only the batch may be empty), got input of shape ",
           shape_str(sizes));
}

// _max_unpool2d_backward (a gather): grad_output (N, C, Ho, Wo) and indices (N, C, H, W) agree
// in rank, batch and channels; each index is a flat position in a grad_output plane.
inline void check_max_unpool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices) {
  const char* op = "_max_unpool2d_backward";
  const int64_t dim = grad_output.dim();
  FC_CHECK(dim == 3 || dim == 4, op, "a 3-D or 4-D grad_output, got ", dim, "-D");
  check_floating(grad_output, op, "grad_output");
  check_indices(indices, op);
  check_same_device(grad_output, indices, op, "grad_output", "indices");
  auto gs = grad_output.sym_sizes();
  auto is = indices.sym_sizes();
  FC_CHECK(indices.dim() == dim && gs.slice(0, dim - 2) == is.slice(0, dim - 2), op,
           "indices with the batch and channel sizes of grad_output ", shape_str(gs), ", got ",
           shape_str(is));
  FC_CHECK(gs[dim - 2] != 0 && gs[dim - 1] != 0, op, "a non-empty grad_output plane, got ",
           shape_str(gs));
}

// The memory format a 3-D/4-D pooling output keeps: PyTorch's suggest_memory_format rule.
inline at::MemoryFormat pool_memory_format(const at::Tensor& t) {
  return t.dim() == 4 ? t.suggest_memory_format() : at::MemoryFormat::Contiguous;
}

}  // namespace fastconv
