// See roi_simd.h: the float channel loops, written once for vectors of L floats (GCC vector
// extensions) and compiled per instruction set: AVX-512 with L = 16 (one zmm register),
// AVX2 with L = 8 (one ymm register) and a portable build with L = 8 (pairs of SSE registers).
// ROI Pool's backward run into a band uses AVX-512's gather and scatter (AVX2 has no scatter;
// its versions are the template). roi_isa() picks one version for the process when the library
// loads; FASTCONV_CPU_KERNELS=avx2 keeps an AVX-512 machine on the AVX2 code and =generic on the
// portable code, so tests can cover each there. Every version does the same operations per
// channel in the same order, so the results are bit-identical whatever runs. No FMA
// contraction: the AVX2 target has no FMA, and the AVX-512 functions (whose target includes
// FMA, which GCC would fuse a * b + c into) are compiled with fp-contract=off, so products and
// sums round as in torchvision's own kernels (objdump: no vfmadd in roi_simd.o).
//
// Measured against the AVX2-only build on a 2-core AVX-512 Xeon, 2 threads (min ms): ROI Pool
// forward channels_last 7.50 -> 3.82 (rp_fastrcnn_vgg16_train), NCHW 13.37 -> 9.73; ROI Align
// forward channels_last 14.7 -> 8.0 (ra_maskrcnn_mask_p3); ROI Pool channels_last fwd+bwd
// 14.03 -> 10.83 (rp_fasterrcnn_vgg16_test), of which 14.03 -> 12.06 from 16-lane forwards
// and the rest from the gather/scatter. Blocks of 2 or 8 vectors instead of 4 for the
// 16-lane bin maximum and samples measured no better.
#include "cpu/roi_simd.h"

#include <immintrin.h>

#include <cfloat>
#include <climits>
#include <cstdlib>
#include <cstring>

