// The Winograd tile transforms (cpu/conv2d_fast_winograd_kernels.h) for AVX2 + FMA, 8 channels
// per ymm register. The stride-1 matrices are Lavin & Gray's ("Fast Algorithms for
// Convolutional Neural Networks", 2016), interpolation points 0, -1, 1 (F(2x2,3x3)) and 0, -1,
// 1, -2, 2 (F(4x4,3x3)); the stride-2 one splits the 3 taps into their even (0, 2) and odd (1)
// phases (see F2s2). Each is applied as a 1-D transform to the columns and then to the rows of
// a tile.
// Nothing but <immintrin.h> is included, and no standard-library function is called, under the
// target pragma (an inline function instantiated here would be compiled for AVX2, and the
// linker may keep that copy for the whole library).
#include <immintrin.h>

#include "cpu/conv2d_fast_winograd_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace fastconv::cpu::wino {
namespace {

using V = __m256;  // GCC vector type: + - * work element-wise, a float operand is broadcast

// 1-D transforms over `n` values at stride `s` (in) and `t` (out); M outputs from A inputs.
struct F2 {
  static constexpr int M = 2, A = 4, P = A;
  // B^T d
  static inline void in(const V* d, int s, V* r, int t) {
    r[0 * t] = d[0 * s] - d[2 * s];
    r[1 * t] = d[1 * s] + d[2 * s];
    r[2 * t] = d[2 * s] - d[1 * s];
    r[3 * t] = d[1 * s] - d[3 * s];
  }
  // G g
  static inline void wt(const V* g, int s, V* u, int t) {
    const V even = (g[0] + g[2 * s]) * 0.5f, odd = g[1 * s] * 0.5f;
    u[0 * t] = g[0];
    u[1 * t] = even + odd;
    u[2 * t] = even - odd;
    u[3 * t] = g[2 * s];
  }
  // A^T m
  static inline void out(const V* m, int s, V* o, int t) {
    o[0 * t] = m[0] + m[1 * s] + m[2 * s];
    o[1 * t] = m[1 * s] - m[2 * s] - m[3 * s];
  }
};

struct F4 {
  static constexpr int M = 4, A = 6, P = A;
  static inline void in(const V* d, int s, V* r, int t) {
    const V d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s];
    const V a = d4 - 4.0f * d2, b = d3 - 4.0f * d1;  // rows 1, 2: (d4 - 4 d2) +- (d3 - 4 d1)
    const V c = d4 - d2, e = 2.0f * (d3 - d1);       // rows 3, 4: (d4 - d2) +- 2 (d3 - d1)
    r[0 * t] = 4.0f * d0 - 5.0f * d2 + d4;
    r[1 * t] = a + b;
    r[2 * t] = a - b;
    r[3 * t] = c + e;
    r[4 * t] = c - e;
    r[5 * t] = 4.0f * d1 - 5.0f * d3 + d5;
  }
  static inline void wt(const V* g, int s, V* u, int t) {
    const V g0 = g[0], g1 = g[s], g2 = g[2 * s];
    const V a = (g0 + g2) * (-1.0f / 6), b = g1 * (-1.0f / 6);
    const V c = g0 * (1.0f / 24) + g2 * (1.0f / 6), e = g1 * (1.0f / 12);
    u[0 * t] = g0 * 0.25f;
    u[1 * t] = a + b;
    u[2 * t] = a - b;
    u[3 * t] = c + e;
    u[4 * t] = c - e;
    u[5 * t] = g2;
  }
  static inline void out(const V* m, int s, V* o, int t) {
    const V m1 = m[s], m2 = m[2 * s], m3 = m[3 * s], m4 = m[4 * s];
    const V p12 = m1 + m2, d12 = m1 - m2, p34 = m3 + m4, d34 = m3 - m4;
    o[0 * t] = m[0] + p12 + p34;
    o[1 * t] = d12 + 2.0f * d34;
    o[2 * t] = p12 + 4.0f * p34;
    o[3 * t] = d12 + 8.0f * d34 + m[5 * s];
  }
};

