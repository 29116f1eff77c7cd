// Meta (fake) kernels of roi_pool and its backward: shapes, dtypes and memory format, with the
// checks of checks/roi.h (box values need data: only real kernels check them).
#include <torch/library.h>

#include "checks/roi.h"

namespace fastconv {
namespace {

std::tuple<at::Tensor, at::Tensor> roi_pool_meta(const at::Tensor& input, const at::Tensor& rois,
                                                 double spatial_scale, int64_t pooled_h,
                                                 int64_t pooled_w) {
  const RoiGeometry g = check_roi_pool(input, rois, spatial_scale, pooled_h, pooled_w);
  const std::vector<c10::SymInt> size{g.k, g.c, c10::SymInt(pooled_h), c10::SymInt(pooled_w)};
  const auto options = input.options().memory_format(input.suggest_memory_format());
  return {at::empty_symint(size, options), at::empty_symint(size, options.dtype(at::kInt))};
}

at::Tensor roi_pool_backward_meta(const at::Tensor& grad_output, const at::Tensor& rois,
                                  const at::Tensor& argmax, double spatial_scale,
                                  int64_t pooled_h, int64_t pooled_w,
                                  c10::SymIntArrayRef input_size, bool channels_last) {
  const char* op = "_roi_pool_backward";
  check_roi_backward(grad_output, rois, spatial_scale, pooled_h, pooled_w, input_size, op);
  check_roi_argmax(argmax, grad_output, op);
  return at::empty_symint(input_size,
                          grad_output.options().memory_format(roi_memory_format(channels_last)));
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Meta, m) {
  m.impl("roi_pool", roi_pool_meta);
  m.impl("_roi_pool_backward", roi_pool_backward_meta);
}

}  // namespace fastconv
