// See batch_norm_simd.h. Each loop body is a template over the element type T, the compute
// type A and the compile-time flags RELU / RES (residual given) / GRES (residual gradient
// written), so the vectorized loops carry no branches; the exported functions pick the
// instantiation. No fast-math: NaN must pass through the ReLU as in PyTorch.
#include "cpu/batch_norm_simd.h"

#include "common/batch_norm.h"

#include <algorithm>
#include <cstdint>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

constexpr int64_t kBlock = 512;  // values per streamed block (2 KiB of fp32 in L1)

// dst[0, n) = buf[0, n) with non-temporal stores where dst is 16-byte aligned (plain stores
// for the unaligned ends).
template <typename T>
FC_INLINE void stream_store(T* dst, const T* buf, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  for (; i < n && (reinterpret_cast<uintptr_t>(dst + i) & 15) != 0; ++i) dst[i] = buf[i];
  constexpr int64_t kPer = 16 / sizeof(T);
  for (; i + kPer <= n; i += kPer) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(buf + i)));
  }
#endif
  for (; i < n; ++i) dst[i] = buf[i];
}

// Orders the streamed stores before whatever follows (another thread reading the output).
FC_INLINE void store_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// out[i] = f(i) for i in [0, n): plain vector stores, or (stream) vector stores into an L1
// buffer that is then streamed out.
template <typename T, typename F>
FC_INLINE void emit(T* out, int64_t n, bool stream, F f) {
  if (!stream) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = f(i);
    return;
  }
  alignas(64) T buf[kBlock];
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t m = std::min(kBlock, n - i0);
#pragma omp simd
    for (int64_t k = 0; k < m; ++k) buf[k] = f(i0 + k);
    stream_store(out + i0, buf, m);
  }
}

// The run loops walk `planes` runs of n values, `stride` apart: one call per channel (or
// chunk) rather than per NCHW plane, so small planes (7x7, 4x4) pay no call per plane. The
// reducing ones take `channels` consecutive channels at once (channel j's runs n values after
// channel j - 1's: adjacent NCHW planes), walking plane row by plane row, so that small planes
// are read as `planes` long contiguous streams rather than planes * channels short ones; each
// channel's sums (per-channel arrays, accumulated in place) see the same loop as with
// channels == 1, hence the same bits whatever the blocking.
template <typename T, typename A>
FC_INLINE void run_sums(const T* x, int64_t planes, int64_t n, int64_t stride, int64_t channels,
                        const A* pivot, A* s1, A* s2) {
  for (int64_t o = 0; o < planes * stride; o += stride) {
    for (int64_t j = 0; j < channels; ++j) {
      const T* xj = x + o + j * n;
      const A p = pivot[j];
      A a = s1[j], b = s2[j];
#pragma omp simd reduction(+ : a, b)
      for (int64_t i = 0; i < n; ++i) {
        const A d = static_cast<A>(xj[i]) - p;
        a += d;
        b += d * d;
      }
      s1[j] = a;
      s2[j] = b;
    }
  }
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

// y = [relu](x * alpha + beta [+ res]) for the n values at offset o of one channel.
template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void apply_span(const T* x, const T* res, T* y, int64_t o, int64_t n, A alpha, A beta,
                          bool stream) {
  emit(y + o, n, stream, [&](int64_t i) {
    A v = pre_activation<RES>(static_cast<A>(x[o + i]), alpha, beta, res, o + i);
    if constexpr (RELU) v = bn_relu(v);
    return static_cast<T>(v);
  });
}

template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void run_apply(const T* x, const T* res, T* y, int64_t planes, int64_t n,
                         int64_t stride, A alpha, A beta, bool stream) {
  for (int64_t o = 0; o < planes * stride; o += stride) {
    apply_span<RELU, RES>(x, res, y, o, n, alpha, beta, stream);
  }
  if (stream) store_fence();
}

// The planes_* loops walk `planes` consecutive NCHW planes of n values, plane p of channel
// (c0 + p) % c: an elementwise pass in memory order, one call per task however small the planes.
template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void planes_apply(const T* x, const T* res, T* y, int64_t planes, int64_t c0,
                            int64_t c, int64_t n, const A* alpha, const A* beta, bool stream) {
  int64_t ch = c0;
  for (int64_t o = 0; o < planes * n; o += n) {
    apply_span<RELU, RES>(x, res, y, o, n, alpha[ch], beta[ch], stream);
    if (++ch == c) ch = 0;
  }
  if (stream) store_fence();
}

template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void rows_apply(const T* x, const T* res, T* y, int64_t rows, int64_t c, const A* alpha,
                          const A* beta, bool stream) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * c;
    emit(y + o, c, stream, [&](int64_t j) {
      A v = pre_activation<RES>(static_cast<A>(x[o + j]), alpha[j], beta[j], res, o + j);
      if constexpr (RELU) v = bn_relu(v);
      return static_cast<T>(v);
    });
  }
  if (stream) store_fence();
}

