// See batch_norm_simd.h. Each loop body is a template over the element type T, the compute
// type A and the compile-time flags RELU / RES (residual given) / GRES (residual gradient
// written), so the vectorized loops carry no branches; the exported functions pick the
// instantiation. No fast-math: NaN must pass through the ReLU as in PyTorch.
#include "cpu/batch_norm_simd.h"

#include "common/batch_norm.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

// The vector locals (VecA) live inside always-inlined helpers, never across a call: the note
// that passing them by value changes the ABI without AVX does not apply (the portable clone).
#pragma GCC diagnostic ignored "-Wpsabi"

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

// The run loops walk `planes` runs of n values, `stride` apart: one call per channel (or
// chunk) rather than per NCHW plane, so small planes (7x7, 4x4) pay no call per plane. The
// reducing ones take `channels` consecutive channels at once (channel j's runs n values after
// channel j - 1's: adjacent NCHW planes) and walk them channel by channel, each channel's runs
// in plane order (`planes` sequential streams through the block, one per plane row); a
// channel's sums are kept in the kLanes lanes of a vector across all its runs (value i of a
// run into lane i % kLanes) and the lanes added up once at the end: one horizontal reduction
// per channel and chunk rather than one per run, which is what 4x4 and 7x7 planes (2 and 6
// vectors per run) paid most for. Each channel sees the same operations whatever `channels`
// is, hence the same bits whatever the blocking.
//
// step(v, lanes...) for each whole vector of a run (v = its first index), then tail(i, k) for
// the values left (lane k).
template <typename A, typename Step, typename Tail>
FC_INLINE void for_each_lane_step(int64_t n, Step step, Tail tail) {
  int64_t i = 0;
  for (; i + kLanes<A> <= n; i += kLanes<A>) step(i);
  for (int64_t k = 0; i + k < n; ++k) tail(i + k, k);
}

template <typename T, typename A>
FC_INLINE void run_sums(const T* x, int64_t planes, int64_t n, int64_t stride, int64_t channels,
                        const A* pivot, A* s1, A* s2) {
  for (int64_t j = 0; j < channels; ++j) {
    const A p = pivot[j];
    VecA<A> a = {}, b = {};
    for (int64_t o = 0; o < planes * stride; o += stride) {
      const T* xj = x + o + j * n;
      for_each_lane_step<A>(
          n,
          [&](int64_t i) {
            const VecA<A> d = load_vec<A>(xj + i) - p;
            a += d;
            b += d * d;
          },
          [&](int64_t i, int64_t k) {
            const A d = static_cast<A>(xj[i]) - p;
            a[k] += d;
            b[k] += d * d;
          });
    }
    s1[j] += lanes_sum<A>(a);
    s2[j] += lanes_sum<A>(b);
  }
}

// The rows_* loops (channels_last) work in bands of rows (band_rows: ~16 KiB of a tensor, so a
// band stays in cache and its pages in the TLB while it is walked) and, within a band, in tiles
// of kLanes channels walked down the band's rows with the tile's per-channel coefficients and
// sums in vector registers, rather than loaded and stored for every row (the per-channel
// arrays of C = 2048 do not even fit L1). The C % kLanes channels left over run the scalar
// form of the same expressions (*_cols) over all of them per row. A channel's sums see the same
// operations in the same order either way: the results do not depend on the tiling.
// Bytes of one tensor per band (FASTCONV_BN_BAND_BYTES overrides it, for measurements;
// results do not depend on it).
inline int64_t band_bytes() {
  static const int64_t bytes = [] {
    const char* env = std::getenv("FASTCONV_BN_BAND_BYTES");
    return env ? int64_t(std::atoll(env)) : int64_t{16384};
  }();
  return bytes;
}

template <typename T>
FC_INLINE int64_t band_rows(int64_t c) {
  // even: rows_sums adds rows in pairs from the start of each call
  return std::clamp<int64_t>((band_bytes() / (c * int64_t(sizeof(T)))) & ~int64_t(1), 4, 64);
}

// Fewer channels than this run as whole rows (cols only), for measurements
// (FASTCONV_BN_TILE_CHANNELS); results do not depend on it. Tiles measured faster than whole
// rows from 64 channels up (8x64x32x32 backward, 1 thread: 0.37-0.49 ms against 0.43-0.55).
inline int64_t tile_min_channels() {
  static const int64_t c = [] {
    const char* env = std::getenv("FASTCONV_BN_TILE_CHANNELS");
    return env ? int64_t(std::atoll(env)) : int64_t{0};
  }();
  return c;
}

