// See simd_loops.h. The loops are written branch-free so GCC vectorizes them (-O3); the
// comparisons are the same as common/pool.h's pool_takes (no fast-math: NaN must survive).
#include "cpu/simd_loops.h"

#define FC_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace fastconv {
namespace cpu {

FC_CPU_CLONES void pool_tap_f32(const float* v, int64_t n, int32_t idx0, int32_t idx_step,
                                float* best, int32_t* best_idx) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = v[i];
    const float b = best[i];
    const bool take = (x > b) | (x != x);
    best[i] = take ? x : b;
    best_idx[i] = take ? idx0 + static_cast<int32_t>(i) * idx_step : best_idx[i];
  }
}

FC_CPU_CLONES void pool_tap_f64(const double* v, int64_t n, int64_t idx0, int64_t idx_step,
                                double* best, int64_t* best_idx) {
  for (int64_t i = 0; i < n; ++i) {
    const double x = v[i];
    const double b = best[i];
    const bool take = (x > b) | (x != x);
    best[i] = take ? x : b;
    best_idx[i] = take ? idx0 + i * idx_step : best_idx[i];
  }
}

FC_CPU_CLONES void widen_i32_i64(const int32_t* src, int64_t n, int64_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

}  // namespace cpu
}  // namespace fastconv
