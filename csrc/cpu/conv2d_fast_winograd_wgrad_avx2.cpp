// The kernels of the Winograd weight gradient (cpu/conv2d_fast_winograd_wgrad_kernels.h) for
// AVX2 + FMA, fp32 (8 per ymm register) and fp64 (4). The matrices are those of the forward
// transforms (cpu/conv2d_fast_winograd_avx2.cpp, Lavin & Gray 2016, interpolation points
// 0, -1, 1 for F(2x2,3x3) and 0, -1, 1, -2, 2 for F(4x4,3x3)), used here as B^T (input
// patches, as in the forward pass), A (grad_output tiles: A g A^T) and G^T (back to the 3 x 3
// taps: G^T M G), each applied as a 1-D transform to the columns and then to the rows.
// Nothing but <immintrin.h> is included, and no standard-library function is called, under the
// target pragma (see conv2d_fast_winograd_avx2.cpp).
#include <immintrin.h>

#include "cpu/conv2d_fast_winograd_wgrad_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace fastconv::cpu::wino {
namespace {

// The vector operations per element type (GCC vector types: + - * work element-wise, with a
// scalar operand broadcast; products and sums are never contracted into FMAs implicitly).
struct F32 {
  using T = float;
  using V = __m256;
  static constexpr int W = 8;
  static V load(const T* p) { return _mm256_loadu_ps(p); }
  static void store(T* p, V v) { _mm256_storeu_ps(p, v); }
  static V bcast(const T* p) { return _mm256_broadcast_ss(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V zero() { return _mm256_setzero_ps(); }
};

struct F64 {
  using T = double;
  using V = __m256d;
  static constexpr int W = 4;
  static V load(const T* p) { return _mm256_loadu_pd(p); }
  static void store(T* p, V v) { _mm256_storeu_pd(p, v); }
  static V bcast(const T* p) { return _mm256_broadcast_sd(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V zero() { return _mm256_setzero_pd(); }
};

// The first n (< W) elements at p, the rest zero (channel tails: nothing past p + n is read).
template <class S>
inline typename S::V load_first(const typename S::T* p, int64_t n) {
  typename S::T buf[S::W] = {};
  for (int64_t l = 0; l < n; ++l) buf[l] = p[l];
  return S::load(buf);
}

// 1-D transforms over values at stride s (in) and t (out).
template <class S, int M>
struct Tr;

template <class S>
struct Tr<S, 2> {
  using V = typename S::V;
  using T = typename S::T;
  static constexpr int A = 4;
  // B^T d: 4 -> 4
  static inline void in(const V* d, int s, V* r, int t) {
    r[0 * t] = d[0 * s] - d[2 * s];
    r[1 * t] = d[1 * s] + d[2 * s];
    r[2 * t] = d[2 * s] - d[1 * s];
    r[3 * t] = d[1 * s] - d[3 * s];
  }
  // A g: 2 -> 4
  static inline void grad(const V* g, int s, V* r, int t) {
    const V g0 = g[0], g1 = g[s];
    r[0 * t] = g0;
    r[1 * t] = g0 + g1;
    r[2 * t] = g0 - g1;
    r[3 * t] = -g1;
  }
  // G^T m: 4 -> 3
  static inline void taps(const V* m, int s, V* w, int t) {
    const V m1 = m[s], m2 = m[2 * s];
    const V half_sum = (m1 + m2) * T(0.5);
    w[0 * t] = m[0] + half_sum;
    w[1 * t] = (m1 - m2) * T(0.5);
    w[2 * t] = half_sum + m[3 * s];
  }
};

template <class S>
struct Tr<S, 4> {
  using V = typename S::V;
  using T = typename S::T;
  static constexpr int A = 6;
  static inline void in(const V* d, int s, V* r, int t) {
    const V d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s];
    const V a = d4 - T(4) * d2, b = d3 - T(4) * d1;  // rows 1, 2: (d4 - 4 d2) +- (d3 - 4 d1)
    const V c = d4 - d2, e = T(2) * (d3 - d1);       // rows 3, 4: (d4 - d2) +- 2 (d3 - d1)
    r[0 * t] = T(4) * d0 - T(5) * d2 + d4;
    r[1 * t] = a + b;
    r[2 * t] = a - b;
    r[3 * t] = c + e;
    r[4 * t] = c - e;
    r[5 * t] = T(4) * d1 - T(5) * d3 + d5;
  }
  // A g: 4 -> 6, rows (1, 1, 1, 1), (1, -1, 1, -1), (1, 2, 4, 8), (1, -2, 4, -8) between g0, g3
  static inline void grad(const V* g, int s, V* r, int t) {
    const V g0 = g[0], g1 = g[s], g2 = g[2 * s], g3 = g[3 * s];
    const V e0 = g0 + g2, o0 = g1 + g3;
    const V e1 = g0 + T(4) * g2, o1 = T(2) * g1 + T(8) * g3;
    r[0 * t] = g0;
    r[1 * t] = e0 + o0;
    r[2 * t] = e0 - o0;
    r[3 * t] = e1 + o1;
    r[4 * t] = e1 - o1;
    r[5 * t] = g3;
  }
  // G^T m: 6 -> 3, G's columns (1/4, -1/6, -1/6, 1/24, 1/24, 0), (0, -1/6, 1/6, 1/12, -1/12, 0),
  // (0, -1/6, -1/6, 1/6, 1/6, 1)
  static inline void taps(const V* m, int s, V* w, int t) {
    const V m1 = m[s], m2 = m[2 * s], m3 = m[3 * s], m4 = m[4 * s];
    const V p12 = m1 + m2, d12 = m1 - m2, p34 = m3 + m4, d34 = m3 - m4;
    const T sixth = T(1) / 6, twelfth = T(1) / 12, twenty_fourth = T(1) / 24;
    w[0 * t] = m[0] * T(0.25) - p12 * sixth + p34 * twenty_fourth;
    w[1 * t] = d34 * twelfth - d12 * sixth;
    w[2 * t] = (p34 - p12) * sixth + m[5 * s];
  }
};

// One patch (size x size, size = alpha for the input, m for grad_output) through `Tr::in` or
// `Tr::grad` on its columns and then its rows, for the W channels at c (n of them exist, the
// rest read as zero). Interior: all of the patch inside the image and n = W (no tests per
// element).
template <class S, int M, bool Input, bool Interior>
inline __attribute__((always_inline)) void patch_vec(const WPatch<typename S::T>& a, int64_t c, int64_t n,
                                                     int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  using V = typename S::V;
  using T = typename S::T;
  constexpr int A = M + 2, P = Input ? A : M;
  auto f = [](const V* d, int s, V* r, int t) {
    if constexpr (Input) {
      Tr<S, M>::in(d, s, r, t);
    } else {
      Tr<S, M>::grad(d, s, r, t);
    }
  };
  V tmp[A][P];
  const T* base = a.img + (a.y0 * a.row + a.x0 * a.col + c);  // may point outside: read only inside
  _Pragma("GCC unroll 8")
  for (int j = 0; j < P; ++j) {
    V d[P];
    _Pragma("GCC unroll 8")
    for (int i = 0; i < P; ++i) {
      if (Interior) {
        d[i] = S::load(base + (i * a.row + j * a.col));
      } else if (n <= 0 || i < i0 || i >= i1 || j < j0 || j >= j1) {
        d[i] = S::zero();
      } else {
        const T* p = base + (i * a.row + j * a.col);
        d[i] = n == S::W ? S::load(p) : load_first<S>(p, n);
      }
    }
    f(d, 1, &tmp[0][j], P);  // column j
  }
  T* q = a.dst + c;
  _Pragma("GCC unroll 8")
  for (int i = 0; i < A; ++i) {
    V r[A];
    f(tmp[i], 1, r, 1);  // row i
    _Pragma("GCC unroll 8")
    for (int j = 0; j < A; ++j) S::store(q + (i * A + j) * a.dst_xi, r[j]);
  }
}

template <class S, int M, bool Input>
void patch(const WPatch<typename S::T>& a) {
  constexpr int P = Input ? M + 2 : M;
  // The patch's rows/columns inside the image: [i0, i1) x [j0, j1).
  const int64_t i0 = a.y0 < 0 ? -a.y0 : 0, j0 = a.x0 < 0 ? -a.x0 : 0;
  const int64_t i1 = a.h - a.y0 < P ? a.h - a.y0 : P, j1 = a.w - a.x0 < P ? a.w - a.x0 : P;
  int64_t c = 0;
  if (i0 == 0 && j0 == 0 && i1 == P && j1 == P) {
    for (; c + S::W <= a.nch; c += S::W) patch_vec<S, M, Input, true>(a, c, S::W, i0, i1, j0, j1);
  }
  for (; c < a.nch_out; c += S::W) {
    patch_vec<S, M, Input, false>(a, c, a.nch - c < S::W ? a.nch - c : S::W, i0, i1, j0, j1);
  }
}

// Register tile: kRows rows (broadcasts of u) x two vectors of columns (loads of v), 12
// accumulators + 2 columns + 1 broadcast of the 16 ymm registers. The tiles are taken in
// blocks of kTileBlock, so that the block's column of v (one line per tile) and the lines of u
// that its rows read stay in L1 across all register tiles of the block (a whole chunk would
// stream both from L2 for every register tile); each sum still runs over the tiles in order.
constexpr int64_t kTileBlock = 128;

template <class S>
void gemm(const WGemm<typename S::T>& g) {
  using V = typename S::V;
  using T = typename S::T;
  constexpr int W = S::W;
  for (int64_t t0 = 0; t0 < g.nt; t0 += kTileBlock) {
    const int64_t t1 = g.nt - t0 < kTileBlock ? g.nt : t0 + kTileBlock;
    const bool first = g.first && t0 == 0;
    for (int64_t c0 = 0; c0 < g.ccols; c0 += 2 * W) {
      for (int64_t k0 = 0; k0 < g.krows; k0 += kRows) {
        T* acc_p = g.acc + k0 * g.ld_acc + c0;
        V acc[kRows][2];
        _Pragma("GCC unroll 8")
        for (int r = 0; r < kRows; ++r) {
          acc[r][0] = first ? S::zero() : S::load(acc_p + r * g.ld_acc);
          acc[r][1] = first ? S::zero() : S::load(acc_p + r * g.ld_acc + W);
        }
        const T* u = g.u + t0 * g.ldu + k0;
        const T* v = g.v + t0 * g.ldv + c0;
        for (int64_t t = t0; t < t1; ++t) {
          const V v0 = S::load(v), v1 = S::load(v + W);
          _Pragma("GCC unroll 8")
          for (int r = 0; r < kRows; ++r) {
            const V ur = S::bcast(u + r);
            acc[r][0] = S::fma(ur, v0, acc[r][0]);
            acc[r][1] = S::fma(ur, v1, acc[r][1]);
          }
          u += g.ldu;
          v += g.ldv;
        }
        _Pragma("GCC unroll 8")
        for (int r = 0; r < kRows; ++r) {
          S::store(acc_p + r * g.ld_acc, acc[r][0]);
          S::store(acc_p + r * g.ld_acc + W, acc[r][1]);
        }
      }
    }
  }
}

template <class S, int M>
void reduce(const WReduce<typename S::T>& a) {
  using V = typename S::V;
  using T = typename S::T;
  constexpr int A = M + 2, W = S::W;
  for (int64_t k = a.k0; k < a.k1; ++k) {
    for (int64_t c = 0; c < a.C; c += W) {
      V m[A * A];
      _Pragma("GCC unroll 8")
      for (int xi = 0; xi < A * A; ++xi) {
        const T* p = a.m + xi * a.xi_stride + k * a.ld + c;
        V sum = S::load(p);
        for (int64_t s = 1; s < a.nslices; ++s) sum = sum + S::load(p + s * a.slice);
        m[xi] = sum;
      }
      V tmp[3][A], w[3][3];
      _Pragma("GCC unroll 8")
      for (int j = 0; j < A; ++j) Tr<S, M>::taps(&m[j], A, &tmp[0][j], A);  // columns
      _Pragma("GCC unroll 3")
      for (int r = 0; r < 3; ++r) Tr<S, M>::taps(tmp[r], 1, w[r], 1);  // rows
      T buf[9][W];
      for (int t = 0; t < 9; ++t) S::store(buf[t], w[t / 3][t % 3]);
      const int64_t n = a.C - c < W ? a.C - c : W;
      T* dst = a.dw + (k * a.C + c) * 9;
      for (int64_t l = 0; l < n; ++l) {
        for (int t = 0; t < 9; ++t) dst[l * 9 + t] = buf[t][l];
      }
    }
  }
}

template <class S, int M>
const WgradKernels<typename S::T> kernels{M, M + 2, S::W, &patch<S, M, true>, &patch<S, M, false>,
                                          &gemm<S>, &reduce<S, M>};

}  // namespace

const WgradKernels<float>& avx2_wgrad_kernels_f32(int m) {
  return m == 2 ? kernels<F32, 2> : kernels<F32, 4>;
}
const WgradKernels<double>& avx2_wgrad_kernels_f64(int m) {
  return m == 2 ? kernels<F64, 2> : kernels<F64, 4>;
}

}  // namespace fastconv::cpu::wino

#pragma GCC pop_options