// Calls tile(row offset, rows, first channel) for every band and whole tile, then
// cols(row offset, rows, first channel, channels) for the band's leftover channels.
template <typename T, typename A, typename Tile, typename Cols>
FC_INLINE void for_each_band(int64_t rows, int64_t c, Tile tile, Cols cols) {
  if (c < tile_min_channels()) {
    cols(0, rows, 0, c);
    return;
  }
  const int64_t band = band_rows<T>(c), whole = c - c % kLanes<A>;
  for (int64_t r0 = 0; r0 < rows; r0 += band) {
    const int64_t nr = std::min(band, rows - r0);
    for (int64_t j = 0; j < whole; j += kLanes<A>) tile(r0 * c, nr, j);
    if (whole < c) cols(r0 * c, nr, whole, c - whole);
  }
}

// s1 += sum(x - pivot), s2 += sum((x - pivot)^2) over rows of x (row stride ld), rows in pairs
// (pair: v1 is the next row's value); V is A (one channel) or VecA<A> (a tile).
template <typename V>
FC_INLINE void sums_step(V& s1, V& s2, V pivot, V v0, V v1, bool pair) {
  const V d0 = v0 - pivot;
  if (pair) {
    const V d1 = v1 - pivot;
    s1 += d0 + d1;
    s2 += d0 * d0 + d1 * d1;
  } else {
    s1 += d0;
    s2 += d0 * d0;
  }
}

template <typename T, typename A>
FC_INLINE void rows_sums(const T* x, int64_t rows, int64_t c, const A* pivot, A* s1, A* s2) {
  for_each_band<T, A>(
      rows, c,
      [&](int64_t o, int64_t nr, int64_t j) {
        const VecA<A> p = load_vec<A>(pivot + j);
        VecA<A> a = load_vec<A>(s1 + j), b = load_vec<A>(s2 + j);
        const T* xj = x + o + j;
        int64_t r = 0;
        for (; r + 2 <= nr; r += 2) {
          sums_step(a, b, p, load_vec<A>(xj + r * c), load_vec<A>(xj + (r + 1) * c), true);
        }
        if (r < nr) sums_step(a, b, p, load_vec<A>(xj + r * c), p, false);
        store_vec<A>(s1 + j, a);
        store_vec<A>(s2 + j, b);
      },
      [&](int64_t o, int64_t nr, int64_t j, int64_t n) {
        const T* xj = x + o + j;
        int64_t r = 0;
        for (; r + 2 <= nr; r += 2) {
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) {
            sums_step(s1[j + k], s2[j + k], pivot[j + k], static_cast<A>(xj[r * c + k]),
                      static_cast<A>(xj[(r + 1) * c + k]), true);
          }
        }
        if (r < nr) {
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) {
            sums_step(s1[j + k], s2[j + k], pivot[j + k], static_cast<A>(xj[r * c + k]), A(0),
                      false);
          }
        }
      });
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
  // y = [relu](x * alpha + beta [+ res]) for rows of n channels from (row offset o, channel j)
  auto cols = [&](int64_t o, int64_t nr, int64_t j, int64_t n) {
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t at = o + r * c + j;
      emit(y + at, n, stream, [&](int64_t k) {
        A v = pre_activation<RES>(static_cast<A>(x[at + k]), alpha[j + k], beta[j + k], res,
                                  at + k);
        if constexpr (RELU) v = bn_relu(v);
        return static_cast<T>(v);
      });
    }
  };
  if (stream) {  // whole rows through the streaming buffer
    cols(0, rows, 0, c);
    store_fence();
    return;
  }
  for_each_band<T, A>(
      rows, c,
      [&](int64_t o, int64_t nr, int64_t j) {
        const VecA<A> al = load_vec<A>(alpha + j), be = load_vec<A>(beta + j);
        for (int64_t r = 0; r < nr; ++r) {
          const int64_t at = o + r * c + j;
          VecA<A> v = load_vec<A>(x + at) * al + be;
          if constexpr (RES) v += load_vec<A>(res + at);
          if constexpr (RELU) v = v < VecA<A>{} ? VecA<A>{} : v;  // bn_relu: NaN passes
          store_vec<A>(y + at, v);
        }
      },
      cols);
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

