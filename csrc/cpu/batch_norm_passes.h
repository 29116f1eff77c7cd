// The passes of the CPU BatchNorm kernels (cpu/batch_norm.cpp) over raw arrays: layouts, the
// fixed chunking of the reductions, and the parallel loops around the vector loops of
// cpu/batch_norm_simd.*. Formulas: common/batch_norm.h.
//
// Every tensor of a call is contiguous in the input's memory format and seen as
// (outer, C, inner): NCHW is (N, C, H*W) and each (n, c) plane is a contiguous run of one
// channel ("planar"); channels_last and (N, C) input are (N*H*W, C, 1), rows of C interleaved
// channels ("rows").
//
// Reductions split a channel's values into fixed chunks (independent of the thread count),
// reduce each chunk in vector lanes (float for float/half/bf16 input, double for double), and
// merge the chunks of a channel in chunk order in double: deterministic and accurate (shifted
// sums per chunk, Chan's merge across chunks). Two schedules give the same chunks and the same
// merge order, hence bit-identical results:
//   channel-fused (planar, enough channels for the threads): each task reduces a block of
//     channels (one, or as many small-plane channels as fit in L2: channel_block) and then runs
//     the elementwise pass over the same planes while they are still in cache, so a training
//     forward or a backward reads x from memory once;
//   chunk-parallel (rows layout, or few channels): one parallel pass of chunk partials, a merge,
//     then one parallel elementwise pass.
#pragma once
#include <ATen/Parallel.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "common/batch_norm.h"
#include "cpu/batch_norm_simd.h"

namespace fastconv {
namespace bn_cpu {

constexpr int64_t kRun = 4096;     // values per planar chunk (fp32 lane sums stay accurate)
constexpr int64_t kRows = 64;      // rows per interleaved chunk (sequential fp32 sums per channel)
constexpr int64_t kGrain = 32768;  // values per parallel task, at least (serial below that)

template <typename scalar_t>
using acc_of = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

struct Layout {
  int64_t outer, c, inner;
  bool planar() const { return inner > 1; }
  int64_t count() const { return outer * inner; }  // values per channel
  int64_t numel() const { return count() * c; }
  int64_t stride() const { return c * inner; }      // from one plane of a channel to the next
  int64_t row_chunks() const { return (outer + kRows - 1) / kRows; }
  // Planar chunks of a channel: kRun values of one plane when planes are longer, else
  // `group` whole consecutive planes (at most kRun values together), so that small planes
  // (7x7, 4x4) do not cost a chunk each.
  int64_t group() const { return inner >= kRun ? 1 : kRun / inner; }
  int64_t per_plane() const { return (inner + kRun - 1) / kRun; }
  int64_t planar_chunks() const { return (outer + group() - 1) / group() * per_plane(); }
};

// Chunk j of channel c: `planes` runs of n values from offset off, l.stride() apart.
struct PlanarChunk {
  int64_t off, planes, n;
};

inline PlanarChunk planar_chunk(const Layout& l, int64_t c, int64_t j) {
  const int64_t o = j / l.per_plane() * l.group(), start = j % l.per_plane() * kRun;
  return {(o * l.c + c) * l.inner + start, std::min(l.group(), l.outer - o),
          std::min(kRun, l.inner - start)};
}

// The channel-fused schedule pays when every thread gets a few channels.
inline bool channel_fused(const Layout& l) {
  return l.planar() && l.c >= 4 * int64_t(at::get_num_threads());
}

// Outputs at least this large are written with non-temporal stores: half the last-level cache,
// above which an output and its input do not both stay in cache anyway; streaming the output
// then saves the read of its destination lines and leaves the cache to the inputs, which the
// next pass reads again (FASTCONV_BN_STREAM_BYTES overrides it, for measurements).
inline int64_t stream_threshold_bytes() {
  static const int64_t bytes = [] {
    if (const char* env = std::getenv("FASTCONV_BN_STREAM_BYTES")) return int64_t(std::atoll(env));
    const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    return int64_t(llc > 0 ? llc : 32L << 20) / 2;
  }();
  return bytes;
}

inline bool stream_output(const Layout& l, size_t element_size) {
  return l.numel() * int64_t(element_size) >= stream_threshold_bytes();
}

// Runs body(first, last) over [0, n) in parallel with at least `values` / `per_item` items
// per task (serial when the whole range is smaller than one grain).
template <typename F>
void parallel_items(int64_t n, int64_t per_item, F body) {
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(per_item, 1));
  at::parallel_for(0, n, grain, body);
}

// Calls f(chunk) for the chunks of channel c of a planar layout, in chunk order.
template <typename F>
void planar_chunks_of_channel(const Layout& l, int64_t c, F f) {
  for (int64_t j = 0; j < l.planar_chunks(); ++j) f(planar_chunk(l, c, j));
}

// Calls f(c, chunk index, chunk) for every planar chunk, in parallel.
template <typename F>
void for_each_planar_chunk(const Layout& l, F f) {
  const int64_t total = l.planar_chunks();
  parallel_items(l.c * total, std::min(l.count(), kRun), [&](int64_t b, int64_t e) {
    for (int64_t u = b; u < e; ++u) f(u / total, u % total, planar_chunk(l, u / total, u % total));
  });
}

// Calls f(chunk, first row, rows) for every block of kRows rows, in parallel.
template <typename F>
void for_each_row_chunk(const Layout& l, F f) {
  parallel_items(l.row_chunks(), kRows * l.c, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) f(k, k * kRows, std::min(kRows, l.outer - k * kRows));
  });
}

