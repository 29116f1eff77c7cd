// CUDA implementations of the convolution family (schemas and contracts: csrc/schemas/conv.cpp):
// the device guard, this device's properties and stream, around the host code shared with the
// emulated launcher (cuda/host/conv2d.h: checks, layouts, plans, launches).
//
// Only c10/cuda headers (see cuda/max_pool2d.cu): c10::cuda::getCurrentCUDAStream is the
// function at::cuda::getCurrentCUDAStream names.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/host/conv2d.h"

namespace fastconv {
namespace {

namespace host = ::fastconv::FC_KERNEL_NS::host;

LaunchDevice conv_current_device() {
  int device = 0, sm_count = 0, threads_per_sm = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(
      cudaDeviceGetAttribute(&threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device));
  return {sm_count, threads_per_sm};
}

at::Tensor conv_plain_empty(at::IntArrayRef size, const at::TensorOptions& options) {
  return at::empty(size, options);
}

template <typename F>
auto conv_on_device(const at::Tensor& t, F f) {
  c10::cuda::CUDAGuard guard(t.device());
  return f(host::ConvHostLaunch{conv_current_device(), c10::cuda::getCurrentCUDAStream(),
                                conv_plain_empty});
}

at::Tensor conv2d_cuda(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return conv_on_device(input, [&](const host::ConvHostLaunch& l) {
    return host::conv2d(l, input, weight, bias, stride, padding, dilation, groups);
  });
}

at::Tensor conv2d_input_grad_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                                  c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups) {
  return conv_on_device(grad_output, [&](const host::ConvHostLaunch& l) {
    return host::conv2d_input_grad(l, grad_output, weight, input_size, stride, padding,
                                   dilation, groups);
  });
}

at::Tensor conv2d_weight_grad_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                   c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation,
                                   int64_t groups) {
  return conv_on_device(grad_output, [&](const host::ConvHostLaunch& l) {
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
