// Meta (fake) kernels of roi_align and its backward: shapes, dtype and memory format, with the
// checks of checks/roi.h (box values need data: only real kernels check them).
#include <torch/library.h>

#include "checks/roi.h"

namespace fastconv {
namespace {

at::Tensor roi_align_meta(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                          int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                          bool aligned) {
  const RoiGeometry g =
      check_roi_align(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio);
  return at::empty_symint({g.k, g.c, c10::SymInt(pooled_h), c10::SymInt(pooled_w)},
                          input.options().memory_format(input.suggest_memory_format()));
}

at::Tensor roi_align_backward_meta(const at::Tensor& grad_output, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                   int64_t sampling_ratio, bool aligned,
                                   c10::SymIntArrayRef input_size, bool channels_last) {
  check_roi_backward(grad_output, rois, spatial_scale, pooled_h, pooled_w, input_size,
                     "_roi_align_backward");
  return at::empty_symint(input_size,
                          grad_output.options().memory_format(roi_memory_format(channels_last)));
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Meta, m) {
  m.impl("roi_align", roi_align_meta);
  m.impl("_roi_align_backward", roi_align_backward_meta);
}

}  // namespace fastconv