// ---- statistics -------------------------------------------------------------------------------
// The pivot of a chunk's shifted sums (welford_from_shifted): the mean of up to kPivotValues of
// its first values, `stride` apart. One value as the pivot can lie several standard deviations
// from the chunk's mean, and m2 = s2 - s1 * d then cancels: on a conv output (8x4x6x6, mean ~0,
// std 0.5) the variance came out 2.7e-6 off float64 (relative) and the normalized output 4e-6,
// against 3e-7 for torch's BatchNorm.
constexpr int64_t kPivotValues = 16;
template <typename A, typename scalar_t>
A chunk_pivot(const scalar_t* first, int64_t count, int64_t stride) {
  const int64_t n = std::min(count, kPivotValues);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(first[i * stride]);
  return static_cast<A>(sum / static_cast<double>(n));
}

template <typename scalar_t>
Welford<double> chunk_stats(const scalar_t* x, const Layout& l, const PlanarChunk& ch) {
  using A = acc_of<scalar_t>;
  const A pivot = chunk_pivot<A>(x + ch.off, ch.n, 1);
  A s1 = 0, s2 = 0;
  cpu::bn_run_sums(x + ch.off, ch.planes, ch.n, l.stride(), 1, &pivot, &s1, &s2);
  return welford_from_shifted<double>(ch.planes * ch.n, pivot, s1, s2);
}

// Channels per block of the channel-fused schedule: as many whole channels as fit 1 MiB of the
// tensors that the reduction reads and the elementwise pass reads again (`bytes_per_value`
// over them), so that the second pass finds the block in cache (L2, else the last-level cache)
// and each plane row of the block is a long contiguous run for the prefetchers (measured on
// 8x2048x7x7 and 8x1024x14x14 backward, 1 thread: 1 MiB ~15% faster than 256 KiB, both
// 2-2.5x faster than channel by channel); where chunks are pieces of one plane (planes of more
// than kRun values), one channel. FASTCONV_BN_BLOCK_BYTES overrides it, for measurements;
// results do not depend on it.
constexpr int64_t kMaxBlock = 256;
inline int64_t block_bytes() {
  static const int64_t bytes = [] {
    const char* env = std::getenv("FASTCONV_BN_BLOCK_BYTES");
    return env ? int64_t(std::atoll(env)) : int64_t{1} << 20;
  }();
  return bytes;
}

inline int64_t channel_block(const Layout& l, int64_t bytes_per_value) {
  if (l.per_plane() > 1) return 1;
  return std::clamp<int64_t>(block_bytes() / std::max<int64_t>(1, l.count() * bytes_per_value), 1,
                             kMaxBlock);
}

// Statistics of the b (<= kMaxBlock; 1 when chunks are pieces of planes) consecutive channels
// from c0 of a planar layout, merged in chunk order into w[0, b): the chunks of chunk_stats,
// read plane row by plane row (adjacent planes of the b channels: long contiguous runs).
template <typename scalar_t>
void block_stats_planar(const scalar_t* x, const Layout& l, int64_t c0, int64_t b,
                        Welford<double>* w) {
  using A = acc_of<scalar_t>;
  A pivot[kMaxBlock], s1[kMaxBlock], s2[kMaxBlock];
  std::fill(w, w + b, Welford<double>{0, 0, 0});
  planar_chunks_of_channel(l, c0, [&](const PlanarChunk& ch) {
    for (int64_t j = 0; j < b; ++j) {
      pivot[j] = chunk_pivot<A>(x + ch.off + j * l.inner, ch.n, 1);
      s1[j] = s2[j] = A(0);
    }
    cpu::bn_run_sums(x + ch.off, ch.planes, ch.n, l.stride(), b, pivot, s1, s2);
    for (int64_t j = 0; j < b; ++j) {
      w[j] = welford_merge(w[j], welford_from_shifted<double>(ch.planes * ch.n, pivot[j], s1[j],
                                                              s2[j]));
    }
  });
}