template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void run_backward_sums(const T* dy, const T* x, const T* res, int64_t planes, int64_t n,
                                 int64_t stride, int64_t channels, const A* alpha, const A* beta,
                                 const A* mean, A* s_dy, A* s_dyx) {
  for (int64_t o = 0; o < planes * stride; o += stride) {
    for (int64_t j = 0; j < channels; ++j) {
      const int64_t at = o + j * n;
      const A al = alpha[j], be = beta[j], mu = mean[j];
      A a = s_dy[j], b = s_dyx[j];
#pragma omp simd reduction(+ : a, b)
      for (int64_t i = at; i < at + n; ++i) {
        const A xv = static_cast<A>(x[i]);
        const A g = bn_masked_grad(static_cast<A>(dy[i]), pre_activation<RES>(xv, al, be, res, i),
                                   RELU);
        a += g;
        b += g * (xv - mu);
      }
      s_dy[j] = a;
      s_dyx[j] = b;
    }
  }
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

// grad_input = g * k_g + x * k_x + k_0 (and grad_residual = g) for the n values at offset o:
// a run of one channel (ScalarCoef) or a row of interleaved channels (ChannelCoef).
template <bool RELU, bool RES, bool GRES, typename T, typename A, typename Coef>
FC_INLINE void backward_apply_span(const T* dy, const T* x, const T* res, T* dx, T* dres,
                                   int64_t o, int64_t n, bool stream, Coef k) {
  auto masked = [&](int64_t i) {
    const A xv = static_cast<A>(x[o + i]);
    return bn_masked_grad(static_cast<A>(dy[o + i]),
                          pre_activation<RES>(xv, k.alpha(i), k.beta(i), res, o + i), RELU);
  };
  emit(dx + o, n, stream, [&](int64_t i) {
    return static_cast<T>(masked(i) * k.k_g(i) + static_cast<A>(x[o + i]) * k.k_x(i) + k.k_0(i));
  });
  // a second loop over the same (cached) values: the rare residual-gradient case keeps the
  // main loop to one output
  if constexpr (GRES) emit(dres + o, n, stream, [&](int64_t i) { return static_cast<T>(masked(i)); });
}

template <typename A>
struct ScalarCoef {  // one channel: the same coefficients for every value
  A a, b, g, kx, k0;
  A alpha(int64_t) const { return a; }
  A beta(int64_t) const { return b; }
  A k_g(int64_t) const { return g; }
  A k_x(int64_t) const { return kx; }
  A k_0(int64_t) const { return k0; }
};

template <typename A>
struct ChannelCoef {  // a row of interleaved channels: coefficient j for value j
  const A *a, *b, *g, *kx, *k0;
  A alpha(int64_t j) const { return a[j]; }
  A beta(int64_t j) const { return b[j]; }
  A k_g(int64_t j) const { return g[j]; }
  A k_x(int64_t j) const { return kx[j]; }
  A k_0(int64_t j) const { return k0[j]; }
};

template <bool RELU, bool RES, bool GRES, typename T, typename A>
FC_INLINE void run_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,
                                  int64_t planes, int64_t n, int64_t stride, A alpha, A beta,
                                  A k_g, A k_x, A k_0, bool stream) {
  const ScalarCoef<A> k{alpha, beta, k_g, k_x, k_0};
  for (int64_t o = 0; o < planes * stride; o += stride) {
    backward_apply_span<RELU, RES, GRES, T, A>(dy, x, res, dx, dres, o, n, stream, k);
  }
  if (stream) store_fence();
}

template <bool RELU, bool RES, bool GRES, typename T, typename A>
FC_INLINE void planes_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,
                                     int64_t planes, int64_t c0, int64_t c, int64_t n,
                                     const A* alpha, const A* beta, const A* k_g, const A* k_x,
                                     const A* k_0, bool stream) {
  int64_t ch = c0;
  for (int64_t o = 0; o < planes * n; o += n) {
    const ScalarCoef<A> k{alpha[ch], beta[ch], k_g[ch], k_x[ch], k_0[ch]};
    backward_apply_span<RELU, RES, GRES, T, A>(dy, x, res, dx, dres, o, n, stream, k);
    if (++ch == c) ch = 0;
  }
  if (stream) store_fence();
}