// Stride 2: y0 = d0 g0 + d1 g1 + d2 g2, y1 = d2 g0 + d3 g1 + d4 g2 from a patch of 5. The
// even taps are F(2,2) over the even inputs d0, d2, d4 (y0 = m0 + m1, y1 = m1 + m2 with m0 =
// (d0 - d2) g0, m1 = d2 (g0 + g2), m2 = (d4 - d2) g2), the odd tap a plain product per output
// (m3 = d1 g1, m4 = d3 g1): 5 products for 2 outputs instead of 6, 25 for a 2 x 2 tile instead
// of 36. Every coefficient is +-1, but as in F(2x2,3x3) the sums cancel terms that belong to
// the tile's other output (d2 g0 in m0 + m1), so an output's rounding error scales with its
// tile neighbour's terms, not only its own.
struct F2s2 {
  static constexpr int M = 2, A = 5, P = A;
  static inline void in(const V* d, int s, V* r, int t) {
    r[0 * t] = d[0] - d[2 * s];
    r[1 * t] = d[2 * s];
    r[2 * t] = d[4 * s] - d[2 * s];
    r[3 * t] = d[1 * s];
    r[4 * t] = d[3 * s];
  }
  static inline void wt(const V* g, int s, V* u, int t) {
    u[0 * t] = g[0];
    u[1 * t] = g[0] + g[2 * s];
    u[2 * t] = g[2 * s];
    u[3 * t] = g[1 * s];
    u[4 * t] = g[1 * s];
  }
  static inline void out(const V* m, int s, V* o, int t) {
    o[0 * t] = m[0] + m[1 * s] + m[3 * s];
    o[1 * t] = m[1 * s] + m[2 * s] + m[4 * s];
  }
};

// The input gradient of a 3x3 stride-2 layer, a transposed convolution: in the padded input's
// coordinates u = 2 i + r, an even u gets two products (dy[u/2] w0 + dy[u/2 - 1] w2), an odd
// one one (dy[(u-1)/2] w1). A tile of 4 consecutive u from 3 grad_output values e0..e2 is the
// stride-2 forward tile transposed: the even pair is F(2,2) over e with the flipped filter (g0
// = w2, g2 = w0: the same filter transform as F2s2's), the odd pair two plain products; 25
// products per 4 x 4 tile instead of 36. Tiles start at input pixels 4 t, i.e. at padded
// columns of the padding's parity. OddStart (odd padding): (m3, m0 + m1, m4, m1 + m2) with m3 =
// e0 g1, m4 = e1 g1; else (m0 + m1, m3, m1 + m2, m4) with m3 = e1 g1, m4 = e2 g1.
template <bool OddStart>
struct F2s2T {
  static constexpr int M = 4, A = 5, P = 3;
  static inline void in(const V* d, int s, V* r, int t) {
    r[0 * t] = d[0] - d[1 * s];
    r[1 * t] = d[1 * s];
    r[2 * t] = d[2 * s] - d[1 * s];
    r[3 * t] = OddStart ? d[0] : d[1 * s];
    r[4 * t] = OddStart ? d[1 * s] : d[2 * s];
  }
  static inline void wt(const V* g, int s, V* u, int t) { F2s2::wt(g, s, u, t); }
  static inline void out(const V* m, int s, V* o, int t) {
    const V even0 = m[0] + m[1 * s], even1 = m[1 * s] + m[2 * s];
    o[0 * t] = OddStart ? m[3 * s] : even0;
    o[1 * t] = OddStart ? even0 : m[3 * s];
    o[2 * t] = OddStart ? m[4 * s] : even1;
    o[3 * t] = OddStart ? even1 : m[4 * s];
  }
};

inline __m256i first_lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// One vector of 8 channels of a patch: column transforms as each column is loaded, then the
// row transforms straight into the destination. Interior: all of the patch inside the image.
template <class T, bool Interior, bool Full>
inline __attribute__((always_inline)) void input_vec(const InputTile& a, int64_t c, __m256i mask,
                                                     int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  constexpr int A = T::A, P = T::P;
  V tmp[A][P];
  const int64_t off0 = a.y0 * a.row + a.x0 * a.col + c;  // may be negative: never read there
  _Pragma("GCC unroll 8")
  for (int j = 0; j < P; ++j) {
    V d[P];
    _Pragma("GCC unroll 8")
    for (int i = 0; i < P; ++i) {
      if (!Interior && (i < i0 || i >= i1 || j < j0 || j >= j1)) {
        d[i] = _mm256_setzero_ps();
      } else {
        const float* p = a.img + (off0 + i * a.row + j * a.col);
        d[i] = Full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
      }
    }
    T::in(d, 1, &tmp[0][j], P);  // column j: B^T d
  }
  float* q = a.dst + c;
  _Pragma("GCC unroll 8")
  for (int i = 0; i < A; ++i) {
    V r[A];
    T::in(tmp[i], 1, r, 1);  // row i: (B^T d) B
    _Pragma("GCC unroll 8")
    for (int j = 0; j < A; ++j) {
      if (Full) {
        _mm256_storeu_ps(q + (i * A + j) * a.dst_xi, r[j]);
      } else {
        _mm256_maskstore_ps(q + (i * A + j) * a.dst_xi, mask, r[j]);
      }
    }
  }
}

