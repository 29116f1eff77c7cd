// ROI Align and ROI Pool kernels: forward passes, deterministic gather backward passes and the
// box validation kernel, for NCHW and channels_last (NHWC). Device code only, compiled by nvcc
// and by g++ against csrc/simt (SIMT.md): no ATen, no <<<>>>, no inline PTX, no __CUDA_ARCH__
// bodies. Launch plans: cuda/launch/roi.h; geometry: common/roi.h (shared with the CPU).
//
// Conventions:
// - One thread per output element (forward) or per input element (backward), grid-stride
//   loops, 64-bit index math. NCHW threads run along w, NHWC threads along c, so neighbouring
//   threads read neighbouring addresses and share the control flow of one box.
// - scalar_t is the storage type, acc_t the compute type (float for half/bf16): box geometry,
//   bilinear weights and sums are in acc_t.
// - Backward passes gather: the thread of input element (n, c, h, w) walks the boxes of image n
//   in box order (order[begin[n] .. begin[n + 1]), a stable sort by batch index) and adds what
//   each bin sends to (h, w). No atomics, so repeated runs are bit-identical.
#pragma once
#include <cfloat>
#include <cstdint>

#include "common/roi.h"
#include "cuda/launch/launch.h"

namespace fastconv {
namespace FC_KERNEL_NS {

constexpr int kRoiThreads = 256;  // block size of every kernel here (plans and launch bounds)

// Sizes of one call: feature map (n, c, h, w), k boxes, pooled_h x pooled_w bins, and the
// roi_align arguments (roi_pool ignores sampling_ratio and aligned).
struct RoiShape {
  int64_t n, c, h, w, k, pooled_h, pooled_w, sampling_ratio;
  bool aligned;
};

// Element i of a (K or N, C, A, B) tensor enumerated in memory order -> (outer, c, a, b).
struct RoiIndex {
  int64_t outer, c, a, b;
};
template <bool kChannelsLast>
__device__ __forceinline__ RoiIndex roi_unflatten(int64_t i, int64_t c, int64_t a, int64_t b) {
  RoiIndex r;
  if (kChannelsLast) {
    r.c = i % c;
    r.b = (i / c) % b;
    r.a = (i / (c * b)) % a;
  } else {
    r.b = i % b;
    r.a = (i / b) % a;
    r.c = (i / (a * b)) % c;
  }
  r.outer = i / (c * a * b);
  return r;
}

// ---- box validation --------------------------------------------------------------------------
// The smallest index of a box whose batch index is not an integer in [0, n) or whose
// coordinates are not finite goes to *first_bad (UINT64_MAX when none; the launcher reads it
// back and re-checks that box on the host for the error message).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kRoiThreads)
    roi_validate(const scalar_t* rois, int64_t k, int64_t n, unsigned long long* first_bad) {
  for (int64_t i = grid_first(); i < k; i += grid_step()) {
    const scalar_t* r = rois + 5 * i;
    const acc_t b = static_cast<acc_t>(r[0]);
    bool ok = b >= acc_t(0) && b < static_cast<acc_t>(n) && b == roi_floor(b);
    for (int j = 1; j < 5; ++j) {
      const acc_t v = static_cast<acc_t>(r[j]);
      ok = ok && v - v == acc_t(0);  // false for inf and NaN
    }
    if (!ok) atomicMin(first_bad, static_cast<unsigned long long>(i));
  }
}

// ---- roi_align forward -----------------------------------------------------------------------
// One thread per output element; `total` = k * c * pooled_h * pooled_w.
template <typename scalar_t, typename acc_t, bool kChannelsLast>
__global__ void __launch_bounds__(kRoiThreads)
    roi_align_forward(const scalar_t* input, const scalar_t* rois, scalar_t* output,
                      RoiShape s, acc_t spatial_scale, int64_t total) {
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    const RoiIndex o = roi_unflatten<kChannelsLast>(i, s.c, s.pooled_h, s.pooled_w);
    const scalar_t* roi = rois + 5 * o.outer;
    const RoiAlignBox<acc_t> box = roi_align_box<acc_t>(roi, spatial_scale, s.pooled_h,
                                                        s.pooled_w, s.sampling_ratio, s.aligned);
    const int64_t image = static_cast<int64_t>(static_cast<acc_t>(roi[0]));
    // element (h, w) of this thread's plane is at plane[(h * s.w + w) * step]
    const int64_t step = kChannelsLast ? s.c : 1;
    const scalar_t* plane = input + (kChannelsLast ? image * s.h * s.w * s.c + o.c
                                                   : (image * s.c + o.c) * s.h * s.w);
    acc_t sum = acc_t(0);
    for (int64_t iy = 0; iy < box.grid_h; ++iy) {
      const AxisTap<acc_t> ty =
          roi_axis_tap(roi_align_sample(box.start_h, box.bin_h, o.a, iy, box.grid_h), s.h);
      for (int64_t ix = 0; ix < box.grid_w; ++ix) {
        const AxisTap<acc_t> tx =
            roi_axis_tap(roi_align_sample(box.start_w, box.bin_w, o.b, ix, box.grid_w), s.w);
        if ((ty.w_low == acc_t(0) && ty.w_high == acc_t(0)) ||
            (tx.w_low == acc_t(0) && tx.w_high == acc_t(0)))
          continue;  // a sample outside the map reads 0
        const acc_t v1 = static_cast<acc_t>(plane[(ty.low * s.w + tx.low) * step]);
        const acc_t v2 = static_cast<acc_t>(plane[(ty.low * s.w + tx.high) * step]);
        const acc_t v3 = static_cast<acc_t>(plane[(ty.high * s.w + tx.low) * step]);
        const acc_t v4 = static_cast<acc_t>(plane[(ty.high * s.w + tx.high) * step]);
        sum += ty.w_low * tx.w_low * v1 + ty.w_low * tx.w_high * v2 +
               ty.w_high * tx.w_low * v3 + ty.w_high * tx.w_high * v4;
      }
    }
    output[i] = static_cast<scalar_t>(sum / box.count);
  }
}

// ---- roi_align backward (gather) -------------------------------------------------------------
// Weight with which the samples of bin p (along one axis) reach pixel row/column `pixel`:
// the sum over the bin's samples of their separable bilinear factor (common/roi.h).
template <typename acc_t>
__device__ __forceinline__ acc_t roi_align_bin_weight(acc_t start, acc_t bin, int64_t p,
                                                      int64_t grid, int64_t pixel, int64_t size) {
  acc_t weight = acc_t(0);
#pragma unroll 1
  for (int64_t i = 0; i < grid; ++i)
    weight += roi_axis_weight(roi_axis_tap(roi_align_sample(start, bin, p, i, grid), size), pixel);
  return weight;
}

// Whether samples along one axis, all within [start, start + pooled * bin], can reach `pixel`
// (a conservative test with a pixel of slack for rounding; the exact weights follow).
template <typename acc_t>
__device__ __forceinline__ bool roi_align_may_reach(acc_t start, acc_t bin, int64_t pooled,
                                                    int64_t pixel) {
  const acc_t end = start + static_cast<acc_t>(pooled) * bin;
  const acc_t lo = start < end ? start : end, hi = start < end ? end : start;
  return static_cast<acc_t>(pixel) >= roi_floor(lo) - acc_t(2) &&
         static_cast<acc_t>(pixel) <= roi_ceil(hi) + acc_t(2);
}

// Offset of grad_output element (k, c, bin) relative to box k's first element: grad_output
// (and argmax) are (k, c, pooled_h, pooled_w) in grad_input's layout.
template <bool kChannelsLast>
__device__ __forceinline__ int64_t roi_bin_offset(int64_t c, int64_t bin, int64_t channels,
                                                  int64_t bins) {
  return kChannelsLast ? bin * channels + c : c * bins + bin;
}

// One thread per input element; `total` = n * c * h * w. grad_output and grad_input share the
// layout kChannelsLast.
template <typename scalar_t, typename acc_t, bool kChannelsLast>
__global__ void __launch_bounds__(kRoiThreads)
    roi_align_backward_gather(const scalar_t* grad_output, const scalar_t* rois,
                              const int64_t* order, const int64_t* begin, scalar_t* grad_input,
                              RoiShape s, acc_t spatial_scale, int64_t total) {
  const int64_t bins = s.pooled_h * s.pooled_w;
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    const RoiIndex p = roi_unflatten<kChannelsLast>(i, s.c, s.h, s.w);
    acc_t sum = acc_t(0);
#pragma unroll 1
    for (int64_t j = begin[p.outer]; j < begin[p.outer + 1]; ++j) {
      const int64_t k = order[j];
      const RoiAlignBox<acc_t> box = roi_align_box<acc_t>(rois + 5 * k, spatial_scale,
                                                          s.pooled_h, s.pooled_w,
                                                          s.sampling_ratio, s.aligned);
      if (box.grid_h <= 0 || box.grid_w <= 0 ||
          !roi_align_may_reach(box.start_h, box.bin_h, s.pooled_h, p.a) ||
          !roi_align_may_reach(box.start_w, box.bin_w, s.pooled_w, p.b))
        continue;
      const scalar_t* go = grad_output + k * s.c * bins;
      acc_t box_sum = acc_t(0);  // this box's contribution, before the division by count
#pragma unroll 1
      for (int64_t ph = 0; ph < s.pooled_h; ++ph) {
        const acc_t wy = roi_align_bin_weight(box.start_h, box.bin_h, ph, box.grid_h, p.a, s.h);
        if (wy == acc_t(0)) continue;
#pragma unroll 1
        for (int64_t pw = 0; pw < s.pooled_w; ++pw) {
          const acc_t wx =
              roi_align_bin_weight(box.start_w, box.bin_w, pw, box.grid_w, p.b, s.w);
          if (wx == acc_t(0)) continue;
          const int64_t at = roi_bin_offset<kChannelsLast>(p.c, ph * s.pooled_w + pw, s.c, bins);
          box_sum += static_cast<acc_t>(go[at]) * (wy * wx);
        }
      }
      sum += box_sum / box.count;
    }
    grad_input[i] = static_cast<scalar_t>(sum);
  }
}

