// See max_pool2d_simd.h. Loops are branch-free so GCC vectorizes them at -O3; the comparison
// is common/pool.h's pool_takes written out (no fast-math: NaN must survive). Strides 1 and 2
// (nearly every real pooling layer) get loops with a compile-time stride, which GCC turns
// into contiguous or de-interleaving vector loads; other strides use the generic loop.
#include "cpu/max_pool2d_simd.h"

#define FC_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

// Update (best, best_idx)[ow] for ow in [lo, hi) from src[ow * STRIDE + off].
#define FC_POOL_TAP_LOOP(IDX_T, STRIDE)                                        \
  for (int64_t ow = lo; ow < hi; ++ow) {                                       \
    const auto x = row[ow * (STRIDE) + off];                                   \
    const auto b = best[ow];                                                   \
    const bool take = (x > b) | (x != x);                                      \
    best[ow] = take ? x : b;                                                   \
    best_idx[ow] = take ? base + static_cast<IDX_T>(ow) * static_cast<IDX_T>(STRIDE) : best_idx[ow]; \
  }

// The body shared by the float and double row functions.
#define FC_POOL_ROW_BODY(IDX_T)                                                \
  for (int64_t k = 0; k < g.kw; ++k) {                                         \
    const int64_t off = k * g.dw - g.pw; /* input column of output 0's tap */  \
    /* outputs whose tap lies in [0, W): lo = ceil(-off / sw), hi = floor((W-1-off)/sw)+1 */ \
    int64_t lo = off >= 0 ? 0 : (-off + g.sw - 1) / g.sw;                      \
    int64_t hi = (g.W - 1 - off) < 0 ? 0 : (g.W - 1 - off) / g.sw + 1;         \
    if (hi > g.Q) hi = g.Q;                                                    \
    const IDX_T base = static_cast<IDX_T>(row_index + off);                    \
    if (g.sw == 1) {                                                           \
      FC_POOL_TAP_LOOP(IDX_T, 1)                                               \
    } else if (g.sw == 2) {                                                    \
      FC_POOL_TAP_LOOP(IDX_T, 2)                                               \
    } else {                                                                   \
      const int64_t sw = g.sw;                                                 \
      FC_POOL_TAP_LOOP(IDX_T, sw)                                              \
    }                                                                          \
  }

#define FC_POOL_TAP_BODY                                                       \
  for (int64_t c = 0; c < n; ++c) {                                            \
    const auto x = v[c];                                                       \
    const auto b = best[c];                                                    \
    const bool take = (x > b) | (x != x);                                      \
    best[c] = take ? x : b;                                                    \
    best_idx[c] = take ? index : best_idx[c];                                  \
  }

namespace fastconv {
namespace cpu {

FC_CPU_CLONES void pool_row_f32(const float* row, const PoolRow& g, int32_t row_index,
                                float* best, int32_t* best_idx) {
  FC_POOL_ROW_BODY(int32_t)
}

FC_CPU_CLONES void pool_row_f64(const double* row, const PoolRow& g, int64_t row_index,
                                double* best, int64_t* best_idx) {
  FC_POOL_ROW_BODY(int64_t)
}

FC_CPU_CLONES void pool_tap_f32(const float* v, int64_t n, int32_t index, float* best,
                                int32_t* best_idx) {
  FC_POOL_TAP_BODY
}

FC_CPU_CLONES void pool_tap_f64(const double* v, int64_t n, int64_t index, double* best,
                                int64_t* best_idx) {
  FC_POOL_TAP_BODY
}

FC_CPU_CLONES void widen_i32_i64(const int32_t* src, int64_t n, int64_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

}  // namespace cpu
}  // namespace fastconv
