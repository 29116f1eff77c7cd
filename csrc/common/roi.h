// ROI Align and ROI Pool geometry, written once for every backend (CPU, CUDA, emulated).
//
// The rules are torchvision's (torchvision/csrc/ops/cpu/roi_align_common.h, roi_align_kernel.cpp,
// roi_pool_kernel.cpp), reproduced operation by operation in the compute type T (float for
// float/half/bfloat16 inputs, double for double) so fp32 results match torchvision's:
//
// ROI Align. A box (x1, y1, x2, y2) in image pixels becomes start = x1 * scale - offset, with
// offset 0.5 when `aligned` (pixel centres at half-integers) and 0 otherwise; without `aligned`
// a box is at least 1x1. Bin (ph, pw) of a PHxPW output covers [start + ph*bin, start +
// (ph+1)*bin); it averages grid_h x grid_w samples at the centres of a regular sub-grid
// (grid = sampling_ratio, or ceil(roi size / output size) when sampling_ratio <= 0); the sum is
// divided by max(grid_h * grid_w, 1), so a bin without samples is 0. A sample at (y, x) reads the
// map by bilinear interpolation; a sample with y < -1, y > H, x < -1 or x > W reads 0, and
// coordinates in [-1, 0] clamp to 0, those past the last row/column to it.
//
// Bilinear weights are separable: the weight of corner (y_low, x_high) is hy * lx and so on, so
// each axis is computed once (AxisTap) and the 2-D weights are products; an out-of-range sample
// has both weights of its axis 0, so the product is 0 whichever axis is out of range.
//
// ROI Pool. Box corners are rounded (half away from zero) after scaling; the ROI is at least 1x1
// pixels; bin (ph, pw) covers rows [floor(ph * bin_h), ceil((ph + 1) * bin_h)) offset by the ROI
// start and clipped to the map; the output is the maximum over the bin (a strictly greater value
// replaces it, so the first of equal values wins and NaN never does), its argmax the flat
// h * W + w; an empty bin gives 0 and argmax -1 (it receives no gradient).
#pragma once
#include <math.h>

#include <cstdint>

#include "common/macros.h"

