// See batch_norm_simd.h. Each loop body is a template over the element type T, the compute
// type A and the compile-time flags RELU / RES (residual given) / GRES (residual gradient
// written), so the vectorized loops carry no branches; the exported functions pick the
// instantiation. No fast-math: NaN must pass through the ReLU as in PyTorch.
#include "cpu/batch_norm_simd.h"

#include "common/batch_norm.h"

#define FC_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define FC_INLINE inline __attribute__((always_inline))

namespace fastconv {
namespace cpu {
namespace {

// The pre-activation x * alpha + beta [+ residual], one expression for forward and backward
// so both see the same ReLU mask.
template <bool RES, typename T, typename A>
FC_INLINE A pre_activation(A x, A alpha, A beta, const T* residual, int64_t i) {
  A v = x * alpha + beta;
  if constexpr (RES) v += static_cast<A>(residual[i]);
  return v;
}

// The run loops walk `planes` runs of n values, `stride` apart: one call per channel (or
// chunk) rather than per NCHW plane, so small planes (7x7, 4x4) pay no call per plane.
template <typename T, typename A>
FC_INLINE void run_sums(const T* x, int64_t planes, int64_t n, int64_t stride, A pivot, A* s1,
                        A* s2) {
  A a = 0, b = 0;
  for (int64_t o = 0; o < planes * stride; o += stride) {
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = o; i < o + n; ++i) {
      const A d = static_cast<A>(x[i]) - pivot;
      a += d;
      b += d * d;
    }
  }
  *s1 += a;
  *s2 += b;
}

template <typename T, typename A>
FC_INLINE void rows_sums(const T* x, int64_t rows, int64_t c, const A* pivot, A* s1, A* s2) {
  int64_t r = 0;
  for (; r + 2 <= rows; r += 2) {  // two rows per trip: half the accumulator traffic
    const T* x0 = x + r * c;
    const T* x1 = x0 + c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      const A d0 = static_cast<A>(x0[j]) - pivot[j];
      const A d1 = static_cast<A>(x1[j]) - pivot[j];
      s1[j] += d0 + d1;
      s2[j] += d0 * d0 + d1 * d1;
    }
  }
  for (; r < rows; ++r) {
    const T* x0 = x + r * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      const A d0 = static_cast<A>(x0[j]) - pivot[j];
      s1[j] += d0;
      s2[j] += d0 * d0;
    }
  }
}

template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void run_apply(const T* x, const T* res, T* y, int64_t planes, int64_t n,
                         int64_t stride, A alpha, A beta) {
  for (int64_t o = 0; o < planes * stride; o += stride) {
#pragma omp simd
    for (int64_t i = o; i < o + n; ++i) {
      A v = pre_activation<RES>(static_cast<A>(x[i]), alpha, beta, res, i);
      if constexpr (RELU) v = bn_relu(v);
      y[i] = static_cast<T>(v);
    }
  }
}

template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void rows_apply(const T* x, const T* res, T* y, int64_t rows, int64_t c, const A* alpha,
                          const A* beta) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      A v = pre_activation<RES>(static_cast<A>(x[o + j]), alpha[j], beta[j], res, o + j);
      if constexpr (RELU) v = bn_relu(v);
      y[o + j] = static_cast<T>(v);
    }
  }
}

template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void run_backward_sums(const T* dy, const T* x, const T* res, int64_t planes, int64_t n,
                                 int64_t stride, A alpha, A beta, A mean, A* s_dy, A* s_dyx) {
  A a = 0, b = 0;
  for (int64_t o = 0; o < planes * stride; o += stride) {
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = o; i < o + n; ++i) {
      const A xv = static_cast<A>(x[i]);
      const A g = bn_masked_grad(static_cast<A>(dy[i]),
                                 pre_activation<RES>(xv, alpha, beta, res, i), RELU);
      a += g;
      b += g * (xv - mean);
    }
  }
  *s_dy += a;
  *s_dyx += b;
}

template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void rows_backward_sums(const T* dy, const T* x, const T* res, int64_t rows, int64_t c,
                                  const A* alpha, const A* beta, const A* mean, A* s_dy,
                                  A* s_dyx) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      const A xv = static_cast<A>(x[o + j]);
      const A g = bn_masked_grad(static_cast<A>(dy[o + j]),
                                 pre_activation<RES>(xv, alpha[j], beta[j], res, o + j), RELU);
      s_dy[j] += g;
      s_dyx[j] += g * (xv - mean[j]);
    }
  }
}

template <bool RELU, bool RES, bool GRES, typename T, typename A>
FC_INLINE void run_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,
                                  int64_t planes, int64_t n, int64_t stride, A alpha, A beta,
                                  A k_g, A k_x, A k_0) {
  for (int64_t o = 0; o < planes * stride; o += stride) {
#pragma omp simd
    for (int64_t i = o; i < o + n; ++i) {
      const A xv = static_cast<A>(x[i]);
      const A g = bn_masked_grad(static_cast<A>(dy[i]),
                                 pre_activation<RES>(xv, alpha, beta, res, i), RELU);
      dx[i] = static_cast<T>(g * k_g + xv * k_x + k_0);
      if constexpr (GRES) dres[i] = static_cast<T>(g);
    }
  }
}

