// Hot loops of the CPU BatchNorm kernels over raw arrays (formulas: common/batch_norm.h).
// float and double versions are compiled three times through GCC's target_clones (AVX-512,
// AVX2, portable) and the variant for the running CPU is picked at load time; reductions are
// `omp simd` reductions (vector lanes summed in a fixed order, so results are deterministic
// for one binary on one CPU). Half and bfloat16 use the same bodies with float arithmetic.
//
// Two shapes of work, matching the two memory layouts (cpu/batch_norm.cpp):
//   run_*    `planes` runs of n contiguous values of a single channel, `stride` values apart
//            (NCHW planes of one channel), with scalar per-channel coefficients (the sums: of
//            `channels` consecutive channels, per-channel arrays);
//   planes_* `planes` consecutive NCHW planes of n values, plane p of channel (c0 + p) % c,
//            with per-channel coefficient arrays (an elementwise pass in memory order);
//   rows_*   `rows` rows of C interleaved channels (channels_last, (N, C) input), with
//            per-channel coefficient arrays, vectorized over channels.
// `residual` and the residual gradient `grad_residual` may be null (no residual). The writing
// loops take `stream`: write the outputs with non-temporal stores (for outputs larger than the
// cache: no read of the destination lines before the write, no eviction of the inputs that the
// next pass reads again); the values are the same either way.
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace fastconv {
namespace cpu {

#define FC_BN_DECLARE(T, A)                                                                     \
  /* s1[j] += sum(x - pivot[j]), s2[j] += sum((x - pivot[j])^2) over channel j's runs */       \
  void bn_run_sums(const T* x, int64_t planes, int64_t n, int64_t stride, int64_t channels,     \
                   const A* pivot, A* s1, A* s2);                                               \
  void bn_rows_sums(const T* x, int64_t rows, int64_t c, const A* pivot, A* s1, A* s2);         \
  /* y = [relu](x * alpha + beta [+ residual]) */                                               \
  void bn_run_apply(const T* x, const T* residual, T* y, int64_t planes, int64_t n,             \
                    int64_t stride, A alpha, A beta, bool relu, bool stream);                   \
  void bn_planes_apply(const T* x, const T* residual, T* y, int64_t planes, int64_t c0,      \
                       int64_t c, int64_t n, const A* alpha, const A* beta, bool relu,          \
                       bool stream);                                                            \
  void bn_rows_apply(const T* x, const T* residual, T* y, int64_t rows, int64_t c,              \
                     const A* alpha, const A* beta, bool relu, bool stream);                    \
  /* g = masked dy; s_dy[j] += sum g, s_dyx[j] += sum g * (x - mean[j]) (run: channel j's) */  \
  void bn_run_backward_sums(const T* dy, const T* x, const T* residual, int64_t planes,         \
                            int64_t n, int64_t stride, int64_t channels, const A* alpha,        \
                            const A* beta, const A* mean, bool relu, A* s_dy, A* s_dyx);        \
  void bn_rows_backward_sums(const T* dy, const T* x, const T* residual, int64_t rows,           \
                             int64_t c, const A* alpha, const A* beta, const A* mean, bool relu, \
                             A* s_dy, A* s_dyx);                                                \
  /* dx = g * k_g + x * k_x + k_0, grad_residual = g */                                         \
  void bn_run_backward_apply(const T* dy, const T* x, const T* residual, T* dx,                  \
                             T* grad_residual, int64_t planes, int64_t n, int64_t stride,        \
                             A alpha, A beta, A k_g, A k_x, A k_0, bool relu, bool stream);      \
  void bn_planes_backward_apply(const T* dy, const T* x, const T* residual, T* dx,            \
                                T* grad_residual, int64_t planes, int64_t c0, int64_t c,        \
                                int64_t n, const A* alpha, const A* beta, const A* k_g,         \
                                const A* k_x, const A* k_0, bool relu, bool stream);            \
  void bn_rows_backward_apply(const T* dy, const T* x, const T* residual, T* dx,                 \
                              T* grad_residual, int64_t rows, int64_t c, const A* alpha,         \
                              const A* beta, const A* k_g, const A* k_x, const A* k_0,           \
                              bool relu, bool stream);

FC_BN_DECLARE(float, float)
FC_BN_DECLARE(double, double)
FC_BN_DECLARE(c10::Half, float)
FC_BN_DECLARE(c10::BFloat16, float)
#undef FC_BN_DECLARE

}  // namespace cpu
}  // namespace fastconv
