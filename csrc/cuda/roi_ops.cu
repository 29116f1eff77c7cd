// CUDA implementations of roi_align, roi_pool and their backward ops (contracts:
// schemas/roi.cpp): the device guard, this device's properties and stream, around the host code
// shared with the emulated launcher (cuda/host/roi.h).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda/host/roi.h"

namespace fastconv {
namespace {

namespace host = ::fastconv::FC_KERNEL_NS::host;
using ::fastconv::FC_KERNEL_NS::host::on_device;  // cuda/host/launch.h

at::Tensor roi_align_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                          int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                          bool aligned) {
  return on_device(input, [&](const host::HostLaunch& l) {
    return host::roi_align(l, input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio,
                           aligned);
  });
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad_output, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                   int64_t sampling_ratio, bool aligned,
                                   c10::SymIntArrayRef input_size, bool channels_last) {
  return on_device(grad_output, [&](const host::HostLaunch& l) {
    return host::roi_align_backward(l, grad_output, rois, spatial_scale, pooled_h, pooled_w,
                                    sampling_ratio, aligned, input_size, channels_last);
  });
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cuda(const at::Tensor& input, const at::Tensor& rois,
                                                 double spatial_scale, int64_t pooled_h,
                                                 int64_t pooled_w) {
  return on_device(input, [&](const host::HostLaunch& l) {
    return host::roi_pool(l, input, rois, spatial_scale, pooled_h, pooled_w);
  });
}

at::Tensor roi_pool_backward_cuda(const at::Tensor& grad_output, const at::Tensor& rois,
                                  const at::Tensor& argmax, double spatial_scale,
                                  int64_t pooled_h, int64_t pooled_w,
                                  c10::SymIntArrayRef input_size, bool channels_last) {
  return on_device(grad_output, [&](const host::HostLaunch& l) {
    return host::roi_pool_backward(l, grad_output, rois, argmax, spatial_scale, pooled_h,
                                   pooled_w, input_size, channels_last);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CUDA, m) {
  m.impl("roi_align", roi_align_cuda);
  m.impl("_roi_align_backward", roi_align_backward_cuda);
  m.impl("roi_pool", roi_pool_cuda);
  m.impl("_roi_pool_backward", roi_pool_backward_cuda);
}

}  // namespace fastconv
