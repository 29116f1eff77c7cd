// CUDA implementations of the convolution family (schemas and contracts: csrc/schemas/conv.cpp):
// the device guard, this device's properties and stream, around the host code shared with the
// emulated launcher (cuda/host/conv2d.h: checks, layouts, plans, launches).
// Only c10/cuda headers (see cuda/host/launch.h).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda/host/conv2d.h"

namespace fastconv {
namespace {

namespace host = ::fastconv::FC_KERNEL_NS::host;
using ::fastconv::FC_KERNEL_NS::host::on_device;  // cuda/host/launch.h

at::Tensor conv2d_cuda(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return on_device(input, [&](const host::HostLaunch& l) {
    return host::conv2d(l, input, weight, bias, stride, padding, dilation, groups);
  });
}

at::Tensor conv2d_input_grad_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                                  c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups) {
  return on_device(grad_output, [&](const host::HostLaunch& l) {
    return host::conv2d_input_grad(l, grad_output, weight, input_size, stride, padding,
                                   dilation, groups);
  });
}

at::Tensor conv2d_weight_grad_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                   c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation,
                                   int64_t groups) {
  return on_device(grad_output, [&](const host::HostLaunch& l) {
    return host::conv2d_weight_grad(l, grad_output, input, weight_size, stride, padding,
                                    dilation, groups);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CUDA, m) {
  m.impl("conv2d", conv2d_cuda);
  m.impl("_conv2d_input_grad", conv2d_input_grad_cuda);
  m.impl("_conv2d_weight_grad", conv2d_weight_grad_cuda);
}

}  // namespace fastconv
