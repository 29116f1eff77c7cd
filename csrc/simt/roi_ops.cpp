// Emulated CUDA launchers of the ROI family: the host code of the nvcc launcher
// (cuda/host/roi.h: validation, layouts, dtype dispatch, launch plans) on CPU tensors, with the
// device properties of the emulated target, run by csrc/simt. Outputs start poisoned (NaN /
// 0xFF) so an element a kernel forgets to write shows up in tests.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <limits>

#include "simt/simt.h"  // after torch, before anything that includes common/ (SIMT.md 2)
#include "checks/roi.h"
#include "schemas/roi.h"
#include "cuda/host/roi.h"

namespace fastconv {
namespace {

namespace host = ::fastconv::FC_KERNEL_NS::host;

using host::check_cpu;  // cuda/host/launch.h
using host::emulated_launch;

at::Tensor roi_align_simt(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                          int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                          bool aligned) {
  check_cpu(input, "roi_align", "input");
  return host::roi_align(emulated_launch(), input, rois, spatial_scale, pooled_h, pooled_w,
                         sampling_ratio, aligned);
}

at::Tensor roi_align_backward_simt(const at::Tensor& grad_output, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                   int64_t sampling_ratio, bool aligned,
                                   c10::SymIntArrayRef input_size, bool channels_last) {
  check_cpu(grad_output, "_roi_align_backward", "grad_output");
  return host::roi_align_backward(emulated_launch(), grad_output, rois, spatial_scale, pooled_h,
                                  pooled_w, sampling_ratio, aligned, input_size, channels_last);
}

std::tuple<at::Tensor, at::Tensor> roi_pool_simt(const at::Tensor& input, const at::Tensor& rois,
                                                 double spatial_scale, int64_t pooled_h,
                                                 int64_t pooled_w) {
  check_cpu(input, "roi_pool", "input");
  return host::roi_pool(emulated_launch(), input, rois, spatial_scale, pooled_h, pooled_w);
}

at::Tensor roi_pool_backward_simt(const at::Tensor& grad_output, const at::Tensor& rois,
                                  const at::Tensor& argmax, double spatial_scale,
                                  int64_t pooled_h, int64_t pooled_w,
                                  c10::SymIntArrayRef input_size, bool channels_last) {
  check_cpu(grad_output, "_roi_pool_backward", "grad_output");
  return host::roi_pool_backward(emulated_launch(), grad_output, rois, argmax, spatial_scale,
                                 pooled_h, pooled_w, input_size, channels_last);
}

}  // namespace

// Same schemas as in the fastconv namespace (contracts in schemas/roi.cpp).
TORCH_LIBRARY_FRAGMENT(fastconv_simt, m) {
  m.def(FC_SCHEMA_ROI_ALIGN);
  m.def(FC_SCHEMA_ROI_ALIGN_BACKWARD);
  m.def(FC_SCHEMA_ROI_POOL);
  m.def(FC_SCHEMA_ROI_POOL_BACKWARD);
}

TORCH_LIBRARY_IMPL(fastconv_simt, CPU, m) {
  m.impl("roi_align", roi_align_simt);
  m.impl("_roi_align_backward", roi_align_backward_simt);
  m.impl("roi_pool", roi_pool_simt);
  m.impl("_roi_pool_backward", roi_pool_backward_simt);
}

}  // namespace fastconv
