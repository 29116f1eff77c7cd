// AVX-512 kernels of the float max-pool forward: one NCHW output row, or one channels_last
// output pixel (16 channels at a time, same idea).
//
// 16 outputs live in registers (values and int32 plane indices) while every tap of every
// window row is applied, so nothing goes back to memory between taps; row ends and padding are
// handled with lane masks instead of scalar loops (rows of 7-56 outputs, common in CNNs, are
// mostly "remainder" for a 16-wide loop). Loads: stride 1 a masked load, stride 2 two masked
// loads de-interleaved with one permute, other strides a masked gather. Masked-off lanes are
// never read, so a window overhanging the row reads nothing outside the input.
// Semantics are those of common/pool.h: a greater value or a NaN replaces the maximum.
#include <immintrin.h>

#include <limits>

#include "cpu/max_pool2d_simd.h"

namespace fastconv {
namespace cpu {

__attribute__((target("avx512f,bmi2"))) void pool_output_row_avx512(
    const float* plane, const PoolRow& g, int64_t row_start, int64_t row_end, int64_t row_step,
    const int32_t* first_col, float* out, int64_t* ind) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i evens =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const __m512i width = _mm512_set1_epi32(static_cast<int32_t>(g.W));
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t ow0 = 0; ow0 < g.Q; ow0 += 16) {
    const int64_t n = g.Q - ow0 < 16 ? g.Q - ow0 : 16;
    const __mmask16 active = static_cast<__mmask16>((1u << n) - 1u);
    // Column of output lane i for tap offset 0: (ow0 + i) * sw.
    const __m512i col0 = _mm512_mullo_epi32(_mm512_add_epi32(_mm512_set1_epi32(ow0), lane),
                                            _mm512_set1_epi32(static_cast<int32_t>(g.sw)));
    __m512 best = neg_inf;
    __m512i best_idx = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(row_start * g.W)),
                                        _mm512_maskz_loadu_epi32(active, first_col + ow0));
    for (int64_t ih = row_start; ih < row_end; ih += row_step) {
      const float* row = plane + ih * g.W;
      const __m512i row_index = _mm512_set1_epi32(static_cast<int32_t>(ih * g.W));
      for (int64_t k = 0; k < g.kw; ++k) {
        const int64_t off = k * g.dw - g.pw;
        const __m512i col = _mm512_add_epi32(col0, _mm512_set1_epi32(static_cast<int32_t>(off)));
        const __mmask16 valid = _mm512_mask_cmpge_epi32_mask(active, col, zero) &
                                _mm512_mask_cmplt_epi32_mask(active, col, width);
        if (!valid) continue;
        const float* src = row + ow0 * g.sw + off;  // lane 0's element; masked lanes unread
        __m512 x;
        if (g.sw == 1) {
          x = _mm512_mask_loadu_ps(neg_inf, valid, src);
        } else if (g.sw == 2) {
          // Lane i reads element 2i of a 32-element span: spread the lane mask to even bits.
          const uint32_t span = _pdep_u32(valid, 0x55555555u);
          const __m512 lo = _mm512_maskz_loadu_ps(static_cast<__mmask16>(span), src);
          const __m512 hi = _mm512_maskz_loadu_ps(static_cast<__mmask16>(span >> 16), src + 16);
          x = _mm512_permutex2var_ps(lo, evens, hi);
        } else {
          x = _mm512_mask_i32gather_ps(neg_inf, valid, col, row, 4);
        }
        const __mmask16 take = _mm512_mask_cmp_ps_mask(valid, x, best, _CMP_GT_OQ) |
                               _mm512_mask_cmp_ps_mask(valid, x, x, _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, take, x);
        best_idx = _mm512_mask_mov_epi32(best_idx, take, _mm512_add_epi32(row_index, col));
      }
    }
    _mm512_mask_storeu_ps(out + ow0, active, best);
    _mm512_mask_storeu_epi64(ind + ow0, static_cast<__mmask8>(active),
                             _mm512_cvtepi32_epi64(_mm512_castsi512_si256(best_idx)));
    _mm512_mask_storeu_epi64(ind + ow0 + 8, static_cast<__mmask8>(active >> 8),
                             _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(best_idx, 1)));
  }
}

__attribute__((target("avx512f"))) void pool_output_pixel_avx512(
    const float* image, int64_t W, int64_t C, int64_t row_start, int64_t row_end,
    int64_t row_step, int64_t col_start, int64_t col_end, int64_t col_step, float* out,
    int64_t* ind) {
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t c0 = 0; c0 < C; c0 += 16) {
    const int64_t n = C - c0 < 16 ? C - c0 : 16;
    const __mmask16 active = static_cast<__mmask16>((1u << n) - 1u);
    __m512 best = neg_inf;
    __m512i best_idx = _mm512_set1_epi32(static_cast<int32_t>(row_start * W + col_start));
    for (int64_t ih = row_start; ih < row_end; ih += row_step) {
      for (int64_t iw = col_start; iw < col_end; iw += col_step) {
        const __m512 x = _mm512_mask_loadu_ps(neg_inf, active, image + (ih * W + iw) * C + c0);
        const __mmask16 take = _mm512_mask_cmp_ps_mask(active, x, best, _CMP_GT_OQ) |
                               _mm512_mask_cmp_ps_mask(active, x, x, _CMP_UNORD_Q);
        best = _mm512_mask_mov_ps(best, take, x);
        best_idx = _mm512_mask_mov_epi32(best_idx, take,
                                         _mm512_set1_epi32(static_cast<int32_t>(ih * W + iw)));
      }
    }
    _mm512_mask_storeu_ps(out + c0, active, best);
    _mm512_mask_storeu_epi64(ind + c0, static_cast<__mmask8>(active),
                             _mm512_cvtepi32_epi64(_mm512_castsi512_si256(best_idx)));
    _mm512_mask_storeu_epi64(ind + c0 + 8, static_cast<__mmask8>(active >> 8),
                             _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(best_idx, 1)));
  }
}

bool has_avx512() {
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("bmi2");
  return supported;
}

}  // namespace cpu
}  // namespace fastconv