#define FC_ROI_INLINE __attribute__((always_inline)) inline
// Vectors wider than the portable target's registers pass only between always-inlined helpers,
// never across a real call, so the ABI note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastconv {
namespace cpu {
namespace {

template <int L>
struct Lanes {
  typedef float f32 __attribute__((vector_size(4 * L)));
  typedef int32_t i32 __attribute__((vector_size(4 * L)));
};

template <typename V, typename T>
FC_ROI_INLINE V load(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
FC_ROI_INLINE void store(T* p, const V& v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

// A bin's samples over V * L channels with the sums in registers: per channel the same
// operations in the same order as roi_bilinear_accumulate (products of the four corners summed
// left to right, then added to the sum), so results are bit-identical to sample-by-sample calls.
template <int V, int L>
FC_ROI_INLINE void samples_block(float* acc, const float* base, const BilinearSample<float>* s,
                                 int64_t count) {
  using F = typename Lanes<L>::f32;
  F sum[V];
  for (int j = 0; j < V; ++j) sum[j] = load<F>(acc + L * j);
  for (int64_t i = 0; i < count; ++i) {
    const F w1 = F{} + s[i].w[0], w2 = F{} + s[i].w[1];
    const F w3 = F{} + s[i].w[2], w4 = F{} + s[i].w[3];
    for (int j = 0; j < V; ++j) {
      const F a = load<F>(base + s[i].o[0] + L * j), b = load<F>(base + s[i].o[1] + L * j);
      const F d = load<F>(base + s[i].o[2] + L * j), e = load<F>(base + s[i].o[3] + L * j);
      sum[j] += w1 * a + w2 * b + w3 * d + w4 * e;
    }
  }
  for (int j = 0; j < V; ++j) store(acc + L * j, sum[j]);
}

template <int L>
FC_ROI_INLINE void samples_accumulate_lanes(float* acc, const float* base,
                                            const BilinearSample<float>* s, int64_t count,
                                            int64_t n) {
  int64_t c = 0;
  for (; c + 4 * L <= n; c += 4 * L) samples_block<4, L>(acc + c, base + c, s, count);
  for (; c + 2 * L <= n; c += 2 * L) samples_block<2, L>(acc + c, base + c, s, count);
  for (; c + L <= n; c += L) samples_block<1, L>(acc + c, base + c, s, count);
  if constexpr (L > 8)
    for (; c + 8 <= n; c += 8) samples_block<1, 8>(acc + c, base + c, s, count);
  if (c < n) roi_samples_accumulate(acc + c, base + c, s, count, n - c);
}

// Corners of a bin scattered over V * L channels with the gradient values in registers; each
// corner is a load, multiply, add and store (corners may hit the same pixel one after another).
template <int V, int L>
FC_ROI_INLINE void corners_block(float* base, const Corner<float>* t, int64_t count,
                                 const float* g) {
  using F = typename Lanes<L>::f32;
  F gv[V];
  for (int j = 0; j < V; ++j) gv[j] = load<F>(g + L * j);
  for (int64_t i = 0; i < count; ++i) {
    const F w = F{} + t[i].w;
    float* p = base + t[i].o;
    for (int j = 0; j < V; ++j) store(p + L * j, load<F>(p + L * j) + w * gv[j]);
  }
}

template <int L>
FC_ROI_INLINE void corners_scatter_lanes(float* base, const Corner<float>* t, int64_t count,
                                         const float* g, int64_t n) {
  int64_t c = 0;
  for (; c + 4 * L <= n; c += 4 * L) corners_block<4, L>(base + c, t, count, g + c);
  for (; c + 2 * L <= n; c += 2 * L) corners_block<2, L>(base + c, t, count, g + c);
  for (; c + L <= n; c += L) corners_block<1, L>(base + c, t, count, g + c);
  if constexpr (L > 8)
    for (; c + 8 <= n; c += 8) corners_block<1, 8>(base + c, t, count, g + c);
  if (c < n) roi_corners_scatter(base + c, t, count, g + c, n - c);
}

// ROI Pool's bin maximum for V * L channels held in registers: each pixel of the bin is one
// load, compare and two selects per L channels, with no loads or stores of the running maxima.
template <int V, int L>
FC_ROI_INLINE void bin_max_block(const float* v, int64_t W, int64_t C, int64_t h0, int64_t h1,
                                 int64_t w0, int64_t w1, float* dst, int32_t* dst_idx,
                                 int64_t stride) {
  using F = typename Lanes<L>::f32;
  using I = typename Lanes<L>::i32;
  const float start = (h1 <= h0 || w1 <= w0) ? 0.0f : -FLT_MAX;
  F best[V];
  I idx[V];
  for (int j = 0; j < V; ++j) {
    best[j] = F{} + start;
    idx[j] = I{} - 1;
  }
  for (int64_t h = h0; h < h1; ++h) {
    for (int64_t w = w0; w < w1; ++w) {
      const float* p = v + (h * W + w) * C;
      const I index = I{} + static_cast<int32_t>(h * W + w);
      for (int j = 0; j < V; ++j) {
        const F x = load<F>(p + L * j);
        const I take = x > best[j];  // false for NaN: NaN never wins
        best[j] = take ? x : best[j];
        idx[j] = take ? index : idx[j];
      }
    }
  }
  for (int j = 0; j < V; ++j) {
    if (stride == 1) {
      store(dst + L * j, best[j]);
      store(dst_idx + L * j, idx[j]);
    } else {
      for (int l = 0; l < L; ++l) {
        dst[(L * j + l) * stride] = best[j][l];
        dst_idx[(L * j + l) * stride] = idx[j][l];
      }
    }
  }
}

template <int L>
FC_ROI_INLINE void bin_max_lanes(const float* v, int64_t W, int64_t C, int64_t h0, int64_t h1,
                                 int64_t w0, int64_t w1, float* dst, int32_t* dst_idx,
                                 int64_t stride, int64_t n) {
  int64_t c = 0;
  for (; c + 4 * L <= n; c += 4 * L)
    bin_max_block<4, L>(v + c, W, C, h0, h1, w0, w1, dst + c * stride, dst_idx + c * stride,
                        stride);
  for (; c + L <= n; c += L)
    bin_max_block<1, L>(v + c, W, C, h0, h1, w0, w1, dst + c * stride, dst_idx + c * stride,
                        stride);
  if constexpr (L > 8)
    for (; c + 8 <= n; c += 8)
      bin_max_block<1, 8>(v + c, W, C, h0, h1, w0, w1, dst + c * stride, dst_idx + c * stride,
                          stride);
  if (c < n)
    roi_bin_max<float, float>(v + c, W, C, h0, h1, w0, w1, dst + c * stride, dst_idx + c * stride,
                              stride, n - c);
}

// ROI Pool backward's bin run (roi_add_in_band) 16 channels at a time with AVX-512's masked
// gather and scatter: the channels whose argmax lies in the band are masked in, and their
// elements are distinct (one channel each), so the scatter has no conflicts; each element
// still gets band + g, rounded once. A step with an argmax past the map goes to the template,
// which finds it. Offsets are int32, so bands of 2^31 elements or more take the template.
__attribute__((target("avx512f"))) int32_t add_in_band_avx512(
    float* band, int64_t pixel_stride, int32_t p0, int32_t p1, int32_t HW, int64_t w,
    const int32_t* a, const float* g) {
  if (static_cast<int64_t>(p1 - p0) * pixel_stride > INT32_MAX)
    return roi_add_in_band(band, pixel_stride, p0, p1, HW, w, a, g);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i first = _mm512_set1_epi32(p0), pixels = _mm512_set1_epi32(p1 - p0);
  const __m512i end = _mm512_set1_epi32(HW);
  const __m512i stride = _mm512_set1_epi32(static_cast<int32_t>(pixel_stride));
  int32_t bad = -1;
  int64_t c = 0;
  for (; c + 16 <= w; c += 16) {
    const __m512i i = _mm512_loadu_si512(a + c);
    const __m512i r = _mm512_sub_epi32(i, first);
    const __mmask16 in = _mm512_cmplt_epu32_mask(r, pixels);
    if (__builtin_expect(_mm512_mask_cmpge_epi32_mask(static_cast<__mmask16>(~in), i, end), 0)) {
      bad = roi_add_in_band(band + c, pixel_stride, p0, p1, HW, 16, a + c, g + c);
      continue;
    }
    const __m512i at = _mm512_add_epi32(_mm512_mullo_epi32(r, stride),
                                        _mm512_add_epi32(lane, _mm512_set1_epi32(c)));
    const __m512 old = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, at, band, 4);
    _mm512_mask_i32scatter_ps(band, in, at, _mm512_add_ps(old, _mm512_loadu_ps(g + c)), 4);
  }
  if (c < w) {
    const int32_t tail = roi_add_in_band(band + c, pixel_stride, p0, p1, HW, w - c, a + c, g + c);
    if (tail >= 0) bad = tail;
  }
  return bad;
}

template <int L>
FC_ROI_INLINE int32_t add_in_band_lanes(float* band, int64_t pixel_stride, int32_t p0, int32_t p1,
                                        int32_t HW, int64_t w, const int32_t* a, const float* g) {
  if constexpr (L == 16) {
    return add_in_band_avx512(band, pixel_stride, p0, p1, HW, w, a, g);
  } else {  // AVX2 has gathers but no scatters
    return roi_add_in_band(band, pixel_stride, p0, p1, HW, w, a, g);
  }
}

// The single-call loop of roi_simd.h at any lane count (vectorized by GCC).
template <int L>
FC_ROI_INLINE void bilinear_accumulate_lanes(float* acc, const float* a, const float* b,
                                             const float* d, const float* e, float w1, float w2,
                                             float w3, float w4, int64_t n) {
  roi_bilinear_accumulate(acc, a, b, d, e, w1, w2, w3, w4, n);
}

enum class RoiIsa { kAvx512, kAvx2, kPortable };

RoiIsa roi_isa() {
  static const RoiIsa isa = [] {
    const char* env = std::getenv("FASTCONV_CPU_KERNELS");
    if (env != nullptr && std::strcmp(env, "generic") == 0) return RoiIsa::kPortable;
    const bool avx2_forced = env != nullptr && std::strcmp(env, "avx2") == 0;
    if (__builtin_cpu_supports("avx512f") && !avx2_forced) return RoiIsa::kAvx512;
    if (__builtin_cpu_supports("avx2")) return RoiIsa::kAvx2;
    return RoiIsa::kPortable;
  }();
  return isa;
}

template <typename F>
F pick(F avx512, F avx2, F portable) {
  switch (roi_isa()) {
    case RoiIsa::kAvx512:
      return avx512;
    case RoiIsa::kAvx2:
      return avx2;
    default:
      return portable;
  }
}

}  // namespace

// The exported float function NAME: IMPL<16> compiled for AVX-512 (without FMA contraction),
// IMPL<8> for AVX2 and IMPL<8> portable; the one for this process is picked when the library
// loads (a pointer set at static initialization, so a call costs one indirect jump, as an
// ifunc would).
#define FC_ROI_EXPORT(RET, NAME, IMPL, PARAMS, ARGS)                                            \
  namespace {                                                                                   \
  __attribute__((target("avx512f"), optimize("fp-contract=off"))) RET NAME##_avx512             \
      PARAMS {                                                                                  \
    return IMPL<16> ARGS;                                                                       \
  }                                                                                             \
  __attribute__((target("avx2"))) RET NAME##_avx2 PARAMS { return IMPL<8> ARGS; }               \
  RET NAME##_portable PARAMS { return IMPL<8> ARGS; }                                           \
  RET(*const NAME##_picked) PARAMS = pick(&NAME##_avx512, &NAME##_avx2, &NAME##_portable);      \
  }                                                                                             \
  RET NAME PARAMS { return NAME##_picked ARGS; }

FC_ROI_EXPORT(void, roi_bilinear_accumulate_f32, bilinear_accumulate_lanes,
              (float* acc, const float* a, const float* b, const float* d, const float* e,
               float w1, float w2, float w3, float w4, int64_t n),
              (acc, a, b, d, e, w1, w2, w3, w4, n))
FC_ROI_EXPORT(void, roi_samples_accumulate_f32, samples_accumulate_lanes,
              (float* acc, const float* base, const BilinearSample<float>* s, int64_t count,
               int64_t n),
              (acc, base, s, count, n))
FC_ROI_EXPORT(void, roi_corners_scatter_f32, corners_scatter_lanes,
              (float* base, const Corner<float>* t, int64_t count, const float* g, int64_t n),
              (base, t, count, g, n))
FC_ROI_EXPORT(void, roi_bin_max_f32, bin_max_lanes,
              (const float* v, int64_t W, int64_t C, int64_t h0, int64_t h1, int64_t w0,
               int64_t w1, float* dst, int32_t* dst_idx, int64_t stride, int64_t n),
              (v, W, C, h0, h1, w0, w1, dst, dst_idx, stride, n))
FC_ROI_EXPORT(int32_t, roi_add_in_band_f32, add_in_band_lanes,
              (float* band, int64_t pixel_stride, int32_t p0, int32_t p1, int32_t HW, int64_t w,
               const int32_t* a, const float* g),
              (band, pixel_stride, p0, p1, HW, w, a, g))

}  // namespace cpu
}  // namespace fastconv