// Statistics of every channel with the chunk-parallel schedule, written by out(c, welford).
template <typename scalar_t, typename Out>
void chunked_stats(const scalar_t* x, const Layout& l, Out out) {
  using A = acc_of<scalar_t>;
  if (l.planar()) {
    const int64_t total = l.planar_chunks();
    std::vector<Welford<double>> part(l.c * total);  // part[c * total + chunk]
    for_each_planar_chunk(l, [&](int64_t c, int64_t k, const PlanarChunk& ch) {
      part[c * total + k] = chunk_stats(x, l, ch);
    });
    for (int64_t c = 0; c < l.c; ++c) {
      Welford<double> w{0, 0, 0};
      for (int64_t k = 0; k < total; ++k) w = welford_merge(w, part[c * total + k]);
      out(c, w);
    }
    return;
  }
  const int64_t total = l.row_chunks();
  // per chunk: pivot, s1, s2 for its C channels ([chunk][c]); s1 and s2 zero-initialized
  std::vector<A> pivot(total * l.c), s1(total * l.c, A(0)), s2(total * l.c, A(0));
  for_each_row_chunk(l, [&](int64_t k, int64_t r0, int64_t rows) {
    A* p = pivot.data() + k * l.c;
    for (int64_t c = 0; c < l.c; ++c) p[c] = chunk_pivot<A>(x + r0 * l.c + c, rows, l.c);
    cpu::bn_rows_sums(x + r0 * l.c, rows, l.c, p, s1.data() + k * l.c, s2.data() + k * l.c);
  });
  // Merge: every chunk's sums re-centred on the first chunk's pivot P, in double, in chunk
  // order: with d = p_k - P, sum(x - P) = s1 + n d and sum((x - P)^2) = s2 + d (2 s1 + n d).
  // Exact in exact arithmetic like Chan's formula, but division-free and vectorized over the
  // channels: many small chunks cost little to merge.
  std::vector<double> p0(pivot.begin(), pivot.begin() + l.c), t1(l.c, 0.0), t2(l.c, 0.0);
  for (int64_t k = 0; k < total; ++k) {
    const double n = double(std::min(kRows, l.outer - k * kRows));
    const A* pk = pivot.data() + k * l.c;
    const A* a1 = s1.data() + k * l.c;
    const A* a2 = s2.data() + k * l.c;
#pragma omp simd
    for (int64_t c = 0; c < l.c; ++c) {
      const double d = double(pk[c]) - p0[c], u = double(a1[c]);
      t2[c] += double(a2[c]) + d * (2.0 * u + n * d);
      t1[c] += u + n * d;
    }
  }
  for (int64_t c = 0; c < l.c; ++c) {
    out(c, welford_from_shifted<double>(double(l.outer), p0[c], t1[c], t2[c]));
  }
}

// ---- normalize (+ residual) (+ relu) ----------------------------------------------------------
// The b consecutive channels from c0 of a planar layout (the channel-fused schedule): plane row
// by plane row, or channel c0's planes when b == 1; alpha, beta indexed by channel.
template <typename scalar_t>
void apply_block(const scalar_t* x, const scalar_t* res, scalar_t* y, const Layout& l, int64_t c0,
                 int64_t b, const acc_of<scalar_t>* alpha, const acc_of<scalar_t>* beta,
                 bool relu, bool stream) {
  if (b == 1) {
    const int64_t off = c0 * l.inner;
    cpu::bn_run_apply(x + off, res ? res + off : nullptr, y + off, l.outer, l.inner, l.stride(),
                      alpha[c0], beta[c0], relu, stream);
    return;
  }
  for (int64_t o = 0; o < l.outer; ++o) {
    const int64_t off = (o * l.c + c0) * l.inner;
    cpu::bn_planes_apply(x + off, res ? res + off : nullptr, y + off, b, c0, l.c, l.inner, alpha,
                         beta, relu, stream);
  }
}

