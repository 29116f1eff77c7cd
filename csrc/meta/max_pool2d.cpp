// Meta kernels (shape, dtype and memory format only) for the pooling family. FakeTensorMode
// and torch.compile run these, so they validate with the same checks.h calls as the real
// kernels and work on symbolic sizes.
#include <torch/library.h>

#include "checks/pool.h"

namespace fastconv {
namespace {

std::vector<c10::SymInt> with_spatial(c10::SymIntArrayRef sizes, const c10::SymInt& h,
                                      const c10::SymInt& w) {
  std::vector<c10::SymInt> out(sizes.begin(), sizes.end());
  out[out.size() - 2] = h;
  out[out.size() - 1] = w;
  return out;
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_with_indices_meta(
    const at::Tensor& input, at::IntArrayRef kernel, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  PoolGeometry g = check_max_pool2d(input, kernel, stride, padding, dilation, ceil_mode);
  auto size = with_spatial(input.sym_sizes(), g.out_h, g.out_w);
  auto fmt = pool_memory_format(input);
  return {at::empty_symint(size, input.options().memory_format(fmt)),
          at::empty_symint(size, input.options().dtype(at::kLong).memory_format(fmt))};
}

at::Tensor max_pool2d_backward_meta(const at::Tensor& grad_output, const at::Tensor& indices,
                                    c10::SymIntArrayRef input_size, at::IntArrayRef kernel,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, bool ceil_mode) {
  check_max_pool2d_backward(grad_output, indices, input_size, kernel, stride, padding, dilation,
                            ceil_mode);
  return at::empty_symint(input_size,
                          grad_output.options().memory_format(pool_memory_format(indices)));
}

at::Tensor max_unpool2d_meta(const at::Tensor& input, const at::Tensor& indices,
                             c10::SymIntArrayRef output_size) {
  check_max_unpool2d(input, indices, output_size);
  auto size = with_spatial(input.sym_sizes(), output_size[0], output_size[1]);
  return at::empty_symint(size, input.options().memory_format(pool_memory_format(input)));
}

at::Tensor max_unpool2d_backward_meta(const at::Tensor& grad_output, const at::Tensor& indices) {
  check_max_unpool2d_backward(grad_output, indices);
  return at::empty_symint(indices.sym_sizes(),
                          grad_output.options().memory_format(pool_memory_format(indices)));
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Meta, m) {
  m.impl("max_pool2d_with_indices", max_pool2d_with_indices_meta);
  m.impl("_max_pool2d_backward", max_pool2d_backward_meta);
  m.impl("max_unpool2d", max_unpool2d_meta);
  m.impl("_max_unpool2d_backward", max_unpool2d_backward_meta);
}

}  // namespace fastconv
