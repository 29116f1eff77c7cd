// See roi_simd.h: the float channel loops, one clone per instruction set. No FMA contraction
// (AVX2 without -mfma): products and sums round as in torchvision's own kernels.
#include "cpu/roi_simd.h"

#include <cfloat>

#define FC_ROI_CLONES __attribute__((target_clones("avx2", "default")))

namespace fastconv {
namespace cpu {

FC_ROI_CLONES void roi_bilinear_accumulate_f32(float* acc, const float* a, const float* b,
                                               const float* d, const float* e, float w1,
                                               float w2, float w3, float w4, int64_t n) {
  roi_bilinear_accumulate(acc, a, b, d, e, w1, w2, w3, w4, n);
}

FC_ROI_CLONES void roi_scatter_f32(float* dst, const float* g, float w, int64_t n) {
  roi_scatter(dst, g, w, n);
}

// A bin's samples over V * 8 channels with the sums in registers: per channel the same
// operations in the same order as roi_bilinear_accumulate (products of the four corners summed
// left to right, then added to the sum), so results are bit-identical to sample-by-sample calls.
typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));

template <int V>
__attribute__((always_inline)) inline void samples_block(float* acc, const float* base,
                                                         const BilinearSample<float>* s,
                                                         int64_t count) {
  f32x8 sum[V];
  for (int j = 0; j < V; ++j) __builtin_memcpy(&sum[j], acc + 8 * j, sizeof(f32x8));
  for (int64_t i = 0; i < count; ++i) {
    const f32x8 w1 = f32x8{} + s[i].w[0], w2 = f32x8{} + s[i].w[1];
    const f32x8 w3 = f32x8{} + s[i].w[2], w4 = f32x8{} + s[i].w[3];
    for (int j = 0; j < V; ++j) {
      f32x8 a, b, d, e;
      __builtin_memcpy(&a, base + s[i].o[0] + 8 * j, sizeof(f32x8));
      __builtin_memcpy(&b, base + s[i].o[1] + 8 * j, sizeof(f32x8));
      __builtin_memcpy(&d, base + s[i].o[2] + 8 * j, sizeof(f32x8));
      __builtin_memcpy(&e, base + s[i].o[3] + 8 * j, sizeof(f32x8));
      sum[j] += w1 * a + w2 * b + w3 * d + w4 * e;
    }
  }
  for (int j = 0; j < V; ++j) __builtin_memcpy(acc + 8 * j, &sum[j], sizeof(f32x8));
}

FC_ROI_CLONES void roi_samples_accumulate_f32(float* acc, const float* base,
                                              const BilinearSample<float>* s, int64_t count,
                                              int64_t n) {
  int64_t c = 0;
  for (; c + 32 <= n; c += 32) samples_block<4>(acc + c, base + c, s, count);
  for (; c + 16 <= n; c += 16) samples_block<2>(acc + c, base + c, s, count);
  for (; c + 8 <= n; c += 8) samples_block<1>(acc + c, base + c, s, count);
  if (c < n) roi_samples_accumulate(acc + c, base + c, s, count, n - c);
}

// Corners of a bin scattered over V * 8 channels with the gradient values in registers; each
// corner is a load, multiply-add and store (corners may hit the same pixel one after another).
template <int V>
__attribute__((always_inline)) inline void corners_block(float* base, const Corner<float>* t,
                                                         int64_t count, const float* g) {
  f32x8 gv[V];
  for (int j = 0; j < V; ++j) __builtin_memcpy(&gv[j], g + 8 * j, sizeof(f32x8));
  for (int64_t i = 0; i < count; ++i) {
    const f32x8 w = f32x8{} + t[i].w;
    float* p = base + t[i].o;
    for (int j = 0; j < V; ++j) {
      f32x8 d;
      __builtin_memcpy(&d, p + 8 * j, sizeof(f32x8));
      d += w * gv[j];
      __builtin_memcpy(p + 8 * j, &d, sizeof(f32x8));
    }
  }
}

FC_ROI_CLONES void roi_corners_scatter_f32(float* base, const Corner<float>* t, int64_t count,
                                           const float* g, int64_t n) {
  int64_t c = 0;
  for (; c + 32 <= n; c += 32) corners_block<4>(base + c, t, count, g + c);
  for (; c + 16 <= n; c += 16) corners_block<2>(base + c, t, count, g + c);
  for (; c + 8 <= n; c += 8) corners_block<1>(base + c, t, count, g + c);
  if (c < n) roi_corners_scatter(base + c, t, count, g + c, n - c);
}

// ROI Pool's bin maximum for V * 8 channels held in registers (GCC vector extensions: one AVX2
// register per 8 channels, two SSE registers in the portable clone): each pixel of the bin is
// one load, compare and two blends per 8 channels, with no loads or stores of the running maxima.
template <int V>
__attribute__((always_inline)) inline void bin_max_block(const float* v, int64_t W, int64_t C,
                                                         int64_t h0, int64_t h1, int64_t w0,
                                                         int64_t w1, float* dst, int32_t* dst_idx,
                                                         int64_t stride) {
  const float start = (h1 <= h0 || w1 <= w0) ? 0.0f : -FLT_MAX;
  f32x8 best[V];
  i32x8 idx[V];
  for (int j = 0; j < V; ++j) {
    best[j] = f32x8{} + start;
    idx[j] = i32x8{} - 1;
  }
  for (int64_t h = h0; h < h1; ++h) {
    for (int64_t w = w0; w < w1; ++w) {
      const float* p = v + (h * W + w) * C;
      const i32x8 index = i32x8{} + static_cast<int32_t>(h * W + w);
      for (int j = 0; j < V; ++j) {
        f32x8 x;
        __builtin_memcpy(&x, p + 8 * j, sizeof(x));
        const i32x8 take = x > best[j];  // false for NaN: NaN never wins
        best[j] = take ? x : best[j];
        idx[j] = take ? index : idx[j];
      }
    }
  }
  for (int j = 0; j < V; ++j) {
    if (stride == 1) {
      __builtin_memcpy(dst + 8 * j, &best[j], sizeof(best[j]));
      __builtin_memcpy(dst_idx + 8 * j, &idx[j], sizeof(idx[j]));
    } else {
      for (int l = 0; l < 8; ++l) {
        dst[(8 * j + l) * stride] = best[j][l];
        dst_idx[(8 * j + l) * stride] = idx[j][l];
      }
    }
  }
}

FC_ROI_CLONES void roi_bin_max_f32(const float* v, int64_t W, int64_t C, int64_t h0, int64_t h1,
                                   int64_t w0, int64_t w1, float* dst, int32_t* dst_idx,
                                   int64_t stride, int64_t n) {
  int64_t c = 0;
  for (; c + 32 <= n; c += 32)
    bin_max_block<4>(v + c, W, C, h0, h1, w0, w1, dst + c * stride, dst_idx + c * stride, stride);
  for (; c + 8 <= n; c += 8)
    bin_max_block<1>(v + c, W, C, h0, h1, w0, w1, dst + c * stride, dst_idx + c * stride, stride);
  if (c < n)
    roi_bin_max<float, float>(v + c, W, C, h0, h1, w0, w1, dst + c * stride, dst_idx + c * stride,
                              stride, n - c);
}

}  // namespace cpu
}  // namespace fastconv