// The elementwise passes that follow a reduction walk each task's range backwards, in blocks of
// `block` items (each block forwards): what the reduction read last is the likeliest to be still
// in cache (the last-level cache for a tensor about its size). body(first, last).
template <typename F>
void parallel_items_backwards(int64_t n, int64_t per_item, int64_t block, F body) {
  parallel_items(n, per_item, [&](int64_t b, int64_t e) {
    for (int64_t hi = e; hi > b; hi -= block) body(std::max(b, hi - block), hi);
  });
}

// Runs body(first plane, end plane) over the NCHW planes (plane p = (n, c) at p * inner), in
// memory order, in parallel, backwards; blocks of up to kRun values.
template <typename F>
void for_each_planes_block(const Layout& l, F body) {
  parallel_items_backwards(l.outer * l.c, l.inner, std::max<int64_t>(1, kRun / l.inner), body);
}

template <typename scalar_t>
void apply(const scalar_t* x, const scalar_t* res, scalar_t* y, const Layout& l,
           const acc_of<scalar_t>* alpha, const acc_of<scalar_t>* beta, bool relu) {
  const bool stream = stream_output(l, sizeof(scalar_t));
  if (l.planar()) {
    for_each_planes_block(l, [&](int64_t b, int64_t e) {
      const int64_t off = b * l.inner;
      cpu::bn_planes_apply(x + off, res ? res + off : nullptr, y + off, e - b, b % l.c, l.c,
                           l.inner, alpha, beta, relu, stream);
    });
  } else {
    parallel_items_backwards(l.outer, l.c, kRows, [&](int64_t b, int64_t e) {
      cpu::bn_rows_apply(x + b * l.c, res ? res + b * l.c : nullptr, y + b * l.c, e - b, l.c,
                         alpha, beta, relu, stream);
    });
  }
}

// ---- backward ---------------------------------------------------------------------------------
// Per-channel coefficients of the backward passes (compute type): the forward's alpha, beta
// (the ReLU mask), mean, and grad_input = g * k_g + x * k_x + k_0.
template <typename A>
struct BackwardCoefs {
  std::vector<A> alpha, beta, mean, k_g, k_x, k_0;
};

template <typename scalar_t>
void chunk_sums(const scalar_t* dy, const scalar_t* x, const scalar_t* res, const Layout& l,
                int64_t c, const PlanarChunk& ch, const BackwardCoefs<acc_of<scalar_t>>& k,
                bool relu, acc_of<scalar_t>* a, acc_of<scalar_t>* b) {
  const int64_t off = ch.off;
  cpu::bn_run_backward_sums(dy + off, x + off, res ? res + off : nullptr, ch.planes, ch.n,
                            l.stride(), 1, &k.alpha[c], &k.beta[c], &k.mean[c], relu, a, b);
}

// The masked sums (sum g, sum g (x - mean)) of the b (<= kMaxBlock) consecutive channels from c0
// of a planar layout, in chunk order, into s_dy[0, b), s_dyx[0, b): chunk_sums' chunks, read
// plane row by plane row as block_stats_planar reads them.
template <typename scalar_t>
void block_sums_planar(const scalar_t* dy, const scalar_t* x, const scalar_t* res,
                       const Layout& l, int64_t c0, int64_t b,
                       const BackwardCoefs<acc_of<scalar_t>>& k, bool relu, double* s_dy,
                       double* s_dyx) {
  using A = acc_of<scalar_t>;
  A a[kMaxBlock], d[kMaxBlock];
  std::fill(s_dy, s_dy + b, 0.0);
  std::fill(s_dyx, s_dyx + b, 0.0);
  planar_chunks_of_channel(l, c0, [&](const PlanarChunk& ch) {
    std::fill(a, a + b, A(0));
    std::fill(d, d + b, A(0));
    const int64_t off = ch.off;
    cpu::bn_run_backward_sums(dy + off, x + off, res ? res + off : nullptr, ch.planes, ch.n,
                              l.stride(), b, k.alpha.data() + c0, k.beta.data() + c0,
                              k.mean.data() + c0, relu, a, d);
    for (int64_t j = 0; j < b; ++j) {
      s_dy[j] += a[j];
      s_dyx[j] += d[j];
    }
  });
}