template <bool RELU, bool RES, bool GRES, typename T, typename A>
FC_INLINE void rows_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,
                                   int64_t rows, int64_t c, const A* alpha, const A* beta,
                                   const A* k_g, const A* k_x, const A* k_0) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) {
      const A xv = static_cast<A>(x[o + j]);
      const A g = bn_masked_grad(static_cast<A>(dy[o + j]),
                                 pre_activation<RES>(xv, alpha[j], beta[j], res, o + j), RELU);
      dx[o + j] = static_cast<T>(g * k_g[j] + xv * k_x[j] + k_0[j]);
      if constexpr (GRES) dres[o + j] = static_cast<T>(g);
    }
  }
}

}  // namespace

// Picks the <RELU, RES> instantiation of BODY(args...).
#define FC_BN_FLAGS2(BODY, relu, res, ...)                       \
  do {                                                           \
    if (relu) {                                                  \
      if (res) BODY<true, true>(__VA_ARGS__);                    \
      else BODY<true, false>(__VA_ARGS__);                       \
    } else {                                                     \
      if (res) BODY<false, true>(__VA_ARGS__);                   \
      else BODY<false, false>(__VA_ARGS__);                      \
    }                                                            \
  } while (0)
// <RELU, RES, GRES>; a residual gradient is only written with a residual.
#define FC_BN_FLAGS3(BODY, relu, res, gres, ...)                 \
  do {                                                           \
    if (gres) {                                                  \
      if (relu) BODY<true, true, true>(__VA_ARGS__);             \
      else BODY<false, true, true>(__VA_ARGS__);                 \
    } else if (relu) {                                           \
      if (res) BODY<true, true, false>(__VA_ARGS__);             \
      else BODY<true, false, false>(__VA_ARGS__);                \
    } else {                                                     \
      if (res) BODY<false, true, false>(__VA_ARGS__);            \
      else BODY<false, false, false>(__VA_ARGS__);               \
    }                                                            \
  } while (0)

#define FC_BN_DEFINE(ATTR, T, A)                                                                \
  ATTR void bn_run_sums(const T* x, int64_t planes, int64_t n, int64_t stride, A pivot, A* s1,  \
                        A* s2) {                                                                \
    run_sums(x, planes, n, stride, pivot, s1, s2);                                              \
  }                                                                                             \
  ATTR void bn_rows_sums(const T* x, int64_t rows, int64_t c, const A* pivot, A* s1, A* s2) {   \
    rows_sums(x, rows, c, pivot, s1, s2);                                                       \
  }                                                                                             \
  ATTR void bn_run_apply(const T* x, const T* res, T* y, int64_t planes, int64_t n,             \
                         int64_t stride, A alpha, A beta, bool relu) {                          \
    FC_BN_FLAGS2(run_apply, relu, res != nullptr, x, res, y, planes, n, stride, alpha, beta);   \
  }                                                                                             \
  ATTR void bn_rows_apply(const T* x, const T* res, T* y, int64_t rows, int64_t c,              \
                          const A* alpha, const A* beta, bool relu) {                           \
    FC_BN_FLAGS2(rows_apply, relu, res != nullptr, x, res, y, rows, c, alpha, beta);            \
  }                                                                                             \
  ATTR void bn_run_backward_sums(const T* dy, const T* x, const T* res, int64_t planes,         \
                                 int64_t n, int64_t stride, A alpha, A beta, A mean, bool relu, \
                                 A* s_dy, A* s_dyx) {                                           \
    FC_BN_FLAGS2(run_backward_sums, relu, res != nullptr, dy, x, res, planes, n, stride, alpha, \
                 beta, mean, s_dy, s_dyx);                                                      \
  }                                                                                             \
  ATTR void bn_rows_backward_sums(const T* dy, const T* x, const T* res, int64_t rows,           \
                                  int64_t c, const A* alpha, const A* beta, const A* mean,      \
                                  bool relu, A* s_dy, A* s_dyx) {                               \
    FC_BN_FLAGS2(rows_backward_sums, relu, res != nullptr, dy, x, res, rows, c, alpha, beta,    \
                 mean, s_dy, s_dyx);                                                            \
  }                                                                                             \
  ATTR void bn_run_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,         \
                                  int64_t planes, int64_t n, int64_t stride, A alpha, A beta,    \
                                  A k_g, A k_x, A k_0, bool relu) {                              \
    FC_BN_FLAGS3(run_backward_apply, relu, res != nullptr, dres != nullptr, dy, x, res, dx,      \
                 dres, planes, n, stride, alpha, beta, k_g, k_x, k_0);                          \
  }                                                                                             \
  ATTR void bn_rows_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,        \
                                   int64_t rows, int64_t c, const A* alpha, const A* beta,       \
                                   const A* k_g, const A* k_x, const A* k_0, bool relu) {        \
    FC_BN_FLAGS3(rows_backward_apply, relu, res != nullptr, dres != nullptr, dy, x, res, dx,     \
                 dres, rows, c, alpha, beta, k_g, k_x, k_0);                                    \
  }

FC_BN_DEFINE(FC_CPU_CLONES, float, float)
FC_BN_DEFINE(FC_CPU_CLONES, double, double)
FC_BN_DEFINE(, c10::Half, float)
FC_BN_DEFINE(, c10::BFloat16, float)

}  // namespace cpu
}  // namespace fastconv
