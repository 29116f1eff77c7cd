// Register-tiled micro-kernels of the fast CPU convolution, written once over a vector type V
// (V::W floats per register; load/bcast/fma/store and masked partial load/store) and compiled
// per instruction set by conv2d_fast_avx2.cpp and conv2d_fast_avx512.cpp, which include this
// file after their `#pragma GCC target`. Include nothing here: a standard header pulled in under
// the target pragma would compile its inline functions for that ISA, and the linker may keep
// that copy for the whole library.
//
// Tiles: M pixels (or reduction-side elements) x 2 vectors of channels, all 2M accumulators in
// registers. Kernels are templated on M so every tile is fully unrolled; rows end with one
// smaller tile. The reduction order within an accumulator is: taps in order, then l ascending
// (ConvRow); rows in order, then pixels ascending (WgradTile) -- never thread-dependent.

#define FC_UK_INLINE inline __attribute__((always_inline))

namespace fastconv::cpu::fastk::FC_UK_NS {

// Channels [0, n) of a two-register block.
template <class V>
struct BlockMask {
  typename V::mask lo, hi;
  explicit BlockMask(int n) : lo(V::first(n < V::W ? n : V::W)), hi(V::first(n > V::W ? n - V::W : 0)) {}
};

template <class V>
FC_UK_INLINE void store_block(float* d, typename V::reg v0, typename V::reg v1, int nvalid,
                              const BlockMask<V>& mask) {
  if (nvalid == 2 * V::W) {
    V::store(d, v0);
    V::store(d + V::W, v1);
  } else {
    V::store_masked(d, mask.lo, v0);
    V::store_masked(d + V::W, mask.hi, v1);
  }
}

// M pixels x nvalid channels between registers and a destination whose channels are not
// adjacent (NCHW: d_chan = H * W), through a small buffer: the pixels of one channel are
// usually adjacent there, so this writes short runs instead of transposing the whole result.
template <class V, int M>
FC_UK_INLINE void store_tile_strided(float* d, int64_t d_pix, int64_t d_chan, int nvalid,
                                     typename V::reg (&acc)[M][2]) {
  float buf[M][2 * V::W];
  _Pragma("GCC unroll 16")
  for (int m = 0; m < M; ++m) {
    V::store(buf[m], acc[m][0]);
    V::store(buf[m] + V::W, acc[m][1]);
  }
  for (int c = 0; c < nvalid; ++c) {
    _Pragma("GCC unroll 16")
    for (int m = 0; m < M; ++m) d[c * d_chan + m * d_pix] = buf[m][c];
  }
}
template <class V, int M>
FC_UK_INLINE void load_tile_strided(const float* d, int64_t d_pix, int64_t d_chan, int nvalid,
                                    typename V::reg (&acc)[M][2]) {
  float buf[M][2 * V::W] = {};
  for (int c = 0; c < nvalid; ++c) {
    _Pragma("GCC unroll 16")
    for (int m = 0; m < M; ++m) buf[m][c] = d[c * d_chan + m * d_pix];
  }
  _Pragma("GCC unroll 16")
  for (int m = 0; m < M; ++m) {
    acc[m][0] = V::load(buf[m]);
    acc[m][1] = V::load(buf[m] + V::W);
  }
}

// ---- ConvRow ------------------------------------------------------------------------------

// The copying tile (Copy below) prefetches the weights this many steps ahead, into L2. Its
// loads are one 64-byte piece per weight row (18 KiB apart for 512 x 3 x 3: a new page at every
// step), which the hardware prefetchers do not follow, and with a weight larger than what stays
// cached (9.4 MB) each load waited on memory with the tile's multiply-adds behind it. 2
// threads, channels_last, builds alternated, best of 3 in 6 rounds: 512x7x7 -> 512 3x3 batch 1
// 1.58-1.77 -> 1.49-1.59 ms (16 steps: in between; 48: as 32), batch 2 2.93-2.97 -> 2.76-2.78
// ms in 2 of 4 rounds; 256x7x7 -> 256 (2.4 MB of weights) within noise.
constexpr int64_t kCopyPrefetch = 32;

// Reduction steps [l0, l1) of every tap; the first block starts from init, later ones from the
// partial sums the previous block stored in dst.
// Copy: also store the weights it loads to r.b_copy, tap t's step l at (t * L + l) * block.
template <class V, int M, bool Copy = false>
FC_UK_INLINE void conv_tile(const ConvRow& r, int64_t x0, int64_t l0, int64_t l1,
                            const BlockMask<V>& mask) {
  using reg = typename V::reg;
  constexpr int B = 2 * V::W;
  reg acc[M][2];
  float* d = r.dst + x0 * r.d_pix;
  if (l0 == 0 && !r.accumulate) {
    const reg i0 = r.init ? V::load(r.init) : V::zero();
    const reg i1 = r.init ? V::load(r.init + V::W) : V::zero();
    _Pragma("GCC unroll 16")
    for (int m = 0; m < M; ++m) {
      acc[m][0] = i0;
      acc[m][1] = i1;
    }
  } else if (r.d_chan != 1) {
    load_tile_strided<V, M>(d, r.d_pix, r.d_chan, r.nvalid, acc);
  } else {
    _Pragma("GCC unroll 16")
    for (int m = 0; m < M; ++m) {
      acc[m][0] = V::load_masked(d + m * r.d_pix, mask.lo);
      acc[m][1] = V::load_masked(d + m * r.d_pix + V::W, mask.hi);
    }
  }
  const int64_t a_pix = r.a_pix, b_ld = r.b_ld > 0 ? r.b_ld : B;
  for (int t = 0; t < r.ntaps; ++t) {
    const float* a = r.a[t] + x0 * a_pix;
    const float* b = r.b[t];
    const float* ap[M];
    _Pragma("GCC unroll 16")
    for (int m = 0; m < M; ++m) ap[m] = r.pix_off ? r.a[t] + r.pix_off[x0 + m] : a + m * a_pix;
    float* copy = Copy ? r.b_copy + t * r.L * B : nullptr;
    for (int64_t l = l0; l < l1; ++l) {
      const reg b0 = V::load(b + l * b_ld);
      const reg b1 = V::load(b + l * b_ld + V::W);
      if constexpr (Copy) {
        V::store(copy + l * B, b0);
        V::store(copy + l * B + V::W, b1);
        const int64_t ahead = l + kCopyPrefetch - l1;  // < 0: still in this tap; else the next's
        if (ahead < 0) {
          __builtin_prefetch(b + (l + kCopyPrefetch) * b_ld, 0, 2);
        } else if (t + 1 < r.ntaps && l0 + ahead < l1) {
          __builtin_prefetch(r.b[t + 1] + (l0 + ahead) * b_ld, 0, 2);
        }
      }
      _Pragma("GCC unroll 16")
      for (int m = 0; m < M; ++m) {
        const reg av = V::bcast(ap[m] + l);
        acc[m][0] = V::fma(av, b0, acc[m][0]);
        acc[m][1] = V::fma(av, b1, acc[m][1]);
      }
    }
  }
  if (r.d_chan != 1) {
    store_tile_strided<V, M>(d, r.d_pix, r.d_chan, r.nvalid, acc);
    return;
  }
  _Pragma("GCC unroll 16")
  for (int m = 0; m < M; ++m) store_block<V>(d + m * r.d_pix, acc[m][0], acc[m][1], r.nvalid, mask);
}

template <class V, int M>
FC_UK_INLINE void conv_tail(const ConvRow& r, int64_t x0, int rem, int64_t l0, int64_t l1,
                            const BlockMask<V>& mask) {
  if constexpr (M > 0) {
    if (rem == M) {
      conv_tile<V, M>(r, x0, l0, l1, mask);
    } else {
      conv_tail<V, M - 1>(r, x0, rem, l0, l1, mask);
    }
  }
}

// ConvRow::b_copy is taken for at most this many taps (the packed copy's per-tap pointers are
// a stack array); rows with more read the weight in place in every tile.
constexpr int kMaxCopyTaps = 64;

// The tiles of pixels [x, npix). A remainder of fewer than MaxM / 2 pixels is not a tile of its
// own: with so few accumulators each step waits on the previous step's multiply-add (latency
// 4), so the last full tile and it run as two tiles of about equal size (7 pixels on AVX2: 4 +
// 3 instead of 6 + 1). Which tile computes a pixel does not change its sum.
template <class V, int MaxM>
FC_UK_INLINE void conv_tiles(const ConvRow& r, int64_t x, int64_t l0, int64_t l1, const BlockMask<V>& mask) {
  const int64_t n = r.npix - x, rem = n % MaxM;
  const int64_t full = n / MaxM - (rem > 0 && rem < MaxM / 2 && n > MaxM ? 1 : 0);
  for (int64_t i = 0; i < full; ++i, x += MaxM) conv_tile<V, MaxM>(r, x, l0, l1, mask);
  int64_t left = r.npix - x;
  if (left > MaxM) {
    const int64_t half = (left + 1) / 2;
    conv_tail<V, MaxM - 1>(r, x, static_cast<int>(half), l0, l1, mask);
    x += half;
    left -= half;
  }
  if (left == MaxM) {
    conv_tile<V, MaxM>(r, x, l0, l1, mask);
  } else if (left > 0) {
    conv_tail<V, MaxM - 1>(r, x, static_cast<int>(left), l0, l1, mask);
  }
}

// The reduction is cut into blocks of l_block steps so that the weights of one block (taps x
// l_block x 2 vectors) stay in L1 while every tile of the row uses them.
template <class V, int MaxM>
FC_UK_INLINE void conv_row_passes(const ConvRow& r) {
  const BlockMask<V> mask(r.nvalid);
  const int64_t lb = (r.l_block > 0 && r.ntaps > 0) ? r.l_block : (r.L > 0 ? r.L : 1);
  for (int64_t l0 = 0; l0 < (r.ntaps > 0 ? r.L : 1); l0 += lb) {
    const int64_t l1 = r.ntaps > 0 ? (l0 + lb < r.L ? l0 + lb : r.L) : 0;
    int64_t x = 0;
    if (r.b_copy && r.b_ld > 0 && r.npix > MaxM && r.ntaps <= kMaxCopyTaps) {
      // the first tile packs the pass's weights, the rest read them packed
      conv_tile<V, MaxM, true>(r, x, l0, l1, mask);
      x += MaxM;
      const float* packed[kMaxCopyTaps];
      for (int t = 0; t < r.ntaps; ++t) packed[t] = r.b_copy + t * r.L * (2 * V::W);
      ConvRow rest = r;
      rest.b = packed;
      rest.b_ld = 0;
      conv_tiles<V, MaxM>(rest, x, l0, l1, mask);
      continue;
    }
    conv_tiles<V, MaxM>(r, x, l0, l1, mask);
  }
}

// A destination whose channels are not adjacent (NCHW): the tiles of segments of up to kSeg
// pixels (a multiple of every MaxM; how a row is cut into tiles never changes a sum) write to
// an NHWC buffer, and the segment is then stored transposed, runs of pixels per channel (8 x 8
// register transposes where the destination's pixels are adjacent). With the reduction in
// several passes the partial sums also wait there instead of being scattered to and gathered
// from the destination at every pass. The same values are stored and reloaded either way, so the bits
// are those of the strided tile stores (store_tile_strided). Against that scalar scatter of
// each tile, on the NCHW first layers at 2 threads (best of 70, interleaved): ResNet-50 conv1
// batch 1 1.82 -> 1.68 ms, batch 8 14.4 -> 13.4 ms, DeepSpeech (1 -> 32, 5 x 20) 1.51 -> 1.33 ms.
constexpr int kSeg = 96;
constexpr int kSegTaps = 256;

template <class V, int MaxM>
void conv_row(const ConvRow& r) {
  constexpr int B = 2 * V::W;
  if (r.d_chan == 1 || r.accumulate || r.ntaps > kSegTaps || kSeg % MaxM != 0) {
    conv_row_passes<V, MaxM>(r);
    return;
  }
  alignas(64) float buf[kSeg * B];
  const float* a[kSegTaps];
  for (int64_t x0 = 0; x0 < r.npix; x0 += kSeg) {
    ConvRow seg = r;
    seg.npix = r.npix - x0 < kSeg ? r.npix - x0 : kSeg;
    if (r.pix_off) {
      seg.pix_off = r.pix_off + x0;
    } else {
      for (int t = 0; t < r.ntaps; ++t) a[t] = r.a[t] + x0 * r.a_pix;
      seg.a = a;
    }
    seg.dst = buf;
    seg.d_pix = B;
    seg.d_chan = 1;
    seg.nvalid = B;
    conv_row_passes<V, MaxM>(seg);
    float* d = r.dst + x0 * r.d_pix;
    if (r.d_pix == 1) {
      ::fastconv::cpu::fastk::transpose_avx2(buf, B, d, r.d_chan, seg.npix, r.nvalid);
      continue;
    }
    for (int c = 0; c < r.nvalid; ++c) {
      for (int64_t x = 0; x < seg.npix; ++x) d[c * r.d_chan + x * r.d_pix] = buf[x * B + c];
    }
  }
}

// ---- WgradTile ----------------------------------------------------------------------------

template <class V, int M, bool Full>
FC_UK_INLINE void wgrad_tile_m(const WgradTile& t, const BlockMask<V>& mask) {
  using reg = typename V::reg;
  reg acc[M][2];
  _Pragma("GCC unroll 16")
  for (int m = 0; m < M; ++m) {
    acc[m][0] = t.zero_init ? V::zero() : V::load(t.acc + m * t.acc_stride);
    acc[m][1] = t.zero_init ? V::zero() : V::load(t.acc + m * t.acc_stride + V::W);
  }
  const int64_t g_pix = t.g_pix, a_pix = t.a_pix;
  for (int i = 0; i < t.nrows; ++i) {
    const float* g = t.g[i];
    const float* a = t.a[i];
    for (int64_t p = 0; p < t.npix; ++p) {
      const reg g0 = Full ? V::load(g) : V::load_masked(g, mask.lo);
      const reg g1 = Full ? V::load(g + V::W) : V::load_masked(g + V::W, mask.hi);
      _Pragma("GCC unroll 16")
      for (int m = 0; m < M; ++m) {
        const reg av = V::bcast(a + m);
        acc[m][0] = V::fma(av, g0, acc[m][0]);
        acc[m][1] = V::fma(av, g1, acc[m][1]);
      }
      g += g_pix;
      a += a_pix;
    }
  }
  _Pragma("GCC unroll 16")
  for (int m = 0; m < M; ++m) {
    V::store(t.acc + m * t.acc_stride, acc[m][0]);
    V::store(t.acc + m * t.acc_stride + V::W, acc[m][1]);
  }
}

template <class V, int M>
FC_UK_INLINE void wgrad_dispatch(const WgradTile& t, const BlockMask<V>& mask) {
  if constexpr (M > 0) {
    if (t.m == M) {
      if (t.nvalid == 2 * V::W) {
        wgrad_tile_m<V, M, true>(t, mask);
      } else {
        wgrad_tile_m<V, M, false>(t, mask);
      }
    } else {
      wgrad_dispatch<V, M - 1>(t, mask);
    }
  }
}

template <class V, int MaxM>
void wgrad_tile(const WgradTile& t) {
  const BlockMask<V> mask(t.nvalid);
  wgrad_dispatch<V, MaxM>(t, mask);
}

// ---- DepthwiseRow -------------------------------------------------------------------------

template <class V, int M>
FC_UK_INLINE void depthwise_tile(const DepthwiseRow& r, int64_t x0, const BlockMask<V>& mask) {
  using reg = typename V::reg;
  const bool full = r.nvalid == 2 * V::W;
  reg acc[M][2];
  const reg i0 = r.init ? V::load_masked(r.init, mask.lo) : V::zero();
  const reg i1 = r.init ? V::load_masked(r.init + V::W, mask.hi) : V::zero();
  _Pragma("GCC unroll 16")
  for (int m = 0; m < M; ++m) {
    acc[m][0] = i0;
    acc[m][1] = i1;
  }
  for (int t = 0; t < r.ntaps; ++t) {
    const float* a = r.a[t] + x0 * r.a_pix;
    const reg b0 = full ? V::load(r.b[t]) : V::load_masked(r.b[t], mask.lo);
    const reg b1 = full ? V::load(r.b[t] + V::W) : V::load_masked(r.b[t] + V::W, mask.hi);
    _Pragma("GCC unroll 16")
    for (int m = 0; m < M; ++m) {
      const float* am = a + m * r.a_pix;
      const reg a0 = full ? V::load(am) : V::load_masked(am, mask.lo);
      const reg a1 = full ? V::load(am + V::W) : V::load_masked(am + V::W, mask.hi);
      acc[m][0] = V::fma(a0, b0, acc[m][0]);
      acc[m][1] = V::fma(a1, b1, acc[m][1]);
    }
  }
  float* d = r.dst + x0 * r.d_pix;
  if (r.d_chan != 1) {
    store_tile_strided<V, M>(d, r.d_pix, r.d_chan, r.nvalid, acc);
    return;
  }
  _Pragma("GCC unroll 16")
  for (int m = 0; m < M; ++m) store_block<V>(d + m * r.d_pix, acc[m][0], acc[m][1], r.nvalid, mask);
}

template <class V, int M>
FC_UK_INLINE void depthwise_tail(const DepthwiseRow& r, int64_t x0, int rem,
                                 const BlockMask<V>& mask) {
  if constexpr (M > 0) {
    if (rem == M) {
      depthwise_tile<V, M>(r, x0, mask);
    } else {
      depthwise_tail<V, M - 1>(r, x0, rem, mask);
    }
  }
}

template <class V, int MaxM>
void depthwise_row(const DepthwiseRow& r) {
  const BlockMask<V> mask(r.nvalid);
  int64_t x = 0;
  for (; x + MaxM <= r.npix; x += MaxM) depthwise_tile<V, MaxM>(r, x, mask);
  if (x < r.npix) depthwise_tail<V, MaxM - 1>(r, x, static_cast<int>(r.npix - x), mask);
}

// ---- PixRow -------------------------------------------------------------------------------

// M channels x NV vectors of pixels starting at x0 (Full: all lanes valid; else the lanes of
// `pm`, whose masked-off lanes are neither read nor written). Reduction steps [l0, l1); the
// first block starts from init, later ones from the partial sums stored in dst.
template <class V, int M, int NV, bool Full>
FC_UK_INLINE void pix_tile(const PixRow& r, int64_t x0, int64_t l0, int64_t l1, const BlockMask<V>& pm) {
  using reg = typename V::reg;
  reg acc[M][NV];
  float* d = r.dst + x0;
  _Pragma("GCC unroll 16")
  for (int m = 0; m < M; ++m) {
    _Pragma("GCC unroll 2")
    for (int v = 0; v < NV; ++v) {
      if (l0 != 0) {
        acc[m][v] = Full ? V::load(d + m * r.d_chan + v * V::W)
                         : V::load_masked(d + m * r.d_chan + v * V::W, v == 0 ? pm.lo : pm.hi);
      } else {
        acc[m][v] = r.init ? V::bcast(r.init + m) : V::zero();
      }
    }
  }
  const int64_t a_l = r.a_l, w_l = r.w_l;
  for (int t = 0; t < r.ntaps; ++t) {
    const float* a = r.a[t] + x0 + l0 * a_l;
    const float* w = r.w[t] + l0 * w_l;
    for (int64_t l = l0; l < l1; ++l, a += a_l, w += w_l) {
      reg av[NV];
      _Pragma("GCC unroll 2")
      for (int v = 0; v < NV; ++v) {
        av[v] = Full ? V::load(a + v * V::W) : V::load_masked(a + v * V::W, v == 0 ? pm.lo : pm.hi);
      }
      _Pragma("GCC unroll 16")
      for (int m = 0; m < M; ++m) {
        const reg wb = V::bcast(w + m);
        _Pragma("GCC unroll 2")
        for (int v = 0; v < NV; ++v) acc[m][v] = V::fma(wb, av[v], acc[m][v]);
      }
    }
  }
  _Pragma("GCC unroll 16")
  for (int m = 0; m < M; ++m) {
    _Pragma("GCC unroll 2")
    for (int v = 0; v < NV; ++v) {
      if (Full) {
        V::store(d + m * r.d_chan + v * V::W, acc[m][v]);
      } else {
        V::store_masked(d + m * r.d_chan + v * V::W, v == 0 ? pm.lo : pm.hi, acc[m][v]);
      }
    }
  }
}

// One pass over the row's pixels with M == nvalid channels: whole tiles of two vectors, then
// a masked tail of one or two vectors.
template <class V, int M>
FC_UK_INLINE void pix_pass(const PixRow& r, int64_t l0, int64_t l1) {
  constexpr int T = 2 * V::W;
  const BlockMask<V> full(T);
  int64_t x = 0;
  for (; x + T <= r.npix; x += T) pix_tile<V, M, 2, true>(r, x, l0, l1, full);
  const int rem = static_cast<int>(r.npix - x);
  if (rem == 0) return;
  const BlockMask<V> pm(rem);
  if (rem > V::W) {
    pix_tile<V, M, 2, false>(r, x, l0, l1, pm);
  } else if (rem == V::W) {
    pix_tile<V, M, 1, true>(r, x, l0, l1, pm);
  } else {
    pix_tile<V, M, 1, false>(r, x, l0, l1, pm);
  }
}

template <class V, int M>
FC_UK_INLINE void pix_dispatch(const PixRow& r, int64_t l0, int64_t l1) {
  if constexpr (M > 0) {
    if (r.nvalid == M) {
      pix_pass<V, M>(r, l0, l1);
    } else {
      pix_dispatch<V, M - 1>(r, l0, l1);
    }
  }
}

// The reduction is cut into blocks of l_block steps so that the weights of one block (taps x
// l_block x max_m floats) stay in L1 while every tile of the row uses them; partial sums wait
// in dst (adjacent pixels: plain vector loads and stores).
template <class V, int MaxM>
void pix_row(const PixRow& r) {
  const int64_t lb = (r.l_block > 0 && r.ntaps > 0) ? r.l_block : (r.L > 0 ? r.L : 1);
  for (int64_t l0 = 0; l0 < (r.ntaps > 0 ? r.L : 1); l0 += lb) {
    const int64_t l1 = r.ntaps > 0 ? (l0 + lb < r.L ? l0 + lb : r.L) : 0;
    pix_dispatch<V, MaxM>(r, l0, l1);
  }
}

}  // namespace fastconv::cpu::fastk::FC_UK_NS

#undef FC_UK_INLINE