template <bool RELU, bool RES, bool GRES, typename T, typename A>
FC_INLINE void rows_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,
                                   int64_t rows, int64_t c, const A* alpha, const A* beta,
                                   const A* k_g, const A* k_x, const A* k_0, bool stream) {
  const ChannelCoef<A> k{alpha, beta, k_g, k_x, k_0};
  for (int64_t r = 0; r < rows; ++r) {
    backward_apply_span<RELU, RES, GRES, T, A>(dy, x, res, dx, dres, r * c, c, stream, k);
  }
  if (stream) store_fence();
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
  ATTR void bn_run_sums(const T* x, int64_t planes, int64_t n, int64_t stride,                 \
                        int64_t channels, const A* pivot, A* s1, A* s2) {                       \
    run_sums(x, planes, n, stride, channels, pivot, s1, s2);                                    \
  }                                                                                             \
  ATTR void bn_rows_sums(const T* x, int64_t rows, int64_t c, const A* pivot, A* s1, A* s2) {   \
    rows_sums(x, rows, c, pivot, s1, s2);                                                       \
  }                                                                                             \
  ATTR void bn_run_apply(const T* x, const T* res, T* y, int64_t planes, int64_t n,             \
                         int64_t stride, A alpha, A beta, bool relu, bool stream) {             \
    FC_BN_FLAGS2(run_apply, relu, res != nullptr, x, res, y, planes, n, stride, alpha, beta,    \
                 stream);                                                                       \
  }                                                                                             \
  ATTR void bn_planes_apply(const T* x, const T* res, T* y, int64_t planes, int64_t c0,        \
                            int64_t c, int64_t n, const A* alpha, const A* beta, bool relu,      \
                            bool stream) {                                                      \
    FC_BN_FLAGS2(planes_apply, relu, res != nullptr, x, res, y, planes, c0, c, n, alpha, beta,  \
                 stream);                                                                       \
  }                                                                                             \
  ATTR void bn_rows_apply(const T* x, const T* res, T* y, int64_t rows, int64_t c,              \
                          const A* alpha, const A* beta, bool relu, bool stream) {              \
    FC_BN_FLAGS2(rows_apply, relu, res != nullptr, x, res, y, rows, c, alpha, beta, stream);    \
  }                                                                                             \
  ATTR void bn_run_backward_sums(const T* dy, const T* x, const T* res, int64_t planes,         \
                                 int64_t n, int64_t stride, int64_t channels, const A* alpha,   \
                                 const A* beta, const A* mean, bool relu, A* s_dy, A* s_dyx) {  \
    FC_BN_FLAGS2(run_backward_sums, relu, res != nullptr, dy, x, res, planes, n, stride,        \
                 channels, alpha, beta, mean, s_dy, s_dyx);                                     \
  }                                                                                             \
  ATTR void bn_rows_backward_sums(const T* dy, const T* x, const T* res, int64_t rows,           \
                                  int64_t c, const A* alpha, const A* beta, const A* mean,      \
                                  bool relu, A* s_dy, A* s_dyx) {                               \
    FC_BN_FLAGS2(rows_backward_sums, relu, res != nullptr, dy, x, res, rows, c, alpha, beta,    \
                 mean, s_dy, s_dyx);                                                            \
  }                                                                                             \
  ATTR void bn_run_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,         \
                                  int64_t planes, int64_t n, int64_t stride, A alpha, A beta,    \
                                  A k_g, A k_x, A k_0, bool relu, bool stream) {                 \
    FC_BN_FLAGS3(run_backward_apply, relu, res != nullptr, dres != nullptr, dy, x, res, dx,      \
                 dres, planes, n, stride, alpha, beta, k_g, k_x, k_0, stream);                  \
  }                                                                                             \
  ATTR void bn_planes_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,     \
                                     int64_t planes, int64_t c0, int64_t c, int64_t n,          \
                                     const A* alpha, const A* beta, const A* k_g, const A* k_x, \
                                     const A* k_0, bool relu, bool stream) {                    \
    FC_BN_FLAGS3(planes_backward_apply, relu, res != nullptr, dres != nullptr, dy, x, res, dx,   \
                 dres, planes, c0, c, n, alpha, beta, k_g, k_x, k_0, stream);                   \
  }                                                                                             \
  ATTR void bn_rows_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,        \
                                   int64_t rows, int64_t c, const A* alpha, const A* beta,       \
                                   const A* k_g, const A* k_x, const A* k_0, bool relu,          \
                                   bool stream) {                                               \
    FC_BN_FLAGS3(rows_backward_apply, relu, res != nullptr, dres != nullptr, dy, x, res, dx,     \
                 dres, rows, c, alpha, beta, k_g, k_x, k_0, stream);                            \
  }

FC_BN_DEFINE(FC_CPU_CLONES, float, float)
FC_BN_DEFINE(FC_CPU_CLONES, double, double)
FC_BN_DEFINE(, c10::Half, float)
FC_BN_DEFINE(, c10::BFloat16, float)

}  // namespace cpu
}  // namespace fastconv
