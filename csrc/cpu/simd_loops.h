// Hot inner loops of the CPU kernels, as plain functions over raw arrays. Each is compiled
// three times through GCC's target_clones (AVX-512, AVX2, portable) and picked at load time
// for the running CPU, so one binary vectorizes as wide as the machine allows.
#pragma once
#include <cstdint>

namespace fastconv {
namespace cpu {

// One kernel tap of max-pool over a run of n outputs:
//   candidate i is v[i] with index idx0 + i * idx_step;
//   it replaces (best[i], best_idx[i]) under PyTorch's rule (greater, or NaN).
void pool_tap_f32(const float* v, int64_t n, int32_t idx0, int32_t idx_step, float* best,
                  int32_t* best_idx);
void pool_tap_f64(const double* v, int64_t n, int64_t idx0, int64_t idx_step, double* best,
                  int64_t* best_idx);

// Widening store of indices: dst[i] = src[i].
void widen_i32_i64(const int32_t* src, int64_t n, int64_t* dst);

}  // namespace cpu
}  // namespace fastconv
