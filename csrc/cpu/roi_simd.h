// Channel loops of the CPU ROI kernels (roi_align.cpp, roi_pool.cpp). Every ROI op walks
// channels_last data, so its inner loops run over the C contiguous channels of one pixel: the
// templates here are those loops for any storage/accumulator type, and roi_simd.cpp compiles
// the float ones once per instruction set (AVX-512 with 16-float vectors and gather/scatter,
// AVX2 and portable with 8-float vectors; picked once per process, FASTCONV_CPU_KERNELS=avx2 or
// =generic forcing the narrower ones), all bit-identical.
#pragma once
#include <ATen/OpMathType.h>

#include <cfloat>
#include <cstdint>
#include <type_traits>

namespace fastconv {
namespace cpu {

// acc[c] += w1 * a[c] + w2 * b[c] + w3 * d[c] + w4 * e[c]: one bilinear sample of ROI Align,
// in torchvision's order of operations (four products summed left to right, then added).
template <typename S, typename A>
inline void roi_bilinear_accumulate(A* __restrict acc, const S* a, const S* b, const S* d,
                                    const S* e, A w1, A w2, A w3, A w4, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    acc[c] += w1 * static_cast<A>(a[c]) + w2 * static_cast<A>(b[c]) +
              w3 * static_cast<A>(d[c]) + w4 * static_cast<A>(e[c]);
  }
}

// dst[c] += w * g[c]: one corner of ROI Align's backward. Corners of one sample may be the same
// pixel (clamped at the map's edge), so each corner is its own pass.
template <typename A>
inline void roi_scatter(A* __restrict dst, const A* __restrict g, A w, int64_t n) {
  for (int64_t c = 0; c < n; ++c) dst[c] += w * g[c];
}

// ROI Pool's running maximum over one pixel: a strictly greater value replaces the maximum and
// its index (NaN never does).
template <typename S, typename A>
inline void roi_max_update(A* __restrict best, int32_t* __restrict best_idx, const S* v,
                           int32_t index, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    const A x = static_cast<A>(v[c]);
    const bool take = x > best[c];
    best[c] = take ? x : best[c];
    best_idx[c] = take ? index : best_idx[c];
  }
}

// ROI Pool's bin: the maximum over the pixels rows [h0, h1) x columns [w0, w1) of channels_last
// data and its first flat index h * W + w, for the n channels at v (pixel (h, w) at
// v + (h * W + w) * C); channel c's result goes to dst[c * stride], dst_idx[c * stride]. An
// empty bin gives 0 and -1; otherwise the maximum starts at -FLT_MAX (torchvision's rule, so a
// bin of NaN or -inf keeps -FLT_MAX and -1). Channels go in blocks whose running maxima stay in
// registers (roi_simd.cpp) or, here, in small local arrays.
template <typename S, typename A>
inline void roi_bin_max(const S* v, int64_t W, int64_t C, int64_t h0, int64_t h1, int64_t w0,
                        int64_t w1, S* dst, int32_t* dst_idx, int64_t stride, int64_t n) {
  constexpr int64_t kBlock = 64;
  const A start = (h1 <= h0 || w1 <= w0) ? A(0) : A(-FLT_MAX);
  A best[kBlock];
  int32_t best_idx[kBlock];
  for (int64_t c0 = 0; c0 < n; c0 += kBlock) {
    const int64_t width = n - c0 < kBlock ? n - c0 : kBlock;
    for (int64_t c = 0; c < width; ++c) {
      best[c] = start;
      best_idx[c] = -1;
    }
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w)
        roi_max_update(best, best_idx, v + (h * W + w) * C + c0, static_cast<int32_t>(h * W + w),
                       width);
    for (int64_t c = 0; c < width; ++c) {
      dst[(c0 + c) * stride] = static_cast<S>(best[c]);
      dst_idx[(c0 + c) * stride] = best_idx[c];
    }
  }
}

// ROI Pool's backward, one bin's run of channels into a band of pixels: band[(a[c] - p0) *
// pixel_stride + c] += g[c] for the c < w whose pixel a[c] lies in [p0, p1) (a bin's channels
// at their argmax pixels: no two the same element); others belong to another band, or,
// negative, to an empty bin. Returns an a[c] >= HW (the caller raises), else -1: the check
// stays out of the loop's body so that GCC keeps the loop in registers.
template <typename S, typename A>
inline int32_t roi_add_in_band(A* __restrict band, int64_t pixel_stride, int32_t p0, int32_t p1,
                               int32_t HW, int64_t w, const int32_t* __restrict a,
                               const S* __restrict g) {
  const uint32_t pixels = static_cast<uint32_t>(p1 - p0);
  int32_t bad = -1;
  for (int64_t c = 0; c < w; ++c) {
    const int32_t i = a[c];
    const uint32_t r = static_cast<uint32_t>(i - p0);
    if (r < pixels) {
      band[static_cast<int64_t>(r) * pixel_stride + c] += static_cast<A>(g[c]);
    } else if (i >= HW) {
      bad = i;
    }
  }
  return bad;
}

