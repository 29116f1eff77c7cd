// CUDA implementations of the max-pool family (schemas and contracts: csrc/fastconv.cpp):
// the device guard, this device's properties and stream, around the host code shared with
// the emulated launcher (cuda/host/max_pool2d.h). Only c10/cuda headers (see cuda/host/launch.h).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda/host/max_pool2d.h"

namespace fastconv {
namespace {

namespace host = ::fastconv::FC_KERNEL_NS::host;
using ::fastconv::FC_KERNEL_NS::host::on_device;  // cuda/host/launch.h

std::tuple<at::Tensor, at::Tensor> max_pool2d_with_indices_cuda(
    const at::Tensor& input, at::IntArrayRef kernel, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  return on_device(input, [&](const host::HostLaunch& l) {
    return host::max_pool2d_with_indices(l, input, kernel, stride, padding, dilation, ceil_mode);
  });
}

at::Tensor max_pool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& indices,
                                    c10::SymIntArrayRef input_size, at::IntArrayRef kernel,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, bool ceil_mode) {
  return on_device(grad_output, [&](const host::HostLaunch& l) {
    return host::max_pool2d_backward(l, grad_output, indices, input_size, kernel, stride,
                                     padding, dilation, ceil_mode);
  });
}

at::Tensor max_unpool2d_cuda(const at::Tensor& input, const at::Tensor& indices,
                             c10::SymIntArrayRef output_size) {
  return on_device(input, [&](const host::HostLaunch& l) {
    return host::max_unpool2d(l, input, indices, output_size);
  });
}

at::Tensor max_unpool2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& indices) {
  return on_device(grad_output, [&](const host::HostLaunch& l) {
    return host::max_unpool2d_backward(l, grad_output, indices);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CUDA, m) {
  m.impl("max_pool2d_with_indices", max_pool2d_with_indices_cuda);
  m.impl("_max_pool2d_backward", max_pool2d_backward_cuda);
  m.impl("max_unpool2d", max_unpool2d_cuda);
  m.impl("_max_unpool2d_backward", max_unpool2d_backward_cuda);
}

}  // namespace fastconv