namespace fastconv {

FC_HD float roi_floor(float v) { return floorf(v); }
FC_HD double roi_floor(double v) { return floor(v); }
FC_HD float roi_ceil(float v) { return ceilf(v); }
FC_HD double roi_ceil(double v) { return ceil(v); }
FC_HD float roi_round(float v) { return roundf(v); }  // half away from zero, like std::round
FC_HD double roi_round(double v) { return round(v); }

// A float -> int conversion that saturates instead of being undefined for huge values (boxes are
// validated to be finite, not small). Results within [-2^30, 2^30] are exact.
template <typename T>
FC_HD int64_t roi_to_int(T v) {
  const T limit = T(1 << 30);
  return static_cast<int64_t>(v > limit ? limit : (v < -limit ? -limit : v));
}

// Adaptive sampling never takes more than this many samples per bin and axis. torchvision has no
// cap (its int conversion overflows for absurd boxes); real boxes need a few dozen at most.
constexpr int64_t kRoiAlignMaxGrid = 1 << 12;

// ---- ROI Align ----------------------------------------------------------------------------------
template <typename T>
struct RoiAlignBox {
  T start_h, start_w;  // top-left corner in feature-map coordinates
  T bin_h, bin_w;      // bin size (may be negative for inverted boxes when aligned)
  int64_t grid_h, grid_w;  // samples per bin along each axis; no samples if either is <= 0
  T count;             // divisor of the bin's sum: max(grid_h * grid_w, 1)
};

// roi points at the 5 values (batch index, x1, y1, x2, y2) of one box.
template <typename T, typename R>
FC_HD RoiAlignBox<T> roi_align_box(const R* roi, T spatial_scale, int64_t pooled_h,
                                   int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
  const T offset = aligned ? T(0.5) : T(0);
  RoiAlignBox<T> b;
  b.start_w = static_cast<T>(roi[1]) * spatial_scale - offset;
  b.start_h = static_cast<T>(roi[2]) * spatial_scale - offset;
  const T end_w = static_cast<T>(roi[3]) * spatial_scale - offset;
  const T end_h = static_cast<T>(roi[4]) * spatial_scale - offset;
  T roi_w = end_w - b.start_w;
  T roi_h = end_h - b.start_h;
  if (!aligned) {  // malformed ROIs are forced to 1x1
    roi_w = roi_w > T(1) ? roi_w : T(1);
    roi_h = roi_h > T(1) ? roi_h : T(1);
  }
  b.bin_h = roi_h / static_cast<T>(pooled_h);
  b.bin_w = roi_w / static_cast<T>(pooled_w);
  if (sampling_ratio > 0) {
    b.grid_h = b.grid_w = sampling_ratio;
  } else {
    b.grid_h = roi_to_int(roi_ceil(roi_h / static_cast<T>(pooled_h)));
    b.grid_w = roi_to_int(roi_ceil(roi_w / static_cast<T>(pooled_w)));
    b.grid_h = b.grid_h < kRoiAlignMaxGrid ? b.grid_h : kRoiAlignMaxGrid;
    b.grid_w = b.grid_w < kRoiAlignMaxGrid ? b.grid_w : kRoiAlignMaxGrid;
  }
  const int64_t n = b.grid_h * b.grid_w;
  b.count = static_cast<T>(n > 1 ? n : 1);
  return b;
}

// Coordinate of sample i (0 <= i < grid) of bin p along one axis, in torchvision's order of
// operations: start + p * bin + (i + 0.5) * bin / grid.
template <typename T>
FC_HD T roi_align_sample(T start, T bin, int64_t p, int64_t i, int64_t grid) {
  return start + static_cast<T>(p) * bin +
         static_cast<T>(static_cast<float>(i) + 0.5f) * bin / static_cast<T>(grid);
}

// One axis of a bilinear sample: the two neighbouring rows (or columns) and their weights.
template <typename T>
struct AxisTap {
  int64_t low, high;
  T w_low, w_high;  // hy = 1 - ly and ly in torchvision's names; both 0 when out of range
};

// The tap of coordinate v on an axis of `size` pixels (torchvision's bilinear_interpolate).
template <typename T>
FC_HD AxisTap<T> roi_axis_tap(T v, int64_t size) {
  AxisTap<T> t;
  if (v < T(-1) || v > static_cast<T>(size)) {  // outside the map: reads 0, no gradient
    t.low = t.high = 0;
    t.w_low = t.w_high = T(0);
    return t;
  }
  if (v <= T(0)) v = T(0);
  t.low = static_cast<int64_t>(v);
  if (t.low >= size - 1) {
    t.low = t.high = size - 1;
    v = static_cast<T>(t.low);
  } else {
    t.high = t.low + 1;
  }
  const T l = v - static_cast<T>(t.low);
  t.w_low = T(1) - l;
  t.w_high = l;
  return t;
}

// Weight with which a sample's axis tap reaches pixel row (or column) p: the separable factor
// used by the gather form of the backward pass.
template <typename T>
FC_HD T roi_axis_weight(const AxisTap<T>& t, int64_t p) {
  return (t.low == p ? t.w_low : T(0)) + (t.high == p ? t.w_high : T(0));
}

// ---- ROI Pool -----------------------------------------------------------------------------------
struct RoiPoolBox {
  int64_t start_h, start_w;  // rounded, scaled top-left corner
  int64_t roi_h, roi_w;      // at least 1
};

template <typename T, typename R>
FC_HD RoiPoolBox roi_pool_box(const R* roi, T spatial_scale) {
  RoiPoolBox b;
  b.start_w = roi_to_int(roi_round(static_cast<T>(roi[1]) * spatial_scale));
  b.start_h = roi_to_int(roi_round(static_cast<T>(roi[2]) * spatial_scale));
  const int64_t end_w = roi_to_int(roi_round(static_cast<T>(roi[3]) * spatial_scale));
  const int64_t end_h = roi_to_int(roi_round(static_cast<T>(roi[4]) * spatial_scale));
  b.roi_w = end_w - b.start_w + 1 > 1 ? end_w - b.start_w + 1 : 1;
  b.roi_h = end_h - b.start_h + 1 > 1 ? end_h - b.start_h + 1 : 1;
  return b;
}

// Pixel range [start, end) of bin p along one axis, clipped to [0, size).
struct RoiPoolRange {
  int64_t start, end;
};

template <typename T>
FC_HD RoiPoolRange roi_pool_range(int64_t roi_start, int64_t roi_size, int64_t pooled, int64_t p,
                                  int64_t size) {
  const T bin = static_cast<T>(roi_size) / static_cast<T>(pooled);
  int64_t start = roi_to_int(roi_floor(static_cast<T>(p) * bin)) + roi_start;
  int64_t end = roi_to_int(roi_ceil(static_cast<T>(p + 1) * bin)) + roi_start;
  start = start < 0 ? 0 : (start > size ? size : start);
  end = end < 0 ? 0 : (end > size ? size : end);
  return {start, end};
}

}  // namespace fastconv