// One bilinear sample of ROI Align: its four corners at offsets o (elements, from a grid's base
// pointer; a corner's channels adjacent) with weights w, in torchvision's corner order.
template <typename A>
struct BilinearSample {
  int64_t o[4];
  A w[4];
};

// One corner of a sample for the backward: offset and weight.
template <typename A>
struct Corner {
  int64_t o;
  A w;
};

// A bin's samples, in order, accumulated over n channels: the same additions per channel as
// roi_bilinear_accumulate sample by sample (one call per bin instead of per sample; the float
// instance keeps the sums in registers).
template <typename S, typename A>
inline void roi_samples_accumulate(A* acc, const S* base, const BilinearSample<A>* s,
                                   int64_t count, int64_t n) {
  for (int64_t i = 0; i < count; ++i)
    roi_bilinear_accumulate(acc, base + s[i].o[0], base + s[i].o[1], base + s[i].o[2],
                            base + s[i].o[3], s[i].w[0], s[i].w[1], s[i].w[2], s[i].w[3], n);
}

// base[o + c] += w * g[c] for each corner in order (corners may repeat a pixel).
template <typename A>
inline void roi_corners_scatter(A* base, const Corner<A>* t, int64_t count, const A* g,
                                int64_t n) {
  for (int64_t i = 0; i < count; ++i) roi_scatter(base + t[i].o, g, t[i].w, n);
}

// The float instances, compiled per instruction set in roi_simd.cpp.
void roi_bilinear_accumulate_f32(float* acc, const float* a, const float* b, const float* d,
                                 const float* e, float w1, float w2, float w3, float w4,
                                 int64_t n);
void roi_samples_accumulate_f32(float* acc, const float* base, const BilinearSample<float>* s,
                                int64_t count, int64_t n);
void roi_corners_scatter_f32(float* base, const Corner<float>* t, int64_t count, const float* g,
                             int64_t n);
void roi_bin_max_f32(const float* v, int64_t W, int64_t C, int64_t h0, int64_t h1, int64_t w0,
                     int64_t w1, float* dst, int32_t* dst_idx, int64_t stride, int64_t n);
int32_t roi_add_in_band_f32(float* band, int64_t pixel_stride, int32_t p0, int32_t p1,
                            int32_t HW, int64_t w, const int32_t* a, const float* g);

// Dispatch by type: float goes to the multi-versioned instances, others to the templates.
template <typename S, typename A>
inline void bilinear_accumulate(A* acc, const S* a, const S* b, const S* d, const S* e, A w1,
                                A w2, A w3, A w4, int64_t n) {
  if constexpr (std::is_same_v<S, float> && std::is_same_v<A, float>) {
    roi_bilinear_accumulate_f32(acc, a, b, d, e, w1, w2, w3, w4, n);
  } else {
    roi_bilinear_accumulate(acc, a, b, d, e, w1, w2, w3, w4, n);
  }
}
template <typename S, typename A>
inline void samples_accumulate(A* acc, const S* base, const BilinearSample<A>* s, int64_t count,
                               int64_t n) {
  if constexpr (std::is_same_v<S, float> && std::is_same_v<A, float>) {
    roi_samples_accumulate_f32(acc, base, s, count, n);
  } else {
    roi_samples_accumulate(acc, base, s, count, n);
  }
}
template <typename A>
inline void corners_scatter(A* base, const Corner<A>* t, int64_t count, const A* g, int64_t n) {
  if constexpr (std::is_same_v<A, float>) {
    roi_corners_scatter_f32(base, t, count, g, n);
  } else {
    roi_corners_scatter(base, t, count, g, n);
  }
}
template <typename S>
inline void bin_max(const S* v, int64_t W, int64_t C, int64_t h0, int64_t h1, int64_t w0,
                    int64_t w1, S* dst, int32_t* dst_idx, int64_t stride, int64_t n) {
  if constexpr (std::is_same_v<S, float>) {
    roi_bin_max_f32(v, W, C, h0, h1, w0, w1, dst, dst_idx, stride, n);
  } else {
    roi_bin_max<S, at::opmath_type<S>>(v, W, C, h0, h1, w0, w1, dst, dst_idx, stride, n);
  }
}

template <typename S, typename A>
inline int32_t add_in_band(A* band, int64_t pixel_stride, int32_t p0, int32_t p1, int32_t HW,
                           int64_t w, const int32_t* a, const S* g) {
  if constexpr (std::is_same_v<S, float> && std::is_same_v<A, float>) {
    return roi_add_in_band_f32(band, pixel_stride, p0, p1, HW, w, a, g);
  } else {
    return roi_add_in_band(band, pixel_stride, p0, p1, HW, w, a, g);
  }
}

}  // namespace cpu
}  // namespace fastconv
