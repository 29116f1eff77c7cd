// Helpers shared by the CPU BatchNorm vector loops (cpu/batch_norm_simd.cpp: NCHW runs and
// planes; cpu/batch_norm_simd_rows.cpp: channels_last rows): the pre-activation and masked
// gradient expressions, streamed stores, 32-byte vector locals and the flag dispatch. Only
// for those two files: everything is inline, in namespace fastconv::cpu::bn_simd.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/batch_norm.h"

// The vector locals (VecA) live inside always-inlined helpers, never across a call: the note
// that passing them by value changes the ABI without AVX does not apply (the portable clone).
#pragma GCC diagnostic ignored "-Wpsabi"  // in the two .cpp files that include this

#define FC_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define FC_INLINE inline __attribute__((always_inline))

namespace fastconv {
namespace cpu {
namespace bn_simd {

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

// 32-byte GCC vectors of the compute type (one AVX2 register): the reductions below keep their
// sums, and the tiles their coefficients, in locals of this type, which the compiler keeps in
// registers (arrays indexed in loops it kept in memory, with a store-to-load chain per step;
// 64-byte vectors it splits through memory on AVX2). Lane by lane the operations are the
// scalar ones.
template <typename A>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(32)));
};
template <typename A>
using VecA = typename VecOf<A>::type;
template <typename A>
constexpr int64_t kLanes = 32 / sizeof(A);  // values per VecA: 8 float, 4 double

template <typename A, typename T>
FC_INLINE VecA<A> load_vec(const T* p) {
  VecA<A> v;
  if constexpr (std::is_same_v<T, A>) {
    std::memcpy(&v, p, sizeof(v));
  } else {
    for (int64_t k = 0; k < kLanes<A>; ++k) v[k] = static_cast<A>(p[k]);
  }
  return v;
}

template <typename A, typename T>
FC_INLINE void store_vec(T* p, VecA<A> v) {
  if constexpr (std::is_same_v<T, A>) {
    std::memcpy(p, &v, sizeof(v));
  } else {
    for (int64_t k = 0; k < kLanes<A>; ++k) p[k] = static_cast<T>(v[k]);
  }
}

// The lanes of v added pairwise (halves, then quarters, ...): a fixed order.
template <typename A>
FC_INLINE A lanes_sum(VecA<A> v) {
  A t[kLanes<A>];
  std::memcpy(t, &v, sizeof(v));
  for (int64_t w = kLanes<A> / 2; w >= 1; w /= 2) {
    for (int64_t k = 0; k < w; ++k) t[k] += t[k + w];
  }
  return t[0];
}

// The ReLU-masked gradient g of a vector of values (bn_masked_grad lane by lane).
template <bool RELU, bool RES, typename T, typename A>
FC_INLINE VecA<A> masked_vec(const T* dy, const T* res, int64_t at, VecA<A> xv, VecA<A> al,
                             VecA<A> be) {
  const VecA<A> g = load_vec<A>(dy + at);
  if constexpr (!RELU) return g;
  VecA<A> pre = xv * al + be;  // pre_activation
  if constexpr (RES) pre += load_vec<A>(res + at);
  return pre > VecA<A>{} ? g : VecA<A>{};
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

}  // namespace bn_simd
}  // namespace cpu
}  // namespace fastconv

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