template <class T>
void input_tile(const InputTile& a) {
  constexpr int P = T::P;
  // The patch's rows/columns inside the image: [i0, i1) x [j0, j1).
  const int64_t i0 = a.y0 < 0 ? -a.y0 : 0, j0 = a.x0 < 0 ? -a.x0 : 0;
  const int64_t i1 = a.h - a.y0 < P ? a.h - a.y0 : P, j1 = a.w - a.x0 < P ? a.w - a.x0 : P;
  const bool interior = i0 == 0 && j0 == 0 && i1 == P && j1 == P;
  const __m256i all = first_lanes(8);
  int64_t c = 0;
  if (interior) {
    for (; c + 8 <= a.nch; c += 8) input_vec<T, true, true>(a, c, all, i0, i1, j0, j1);
  } else {
    for (; c + 8 <= a.nch; c += 8) input_vec<T, false, true>(a, c, all, i0, i1, j0, j1);
  }
  if (c < a.nch) input_vec<T, false, false>(a, c, first_lanes(a.nch - c), i0, i1, j0, j1);
}

template <class T>
void output_tile(const OutputTile& a) {
  constexpr int A = T::A, M = T::M;
  for (int64_t c = 0; c < a.nch; c += 8) {
    const int64_t nc = a.nch - c < 8 ? a.nch - c : 8;
    const __m256i mask = first_lanes(nc);
    V tmp[M][A], o[M][M];
    _Pragma("GCC unroll 8")
    for (int j = 0; j < A; ++j) {  // column j: A^T m
      V m[A];
      _Pragma("GCC unroll 8")
      for (int i = 0; i < A; ++i) m[i] = _mm256_loadu_ps(a.src + (i * A + j) * a.src_xi + c);
      T::out(m, 1, &tmp[0][j], A);
    }
    _Pragma("GCC unroll 8")
    for (int i = 0; i < M; ++i) T::out(tmp[i], 1, o[i], 1);  // rows: (A^T m) A
    if (a.bias != nullptr) {
      const V b = _mm256_maskload_ps(a.bias + c, mask);
      for (int i = 0; i < M; ++i) {
        for (int j = 0; j < M; ++j) o[i][j] = o[i][j] + b;
      }
    }
    if (a.d_chan == 1) {  // NHWC: one vector per pixel
      for (int i = 0; i < a.rows; ++i) {
        for (int j = 0; j < a.cols; ++j) {
          float* q = a.dst + i * a.d_row + j * a.d_col + c;
          if (nc == 8) {
            _mm256_storeu_ps(q, o[i][j]);
          } else {
            _mm256_maskstore_ps(q, mask, o[i][j]);
          }
        }
      }
      continue;
    }
    // NCHW: through a buffer, each channel's rows as runs of adjacent pixels.
    float buf[M][M][8];
    for (int i = 0; i < M; ++i) {
      for (int j = 0; j < M; ++j) _mm256_storeu_ps(buf[i][j], o[i][j]);
    }
    for (int64_t l = 0; l < nc; ++l) {
      float* q = a.dst + (c + l) * a.d_chan;
      for (int i = 0; i < a.rows; ++i) {
        for (int j = 0; j < a.cols; ++j) q[i * a.d_row + j * a.d_col] = buf[i][j][l];
      }
    }
  }
}

template <class T>
void weight_filters(const float* g, int64_t g_tap, int64_t lanes, float* u, int64_t u_xi) {
  constexpr int A = T::A;
  for (int64_t l = 0; l < lanes; l += 8) {
    V w[3][3], tmp[A][3];
    _Pragma("GCC unroll 9")
    for (int t = 0; t < 9; ++t) w[t / 3][t % 3] = _mm256_loadu_ps(g + t * g_tap + l);
    _Pragma("GCC unroll 3")
    for (int s = 0; s < 3; ++s) T::wt(&w[0][s], 3, &tmp[0][s], 3);  // columns: G g
    _Pragma("GCC unroll 8")
    for (int i = 0; i < A; ++i) {  // rows: (G g) G^T
      V r[A];
      T::wt(tmp[i], 1, r, 1);
      _Pragma("GCC unroll 8")
      for (int j = 0; j < A; ++j) _mm256_storeu_ps(u + (i * A + j) * u_xi + l, r[j]);
    }
  }
}

// src_step: source pixels between the patches of adjacent tiles.
template <class T>
Transforms transforms_of(int src_step) {
  return {T::M, T::A, src_step, &input_tile<T>, &output_tile<T>, &weight_filters<T>};
}

}  // namespace

const Transforms& avx2_transforms(int m, int stride) {
  static const Transforms f2 = transforms_of<F2>(2), f4 = transforms_of<F4>(4), f2s2 = transforms_of<F2s2>(4);
  return stride == 2 ? f2s2 : m == 2 ? f2 : f4;
}

const Transforms& avx2_transforms_stride2_input_grad(bool odd_start) {
  static const Transforms even = transforms_of<F2s2T<false>>(2), odd = transforms_of<F2s2T<true>>(2);
  return odd_start ? odd : even;
}

}  // namespace fastconv::cpu::wino

#pragma GCC pop_options
