// Argument checks of the ROI family (roi_align, roi_pool and their backward ops), used by the
// CPU, CUDA, emulated and Meta kernels alike. Shapes, dtypes and arguments are checked here for
// every tensor, fake ones included; the box *values* (batch index an integer in [0, N), finite
// coordinates) need data, so real kernels check them with check_roi_values (CPU: directly; CUDA:
// a validation kernel records the first bad box and the launcher re-checks that box here, so the
// message is the same). Fake tensors cannot raise these.
#pragma once
#include <cmath>

#include "checks.h"

namespace fastconv {

// Validated sizes of one ROI op call: a 4-D (N, C, H, W) map and K boxes.
struct RoiGeometry {
  c10::SymInt n, c, h, w, k;
};

inline RoiGeometry check_roi_input_and_rois(const at::Tensor& input, const at::Tensor& rois,
                                            double spatial_scale, int64_t pooled_h,
                                            int64_t pooled_w, const char* op) {
  FC_CHECK(input.dim() == 4, op, "a 4-D (N, C, H, W) input, got ", input.dim(),
           "-D input of shape ", shape_str(input.sym_sizes()));
  check_floating(input, op, "input");
  check_same_device(input, rois, op, "input", "rois");
  FC_CHECK(rois.scalar_type() == input.scalar_type(), op, "rois of the input's dtype ",
           input.scalar_type(), ", got ", rois.scalar_type());
  FC_CHECK(rois.dim() == 2 && rois.sym_size(1) == 5, op,
           "rois of shape (K, 5) holding (batch index, x1, y1, x2, y2), got ",
           shape_str(rois.sym_sizes()));
  FC_CHECK(std::isfinite(spatial_scale) && spatial_scale >= 0, op,
           "a finite, non-negative spatial_scale, got ", spatial_scale);
  FC_CHECK(pooled_h >= 1 && pooled_w >= 1, op, "an output size of at least 1x1, got ", pooled_h,
           "x", pooled_w);
  auto s = input.sym_sizes();
  FC_CHECK(s[2] != 0 && s[3] != 0, op,
           "a feature map of at least 1x1 pixels, got input of shape ", shape_str(s));
  return {s[0], s[1], s[2], s[3], rois.sym_size(0)};
}

inline RoiGeometry check_roi_align(const at::Tensor& input, const at::Tensor& rois,
                                   double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                   int64_t sampling_ratio) {
  (void)sampling_ratio;  // every value is valid: <= 0 means adaptive
  return check_roi_input_and_rois(input, rois, spatial_scale, pooled_h, pooled_w, "roi_align");
}

inline RoiGeometry check_roi_pool(const at::Tensor& input, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_h, int64_t pooled_w) {
  return check_roi_input_and_rois(input, rois, spatial_scale, pooled_h, pooled_w, "roi_pool");
}

// Backward ops: grad_output (K, C, pooled_h, pooled_w) against rois (K, 5) and input_size.
inline RoiGeometry check_roi_backward(const at::Tensor& grad_output, const at::Tensor& rois,
                                      double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                      c10::SymIntArrayRef input_size, const char* op) {
  FC_CHECK(input_size.size() == 4, op, "input_size with 4 values (N, C, H, W), got ",
           shape_str(input_size));
  auto fake_input = at::empty_symint(input_size, grad_output.options().device(at::kMeta));
  RoiGeometry g = check_roi_input_and_rois(fake_input, rois.to(at::kMeta), spatial_scale,
                                           pooled_h, pooled_w, op);
  check_same_device(grad_output, rois, op, "grad_output", "rois");
  std::vector<c10::SymInt> expected{g.k, g.c, c10::SymInt(pooled_h), c10::SymInt(pooled_w)};
  FC_CHECK(grad_output.sym_sizes() == c10::SymIntArrayRef(expected), op,
           "grad_output of shape ", shape_str(expected), ", got ",
           shape_str(grad_output.sym_sizes()));
  return g;
}

inline void check_roi_argmax(const at::Tensor& argmax, const at::Tensor& grad_output,
                             const char* op) {
  FC_CHECK(argmax.scalar_type() == at::kInt, op, "argmax of dtype int32, got ",
           argmax.scalar_type());
  check_same_device(grad_output, argmax, op, "grad_output", "argmax");
  FC_CHECK(argmax.sym_sizes() == grad_output.sym_sizes(), op, "argmax of shape ",
           shape_str(grad_output.sym_sizes()), ", got ", shape_str(argmax.sym_sizes()));
}

// Values of box k: its batch index must be an integer in [0, n) and its coordinates finite.
// `box` points at 5 values already converted to double.
inline void check_roi_box_values(const double* box, int64_t k, int64_t n, const char* op) {
  FC_CHECK(box[0] >= 0 && box[0] < static_cast<double>(n) && box[0] == std::floor(box[0]), op,
           "rois with a batch index that is an integer in [0, ", n, "), got ", box[0],
           " in box ", k);
  for (int i = 1; i < 5; ++i) {
    FC_CHECK(std::isfinite(box[i]), op, "finite box coordinates, got ", box[i], " in box ", k);
  }
}

// All boxes of a CPU tensor (K, 5).
inline void check_roi_values(const at::Tensor& rois, int64_t n, const char* op) {
  const at::Tensor r = rois.to(at::kDouble).contiguous();
  const double* p = r.const_data_ptr<double>();
  for (int64_t k = 0; k < r.size(0); ++k) check_roi_box_values(p + 5 * k, k, n, op);
}

// The memory format of every ROI op's outputs: the input's (suggest_memory_format).
inline at::MemoryFormat roi_memory_format(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

}  // namespace fastconv
