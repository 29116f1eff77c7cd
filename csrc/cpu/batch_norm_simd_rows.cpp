// The channels_last ("rows") vector loops of the CPU BatchNorm kernels, declared in
// batch_norm_simd.h (the NCHW ones and the shared conventions: batch_norm_simd.cpp; shared
// helpers: batch_norm_simd_inl.h).
#include "cpu/batch_norm_simd.h"
#include "cpu/batch_norm_simd_inl.h"

namespace fastconv {
namespace cpu {
namespace {
using namespace bn_simd;  // NOLINT: the shared helpers of the two loop files

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

#define FC_BN_DEFINE_ROWS(ATTR, T, A)                                                          \
  ATTR void bn_rows_sums(const T* x, int64_t rows, int64_t c, const A* pivot, A* s1, A* s2) {   \
    rows_sums(x, rows, c, pivot, s1, s2);                                                       \
  }                                                                                             \
  ATTR void bn_rows_apply(const T* x, const T* res, T* y, int64_t rows, int64_t c,              \
                          const A* alpha, const A* beta, bool relu, bool stream) {              \
    FC_BN_FLAGS2(rows_apply, relu, res != nullptr, x, res, y, rows, c, alpha, beta, stream);    \
  }                                                                                             \
  ATTR void bn_rows_backward_sums(const T* dy, const T* x, const T* res, int64_t rows,           \
                                  int64_t c, const A* alpha, const A* beta, const A* mean,      \
                                  bool relu, A* s_dy, A* s_dyx) {                               \
    FC_BN_FLAGS2(rows_backward_sums, relu, res != nullptr, dy, x, res, rows, c, alpha, beta,    \
                 mean, s_dy, s_dyx);                                                            \
  }                                                                                             \
  ATTR void bn_rows_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,        \
                                   int64_t rows, int64_t c, const A* alpha, const A* beta,       \
                                   const A* k_g, const A* k_x, const A* k_0, bool relu,          \
                                   bool stream) {                                               \
    FC_BN_FLAGS3(rows_backward_apply, relu, res != nullptr, dres != nullptr, dy, x, res, dx,     \
                 dres, rows, c, alpha, beta, k_g, k_x, k_0, stream);                            \
  }

FC_BN_DEFINE_ROWS(FC_CPU_CLONES, float, float)
FC_BN_DEFINE_ROWS(FC_CPU_CLONES, double, double)
FC_BN_DEFINE_ROWS(, c10::Half, float)
FC_BN_DEFINE_ROWS(, c10::BFloat16, float)

}  // namespace cpu
}  // namespace fastconv