template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void run_backward_sums(const T* dy, const T* x, const T* res, int64_t planes, int64_t n,
                                 int64_t stride, int64_t channels, const A* alpha, const A* beta,
                                 const A* mean, A* s_dy, A* s_dyx) {
  for (int64_t j = 0; j < channels; ++j) {
    const A al = alpha[j], be = beta[j], mu = mean[j];
    VecA<A> a = {}, b = {};
    for (int64_t o = 0; o < planes * stride; o += stride) {
      const int64_t at = o + j * n;
      for_each_lane_step<A>(
          n,
          [&](int64_t i) {
            const VecA<A> xv = load_vec<A>(x + at + i);
            const VecA<A> g =
                masked_vec<RELU, RES, T, A>(dy, res, at + i, xv, al + VecA<A>{}, be + VecA<A>{});
            a += g;
            b += g * (xv - mu);
          },
          [&](int64_t i, int64_t k) {
            const A xv = static_cast<A>(x[at + i]);
            const A g = bn_masked_grad(static_cast<A>(dy[at + i]),
                                       pre_activation<RES>(xv, al, be, res, at + i), RELU);
            a[k] += g;
            b[k] += g * (xv - mu);
          });
    }
    s_dy[j] += lanes_sum<A>(a);
    s_dyx[j] += lanes_sum<A>(b);
  }
}

// s_dy[j] += sum g, s_dyx[j] += sum g * (x - mean[j]) over the rows.
template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void rows_backward_sums(const T* dy, const T* x, const T* res, int64_t rows, int64_t c,
                                  const A* alpha, const A* beta, const A* mean, A* s_dy,
                                  A* s_dyx) {
  for_each_band<T, A>(
      rows, c,
      [&](int64_t o, int64_t nr, int64_t j) {
        const VecA<A> al = load_vec<A>(alpha + j), be = load_vec<A>(beta + j);
        const VecA<A> mu = load_vec<A>(mean + j);
        VecA<A> a = load_vec<A>(s_dy + j), b = load_vec<A>(s_dyx + j);
        for (int64_t r = 0; r < nr; ++r) {
          const int64_t at = o + r * c + j;
          const VecA<A> xv = load_vec<A>(x + at);
          const VecA<A> g = masked_vec<RELU, RES, T, A>(dy, res, at, xv, al, be);
          a += g;
          b += g * (xv - mu);
        }
        store_vec<A>(s_dy + j, a);
        store_vec<A>(s_dyx + j, b);
      },
      [&](int64_t o, int64_t nr, int64_t j, int64_t n) {
        for (int64_t r = 0; r < nr; ++r) {
          const int64_t at = o + r * c + j;
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) {
            const A xv = static_cast<A>(x[at + k]);
            const A g = bn_masked_grad(static_cast<A>(dy[at + k]),
                                       pre_activation<RES>(xv, alpha[j + k], beta[j + k], res,
                                                           at + k),
                                       RELU);
            s_dy[j + k] += g;
            s_dyx[j + k] += g * (xv - mean[j + k]);
          }
        }
      });
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
  // the leftover channels of a band, and whole rows when streaming
  auto cols = [&](int64_t o, int64_t nr, int64_t j, int64_t n) {
    const ChannelCoef<A> k{alpha + j, beta + j, k_g + j, k_x + j, k_0 + j};
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t at = o + j + r * c;
      backward_apply_span<RELU, RES, GRES, T, A>(dy + at, x + at, RES ? res + at : res, dx + at,
                                                 GRES ? dres + at : dres, 0, n, stream, k);
    }
  };
  if (stream) {
    cols(0, rows, 0, c);
    store_fence();
    return;
  }
  for_each_band<T, A>(
      rows, c,
      [&](int64_t o, int64_t nr, int64_t j) {
        const VecA<A> al = load_vec<A>(alpha + j), be = load_vec<A>(beta + j);
        const VecA<A> kg = load_vec<A>(k_g + j), kx = load_vec<A>(k_x + j);
        const VecA<A> k0 = load_vec<A>(k_0 + j);
        for (int64_t r = 0; r < nr; ++r) {
          const int64_t at = o + j + r * c;
          const VecA<A> xv = load_vec<A>(x + at);
          const VecA<A> g = masked_vec<RELU, RES, T, A>(dy, res, at, xv, al, be);
          store_vec<A>(dx + at, g * kg + xv * kx + k0);  // backward_apply_span's expression
          if constexpr (GRES) store_vec<A>(dres + at, g);
        }
      },
      cols);
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