// ---- roi_pool forward ------------------------------------------------------------------------
// One thread per output element; `total` = k * c * pooled_h * pooled_w.
template <typename scalar_t, typename acc_t, bool kChannelsLast>
__global__ void __launch_bounds__(kRoiThreads)
    roi_pool_forward(const scalar_t* input, const scalar_t* rois, scalar_t* output,
                     int32_t* argmax, RoiShape s, acc_t spatial_scale, int64_t total) {
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    const RoiIndex o = roi_unflatten<kChannelsLast>(i, s.c, s.pooled_h, s.pooled_w);
    const scalar_t* roi = rois + 5 * o.outer;
    const RoiPoolBox box = roi_pool_box<acc_t>(roi, spatial_scale);
    const RoiPoolRange rows = roi_pool_range<acc_t>(box.start_h, box.roi_h, s.pooled_h, o.a, s.h);
    const RoiPoolRange cols = roi_pool_range<acc_t>(box.start_w, box.roi_w, s.pooled_w, o.b, s.w);
    const int64_t image = static_cast<int64_t>(static_cast<acc_t>(roi[0]));
    const int64_t step = kChannelsLast ? s.c : 1;
    const scalar_t* plane = input + (kChannelsLast ? image * s.h * s.w * s.c + o.c
                                                   : (image * s.c + o.c) * s.h * s.w);
    const bool empty = rows.end <= rows.start || cols.end <= cols.start;
    acc_t best = empty ? acc_t(0) : acc_t(-FLT_MAX);
    int32_t best_index = -1;
    for (int64_t h = rows.start; h < rows.end; ++h) {
      for (int64_t w = cols.start; w < cols.end; ++w) {
        const acc_t v = static_cast<acc_t>(plane[(h * s.w + w) * step]);
        if (v > best) {
          best = v;
          best_index = static_cast<int32_t>(h * s.w + w);
        }
      }
    }
    output[i] = static_cast<scalar_t>(best);
    argmax[i] = best_index;
  }
}