// The sums of every channel with the chunk-parallel schedule (s_dy, s_dyx of size C).
template <typename scalar_t>
void chunked_sums(const scalar_t* dy, const scalar_t* x, const scalar_t* res, const Layout& l,
                  const BackwardCoefs<acc_of<scalar_t>>& k, bool relu, double* s_dy,
                  double* s_dyx) {
  using A = acc_of<scalar_t>;
  if (l.planar()) {
    const int64_t total = l.planar_chunks();
    std::vector<double> part_dy(l.c * total), part_dyx(l.c * total);  // [c][chunk]
    for_each_planar_chunk(l, [&](int64_t c, int64_t i, const PlanarChunk& ch) {
      A a = 0, b = 0;
      chunk_sums(dy, x, res, l, c, ch, k, relu, &a, &b);
      part_dy[c * total + i] = a;
      part_dyx[c * total + i] = b;
    });
    for (int64_t c = 0; c < l.c; ++c) {
      double a = 0, b = 0;
      for (int64_t i = 0; i < total; ++i) {
        a += part_dy[c * total + i];
        b += part_dyx[c * total + i];
      }
      s_dy[c] = a;
      s_dyx[c] = b;
    }
    return;
  }
  const int64_t total = l.row_chunks();
  std::vector<A> part_dy(total * l.c, A(0)), part_dyx(total * l.c, A(0));  // [chunk][c]
  for_each_row_chunk(l, [&](int64_t i, int64_t r0, int64_t rows) {
    const int64_t off = r0 * l.c;
    cpu::bn_rows_backward_sums(dy + off, x + off, res ? res + off : nullptr, rows, l.c,
                               k.alpha.data(), k.beta.data(), k.mean.data(), relu,
                               part_dy.data() + i * l.c, part_dyx.data() + i * l.c);
  });
  for (int64_t c = 0; c < l.c; ++c) {
    double a = 0, b = 0;
    for (int64_t i = 0; i < total; ++i) {
      a += part_dy[i * l.c + c];
      b += part_dyx[i * l.c + c];
    }
    s_dy[c] = a;
    s_dyx[c] = b;
  }
}

// The b consecutive channels from c0 of a planar layout (the channel-fused schedule), as
// apply_block.
template <typename scalar_t>
void backward_apply_block(const scalar_t* dy, const scalar_t* x, const scalar_t* res,
                          scalar_t* dx, scalar_t* dres, const Layout& l, int64_t c0, int64_t b,
                          const BackwardCoefs<acc_of<scalar_t>>& k, bool relu, bool stream) {
  if (b == 1) {
    const int64_t off = c0 * l.inner;
    cpu::bn_run_backward_apply(dy + off, x + off, res ? res + off : nullptr, dx + off,
                               dres ? dres + off : nullptr, l.outer, l.inner, l.stride(),
                               k.alpha[c0], k.beta[c0], k.k_g[c0], k.k_x[c0], k.k_0[c0], relu,
                               stream);
    return;
  }
  for (int64_t o = 0; o < l.outer; ++o) {
    const int64_t off = (o * l.c + c0) * l.inner;
    cpu::bn_planes_backward_apply(dy + off, x + off, res ? res + off : nullptr, dx + off,
                                  dres ? dres + off : nullptr, b, c0, l.c, l.inner,
                                  k.alpha.data(), k.beta.data(), k.k_g.data(), k.k_x.data(),
                                  k.k_0.data(), relu, stream);
  }
}

// grad_input (and grad_residual when dres is given) of every channel, in parallel.
template <typename scalar_t>
void backward_apply(const scalar_t* dy, const scalar_t* x, const scalar_t* res, scalar_t* dx,
                    scalar_t* dres, const Layout& l, const BackwardCoefs<acc_of<scalar_t>>& k,
                    bool relu) {
  const bool stream = stream_output(l, sizeof(scalar_t));
  if (l.planar()) {
    for_each_planes_block(l, [&](int64_t b, int64_t e) {
      const int64_t off = b * l.inner;
      cpu::bn_planes_backward_apply(dy + off, x + off, res ? res + off : nullptr, dx + off,
                                    dres ? dres + off : nullptr, e - b, b % l.c, l.c, l.inner,
                                    k.alpha.data(), k.beta.data(), k.k_g.data(), k.k_x.data(),
                                    k.k_0.data(), relu, stream);
    });
  } else {
    parallel_items_backwards(l.outer, l.c, kRows, [&](int64_t b, int64_t e) {
      const int64_t off = b * l.c;
      cpu::bn_rows_backward_apply(dy + off, x + off, res ? res + off : nullptr, dx + off,
                                  dres ? dres + off : nullptr, e - b, l.c, k.alpha.data(),
                                  k.beta.data(), k.k_g.data(), k.k_x.data(), k.k_0.data(), relu,
                                  stream);
    });
  }
}

}  // namespace bn_cpu
}  // namespace fastconv
