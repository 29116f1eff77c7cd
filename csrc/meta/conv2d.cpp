// Meta kernels (shape, dtype and memory format only) of the convolution family. FakeTensorMode
// and torch.compile run these; they validate with the same checks/conv.h calls as the real
// kernels and allocate through the same helper, so errors and strides agree everywhere.
#include <torch/library.h>

#include "checks/conv.h"

namespace fastconv {
namespace {

at::Tensor conv2d_meta(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  ConvSymGeometry g = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  return empty_conv_activation(g.output_size4(), g.batched, input.options(),
                               conv_memory_format(input, weight));
}

at::Tensor conv2d_input_grad_meta(const at::Tensor& grad_output, const at::Tensor& weight,
                                  c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups) {
  ConvSymGeometry g = check_conv2d_input_grad(grad_output, weight, input_size, stride, padding,
                                              dilation, groups);
  return empty_conv_activation(g.input_size4(), g.batched, grad_output.options(),
                               conv_memory_format(grad_output, weight));
}

at::Tensor conv2d_weight_grad_meta(const at::Tensor& grad_output, const at::Tensor& input,
                                   c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation,
                                   int64_t groups) {
  check_conv2d_weight_grad(grad_output, input, weight_size, stride, padding, dilation, groups);
  const auto fmt = conv_weight_grad_format(weight_size, conv_memory_format(input, grad_output));
  return at::empty_symint(weight_size, input.options().memory_format(fmt));
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Meta, m) {
  m.impl("conv2d", conv2d_meta);
  m.impl("_conv2d_input_grad", conv2d_input_grad_meta);
  m.impl("_conv2d_weight_grad", conv2d_weight_grad_meta);
}

}  // namespace fastconv