// ---- roi_pool backward (gather) --------------------------------------------------------------
// One thread per input element; grad_output and argmax (k, c, pooled_h, pooled_w) share
// grad_input's layout kChannelsLast. A bin adds its gradient where its argmax is this element;
// an argmax outside its bin (impossible for one from the forward) adds nothing.
template <typename scalar_t, typename acc_t, bool kChannelsLast>
__global__ void __launch_bounds__(kRoiThreads)
    roi_pool_backward_gather(const scalar_t* grad_output, const int32_t* argmax,
                             const scalar_t* rois, const int64_t* order, const int64_t* begin,
                             scalar_t* grad_input, RoiShape s, acc_t spatial_scale,
                             int64_t total) {
  const int64_t bins = s.pooled_h * s.pooled_w;
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    const RoiIndex p = roi_unflatten<kChannelsLast>(i, s.c, s.h, s.w);
    const int32_t flat = static_cast<int32_t>(p.a * s.w + p.b);
    acc_t sum = acc_t(0);
#pragma unroll 1
    for (int64_t j = begin[p.outer]; j < begin[p.outer + 1]; ++j) {
      const int64_t k = order[j];
      const RoiPoolBox box = roi_pool_box<acc_t>(rois + 5 * k, spatial_scale);
      // every bin lies within the box (plus one pixel: (ph + 1) * bin may round up past it)
      if (p.a < box.start_h || p.a > box.start_h + box.roi_h || p.b < box.start_w ||
          p.b > box.start_w + box.roi_w)
        continue;
      const int64_t box_base = k * s.c * bins;
#pragma unroll 1
      for (int64_t ph = 0; ph < s.pooled_h; ++ph) {
        const RoiPoolRange rows =
            roi_pool_range<acc_t>(box.start_h, box.roi_h, s.pooled_h, ph, s.h);
        if (p.a < rows.start || p.a >= rows.end) continue;
#pragma unroll 1
        for (int64_t pw = 0; pw < s.pooled_w; ++pw) {
          const RoiPoolRange cols =
              roi_pool_range<acc_t>(box.start_w, box.roi_w, s.pooled_w, pw, s.w);
          if (p.b < cols.start || p.b >= cols.end) continue;
          const int64_t at =
              box_base + roi_bin_offset<kChannelsLast>(p.c, ph * s.pooled_w + pw, s.c, bins);
          if (argmax[at] == flat) sum += static_cast<acc_t>(grad_output[at]);
        }
      }
    }
    grad_input[i] = static_cast<scalar_t>(sum);
  }
}

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
