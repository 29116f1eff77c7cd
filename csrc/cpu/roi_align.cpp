// CPU kernels of roi_align and its backward (rules: common/roi.h, contracts: schemas/roi.cpp).
//
// The inner loops run over channels with a pixel's channels adjacent (cpu/roi_simd.h), on a
// "grid" of pixels: the channels_last map itself, or, for an NCHW map, a per-box tile holding
// only the rows and columns the box's bilinear taps read (BoxTaps::to_tile), transposed from
// the channel planes up to 64 channels at a time (BoxTaps::gather). Which one an NCHW map uses
// depends on its size against the boxes (use_tiles): many boxes on a small map read it many
// times over, so it is transposed to channels_last once (cpu/layout_transpose.h); few boxes on
// a large map (a P2 level at inference) read a fraction of it, so transposing the whole map
// would cost more than the op. Both give identical numbers (same samples, same order of
// operations); outputs are written straight into either layout.
//
// Forward: boxes are split over threads. Per box, the bilinear taps of every sample row and
// column are computed once (the 2-D weights are their products), then every bin sums its
// samples over a block of channels at once. Backward: race-free units of (image, channel
// block), see cpu/roi_units.h, and for NCHW of (image, channel block, band of rows); the same
// taps, scattered into grad_input itself where it is channels_last, or into a band buffer that
// is then transposed into the NCHW planes.
// float/half/bfloat16 accumulate in float.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "checks/roi.h"
#include "common/roi.h"
#include "cpu/layout_transpose.h"
#include "cpu/roi_simd.h"
#include "cpu/roi_units.h"

namespace fastconv {
namespace {

struct AlignArgs {
  int64_t N, C, H, W, K, PH, PW, sampling_ratio;
  double spatial_scale;
  bool aligned;
};

// Channels per pass over a box's bins: at most this many (the forward's NCHW output tile).
constexpr int64_t kChannelBlock = 64;

// Tiles gather map row r while prefetching row r + kPrefetchRows.
constexpr int64_t kPrefetchRows = 2;

// Channels per tile: a tile of up to (2 * PH * grid_h) x (2 * PW * grid_w) pixels stays within
// ~64 KB (L2), with at least 8 channels so the channel loops still vectorize.
inline int64_t tile_channels(int64_t pixels, int64_t C) {
  const int64_t fit = 16384 / std::max<int64_t>(pixels, 1) / 8 * 8;
  return std::min(C, std::max<int64_t>(8, std::min(kChannelBlock, fit)));
}

// The per-axis taps of one box: ys[ph * grid_h + iy], xs[pw * grid_w + ix].
template <typename acc_t>
struct BoxTaps {
  RoiAlignBox<acc_t> box;
  std::vector<AxisTap<acc_t>> ys, xs;
  std::vector<int64_t> rows, cols;  // tile form: the map rows and columns the taps read
  int64_t row_min = 0, row_max = -1;  // the map rows the taps read: [row_min, row_max]
  int64_t col_min = 0, col_max = -1;  // and columns

  template <typename scalar_t>
  bool compute(const scalar_t* roi, const AlignArgs& a) {
    box = roi_align_box<acc_t>(roi, static_cast<acc_t>(a.spatial_scale), a.PH, a.PW,
                               a.sampling_ratio, a.aligned);
    if (box.grid_h <= 0 || box.grid_w <= 0) return false;  // no samples: zeros
    ys.resize(a.PH * box.grid_h);
    xs.resize(a.PW * box.grid_w);
    for (int64_t p = 0; p < a.PH; ++p)
      for (int64_t i = 0; i < box.grid_h; ++i)
        ys[p * box.grid_h + i] =
            roi_axis_tap(roi_align_sample(box.start_h, box.bin_h, p, i, box.grid_h), a.H);
    for (int64_t p = 0; p < a.PW; ++p)
      for (int64_t i = 0; i < box.grid_w; ++i)
        xs[p * box.grid_w + i] =
            roi_axis_tap(roi_align_sample(box.start_w, box.bin_w, p, i, box.grid_w), a.W);
    row_min = a.H;
    row_max = -1;
    for (const AxisTap<acc_t>& t : ys) {
      if (!in_range(t)) continue;
      row_min = std::min(row_min, t.low);
      row_max = std::max(row_max, t.high);
    }
    col_min = a.W;
    col_max = -1;
    for (const AxisTap<acc_t>& t : xs) {
      if (!in_range(t)) continue;
      col_min = std::min(col_min, t.low);
      col_max = std::max(col_max, t.high);
    }
    return true;
  }

  // Whether a sample of bin row ph has its low row tap in [r0, r1).
  bool bin_row_low_in(int64_t ph, int64_t r0, int64_t r1) const {
    for (int64_t iy = 0; iy < box.grid_h; ++iy) {
      const AxisTap<acc_t>& t = ys[ph * box.grid_h + iy];
      if (in_range(t) && t.low >= r0 && t.low < r1) return true;
    }
    return false;
  }

  // Whether a sample of bin row ph reads a map row in [r0, r1).
  bool bin_row_reads(int64_t ph, int64_t r0, int64_t r1) const {
    for (int64_t iy = 0; iy < box.grid_h; ++iy) {
      const AxisTap<acc_t>& t = ys[ph * box.grid_h + iy];
      if (in_range(t) && ((t.low >= r0 && t.low < r1) || (t.high >= r0 && t.high < r1)))
        return true;
    }
    return false;
  }

  // Renumbers the taps to index rows and cols (the distinct rows and columns read, ascending)
  // instead of the map, so the box reads a tile of rows.size() x cols.size() pixels.
  void to_tile() {
    renumber(ys, rows);
    renumber(xs, cols);
  }

  // Gathers the tile of w channels whose planes (row stride W) start at planes, plane_stride
  // apart, into tile: pixel (r, q) at tile[(r * cols.size() + q) * w], channels adjacent. Row
  // by row: a row's segments in the w planes are transposed into the tile row (blocked, as
  // whole segments when the columns read are contiguous, the usual case), while the segments
  // of the row kPrefetchRows ahead are prefetched (the rows of a plane are scattered over the
  // map: without it every segment is a cache miss waited for in turn). next_planes: the
  // planes of the next tile of this box (its first rows are prefetched at the end), or null.
  template <typename T>
  void gather(const T* planes, int64_t plane_stride, int64_t W, int64_t w, T* tile,
              const T* next_planes, int64_t next_w) const {
    const int64_t n_rows = rows.size(), n_cols = cols.size();
    if (n_cols == 0) return;
    const int64_t first = cols.front(), span = cols.back() - first + 1;
    const auto prefetch_row = [&](const T* p, int64_t r, int64_t channels) {
      for (int64_t c = 0; c < channels; ++c) {
        const T* seg = p + c * plane_stride + rows[r] * W + first;
        for (int64_t e = 0; e < span; e += 64 / sizeof(T)) __builtin_prefetch(seg + e);
        __builtin_prefetch(seg + span - 1);
      }
    };
    for (int64_t r = 0; r < n_rows; ++r) {
      if (r + kPrefetchRows < n_rows) {
        prefetch_row(planes, r + kPrefetchRows, w);
      } else if (next_planes != nullptr && r + kPrefetchRows - n_rows < n_rows) {
        prefetch_row(next_planes, r + kPrefetchRows - n_rows, next_w);
      }
      const T* src = planes + rows[r] * W;
      T* dst = tile + r * n_cols * w;
      if (span == n_cols) {
        cpu::transpose(src + first, plane_stride, dst, w, w, n_cols);
      } else {
        for (int64_t c = 0; c < w; ++c)
          for (int64_t q = 0; q < n_cols; ++q) dst[q * w + c] = src[c * plane_stride + cols[q]];
      }
    }
  }

  // Calls f(y_tap, x_tap) for every in-range sample of bin (ph, pw), in torchvision's order.
  template <typename F>
  void for_each_sample(int64_t ph, int64_t pw, F f) const {
    for (int64_t iy = 0; iy < box.grid_h; ++iy) {
      const AxisTap<acc_t>& ty = ys[ph * box.grid_h + iy];
      if (!in_range(ty)) continue;  // row out of the map
      for (int64_t ix = 0; ix < box.grid_w; ++ix) {
        const AxisTap<acc_t>& tx = xs[pw * box.grid_w + ix];
        if (!in_range(tx)) continue;
        f(ty, tx);
      }
    }
  }

 private:
  static bool in_range(const AxisTap<acc_t>& t) { return t.w_low != acc_t(0) || t.w_high != acc_t(0); }

  static void renumber(std::vector<AxisTap<acc_t>>& taps, std::vector<int64_t>& used) {
    used.clear();
    for (const AxisTap<acc_t>& t : taps) {
      if (!in_range(t)) continue;
      used.push_back(t.low);
      used.push_back(t.high);
    }
    std::sort(used.begin(), used.end());
    used.erase(std::unique(used.begin(), used.end()), used.end());
    const auto index = [&](int64_t v) {
      return std::lower_bound(used.begin(), used.end(), v) - used.begin();
    };
    for (AxisTap<acc_t>& t : taps) {
      if (!in_range(t)) continue;  // never read: keeps low = high = 0
      t.low = index(t.low);
      t.high = index(t.high);
    }
  }
};

// Pixel (row r, column q) of a grid is at r * row + q * col; a pixel's channels are adjacent.
struct Grid {
  int64_t row, col;
};

// A box's bins over n channels of grid g: channel c of bin b goes to dst[b * b_stride +
// c * c_stride]. acc: n accumulators.
template <typename scalar_t, typename acc_t>
void box_bins(const BoxTaps<acc_t>& taps, const scalar_t* grid, Grid g, int64_t n,
              acc_t* acc, scalar_t* dst, int64_t b_stride, int64_t c_stride, const AlignArgs& a) {
  for (int64_t ph = 0; ph < a.PH; ++ph) {
    for (int64_t pw = 0; pw < a.PW; ++pw) {
      std::fill_n(acc, n, acc_t(0));
      taps.for_each_sample(ph, pw, [&](const AxisTap<acc_t>& ty, const AxisTap<acc_t>& tx) {
        const scalar_t* low = grid + ty.low * g.row;
        const scalar_t* high = grid + ty.high * g.row;
        cpu::bilinear_accumulate(acc, low + tx.low * g.col, low + tx.high * g.col,
                                 high + tx.low * g.col, high + tx.high * g.col,
                                 ty.w_low * tx.w_low, ty.w_low * tx.w_high, ty.w_high * tx.w_low,
                                 ty.w_high * tx.w_high, n);
      });
      scalar_t* d = dst + (ph * a.PW + pw) * b_stride;
      for (int64_t c = 0; c < n; ++c) d[c * c_stride] = static_cast<scalar_t>(acc[c] / taps.box.count);
    }
  }
}

// A box's gradient scattered onto n channels of grid g (acc_t), only into the map rows
// [r0, r1), which the grid holds from its row 0 (all rows by default). gk: grad_output at (box,
// first channel) with strides gs; g: n scratch values. Skipping the corners outside the band
// leaves every element's additions in the same order as without bands.
template <typename scalar_t, typename acc_t>
void box_scatter(const BoxTaps<acc_t>& taps, const scalar_t* gk, cpu::Strides4 gs, int64_t n,
                 acc_t* g, acc_t* grid, Grid gd, const AlignArgs& a, int64_t r0 = 0,
                 int64_t r1 = INT64_MAX) {
  const bool whole = r0 <= 0 && r1 >= a.H;
  for (int64_t ph = 0; ph < a.PH; ++ph) {
    if (!whole && !taps.bin_row_reads(ph, r0, r1)) continue;
    for (int64_t pw = 0; pw < a.PW; ++pw) {
      const scalar_t* gb = gk + ph * gs.h + pw * gs.w;
      for (int64_t c = 0; c < n; ++c) g[c] = static_cast<acc_t>(gb[c * gs.c]) / taps.box.count;
      taps.for_each_sample(ph, pw, [&](const AxisTap<acc_t>& ty, const AxisTap<acc_t>& tx) {
        if (whole || (ty.low >= r0 && ty.low < r1)) {
          acc_t* low = grid + (ty.low - r0) * gd.row;
          cpu::scatter(low + tx.low * gd.col, g, ty.w_low * tx.w_low, n);
          cpu::scatter(low + tx.high * gd.col, g, ty.w_low * tx.w_high, n);
        }
        if (whole || (ty.high >= r0 && ty.high < r1)) {
          acc_t* high = grid + (ty.high - r0) * gd.row;
          cpu::scatter(high + tx.low * gd.col, g, ty.w_high * tx.w_low, n);
          cpu::scatter(high + tx.high * gd.col, g, ty.w_high * tx.w_high, n);
        }
      });
    }
  }
}

// Whether an NCHW map is read through per-box tiles rather than transposed whole: when the
// boxes' tiles (estimated from their extents) hold fewer pixels than the map.
template <typename scalar_t>
bool use_tiles(const scalar_t* rois, const AlignArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  int64_t pixels = 0;
  const auto axis = [](acc_t bin, int64_t pooled, int64_t grid, int64_t size) {
    const int64_t span = roi_to_int(roi_ceil(std::abs(bin) * static_cast<acc_t>(pooled))) + 2;
    return std::min({2 * pooled * std::max<int64_t>(grid, 0), span, size});
  };
  for (int64_t k = 0; k < a.K && pixels <= a.N * a.H * a.W; ++k) {
    const RoiAlignBox<acc_t> b = roi_align_box<acc_t>(
        rois + 5 * k, static_cast<acc_t>(a.spatial_scale), a.PH, a.PW, a.sampling_ratio, a.aligned);
    pixels += axis(b.bin_h, a.PH, b.grid_h, a.H) * axis(b.bin_w, a.PW, b.grid_w, a.W);
  }
  return pixels <= a.N * a.H * a.W;
}

// x: (N, C, H, W) as NCHW planes (tiles) or channels_last; out: (K, C, PH, PW) in NCHW or
// channels_last.
template <typename scalar_t>
void forward(const scalar_t* x, bool tiles, const scalar_t* rois, scalar_t* out,
             bool channels_last, const AlignArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = a.C, HW = a.H * a.W, bins = a.PH * a.PW;
  at::parallel_for(0, a.K, 1, [&](int64_t begin, int64_t end) {
    BoxTaps<acc_t> taps;
    std::vector<acc_t> acc(C);
    // (the transposed path below writes all C channels of a box through it at once)
    std::vector<scalar_t> tile, out_tile(channels_last ? 0 : std::max(C, kChannelBlock) * bins);
    for (int64_t k = begin; k < end; ++k) {
      const scalar_t* roi = rois + 5 * k;
      scalar_t* box_out = out + k * bins * C;
      if (!taps.compute(roi, a)) {
        std::fill_n(box_out, bins * C, scalar_t(0));
        continue;
      }
      const int64_t n = static_cast<int64_t>(roi[0]);
      // n_ch channels whose pixels are at grid + c0 go to the output: straight in channels_last;
      // in NCHW through a (channels, bins) tile in L1, copied out as whole rows (strided stores
      // straight into the output would miss L1 every time)
      const auto bins_to_out = [&](const scalar_t* grid, Grid g, int64_t c0, int64_t n_ch) {
        if (channels_last) {
          box_bins(taps, grid, g, n_ch, acc.data(), box_out + c0, C, 1, a);
        } else {
          box_bins(taps, grid, g, n_ch, acc.data(), out_tile.data(), 1, bins, a);
          std::copy_n(out_tile.data(), n_ch * bins, box_out + c0 * bins);
        }
      };
      if (!tiles) {
        bins_to_out(x + n * HW * C, Grid{a.W * C, C}, 0, C);  // the map was transposed to NHWC
        continue;
      }
      taps.to_tile();
      const int64_t rows = taps.rows.size(), cols = taps.cols.size();
      const int64_t width = tile_channels(rows * cols, C);
      tile.resize(rows * cols * width);
      for (int64_t c0 = 0; c0 < C; c0 += width) {
        const int64_t w = std::min(width, C - c0);
        const scalar_t* planes = x + (n * C + c0) * HW;
        const bool last = c0 + width >= C;
        taps.gather(planes, HW, a.W, w, tile.data(), last ? nullptr : planes + width * HW,
                    last ? 0 : std::min(width, C - c0 - width));
        bins_to_out(tile.data(), Grid{cols * w, w}, c0, w);
      }
    }
  });
}

// Bytes of a band buffer (the forward's transposed rows, the backward's gradient): it stays in
// L2 (512 KB) while samples read or scatter into it.
constexpr int64_t kBandBytes = 256 * 1024;
// Rows a band should hold at least: a bin whose samples span rows of two bands is visited once
// per band, so bands of few rows visit it several times over.
constexpr int64_t kBandRows = 8;

// x: (N, C, H, W), NCHW; out: (K, C, PH, PW) in NCHW or channels_last. Units of (image, channel
// block), each sweeping its map rows in bands: a band's rows (and one more, the samples' high
// taps), only the columns its boxes read, are transposed into a buffer with a pixel's
// channels adjacent, and every box adds its samples whose low tap row lies in the band to its
// bins' sums (kept for the whole sweep). A bin thus adds its samples in torchvision's order
// (rows of samples in turn) as long as the sample rows go down the map; those of inverted
// boxes (aligned, negative height) go up, so they are swept a second time bottom up. Each
// map element is read from memory about once, and rows no box reads not at all. Identical
// numbers to the channels_last forward.
template <typename scalar_t>
void forward_nchw(const scalar_t* x, const scalar_t* rois, scalar_t* out, bool channels_last,
                  const AlignArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = a.C, HW = a.H * a.W, bins = a.PH * a.PW;
  const cpu::BoxesByImage boxes = cpu::boxes_by_image(rois, a.K, a.N);
  const int64_t row_bytes = a.W * static_cast<int64_t>(sizeof(scalar_t));
  const int64_t fit = kBandBytes / ((kBandRows + 1) * row_bytes) / 8 * 8;
  const int64_t width = std::min(cpu::channel_blocks(a.N, C).width, std::max<int64_t>(8, fit));
  const int64_t count = (C + width - 1) / width;
  const int64_t band = std::clamp<int64_t>(kBandBytes / (row_bytes * width) - 1, 1, a.H);
  const int64_t bands = (a.H + band - 1) / band;
  at::parallel_for(0, a.N * count, 1, [&](int64_t begin, int64_t end) {
    std::vector<BoxTaps<acc_t>> taps;
    std::vector<char> valid;
    std::vector<acc_t> acc;
    std::vector<scalar_t> buf;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / count, c0 = u % count * width, w = std::min(width, C - c0);
      const int64_t first = boxes.begin[n], nb = boxes.begin[n + 1] - first;
      taps.resize(nb);
      valid.resize(nb);
      for (int64_t j = 0; j < nb; ++j) valid[j] = taps[j].compute(rois + 5 * boxes.order[first + j], a);
      acc.assign(nb * bins * w, acc_t(0));
      const scalar_t* planes = x + (n * C + c0) * HW;
      for (const bool upward : {false, true}) {
        for (int64_t i = 0; i < bands; ++i) {
          const int64_t r0 = (upward ? bands - 1 - i : i) * band, r1 = std::min(a.H, r0 + band);
          const auto reads = [&](int64_t j) {
            return valid[j] && (taps[j].box.bin_h < 0) == upward && taps[j].row_max >= r0 &&
                   taps[j].row_min < r1;
          };
          int64_t lo = a.W, hi = -1;  // the columns read
          for (int64_t j = 0; j < nb; ++j) {
            if (!reads(j)) continue;
            lo = std::min(lo, taps[j].col_min);
            hi = std::max(hi, taps[j].col_max);
          }
          if (hi < lo) continue;
          const int64_t span = hi - lo + 1, r_end = std::min(a.H, r1 + 1);
          buf.resize((r_end - r0) * span * w);
          for (int64_t r = r0; r < r_end; ++r)
            cpu::transpose(planes + r * a.W + lo, HW, buf.data() + (r - r0) * span * w, w, w, span);
          const scalar_t* grid = buf.data() - (r0 * span + lo) * w;  // pixel (r, q) at (r * span + q) * w
          for (int64_t j = 0; j < nb; ++j) {
            if (!reads(j)) continue;
            const BoxTaps<acc_t>& t = taps[j];
            for (int64_t ph = 0; ph < a.PH; ++ph) {
              if (!t.bin_row_low_in(ph, r0, r1)) continue;
              for (int64_t pw = 0; pw < a.PW; ++pw) {
                acc_t* sum = acc.data() + (j * bins + ph * a.PW + pw) * w;
                t.for_each_sample(ph, pw, [&](const AxisTap<acc_t>& ty, const AxisTap<acc_t>& tx) {
                  if (ty.low < r0 || ty.low >= r1) return;
                  const scalar_t* low = grid + ty.low * span * w;
                  const scalar_t* high = grid + ty.high * span * w;
                  cpu::bilinear_accumulate(sum, low + tx.low * w, low + tx.high * w,
                                           high + tx.low * w, high + tx.high * w,
                                           ty.w_low * tx.w_low, ty.w_low * tx.w_high,
                                           ty.w_high * tx.w_low, ty.w_high * tx.w_high, w);
                });
              }
            }
          }
        }
      }
      for (int64_t j = 0; j < nb; ++j) {  // bins' means into the output, zeros for no samples
        const int64_t k = boxes.order[first + j];
        const acc_t* sum = acc.data() + j * bins * w;
        const auto mean = [&](int64_t b, int64_t c) {
          return valid[j] ? static_cast<scalar_t>(sum[b * w + c] / taps[j].box.count) : scalar_t(0);
        };
        if (channels_last) {
          for (int64_t b = 0; b < bins; ++b)
            for (int64_t c = 0; c < w; ++c) out[(k * bins + b) * C + c0 + c] = mean(b, c);
        } else {
          for (int64_t c = 0; c < w; ++c)
            for (int64_t b = 0; b < bins; ++b) out[(k * C + c0 + c) * bins + b] = mean(b, c);
        }
      }
    }
  });
}

// go: (K, C, PH, PW) with strides gs; gi: (N, H, W, C), channels_last. Units of (image,
// channel block) scatter their image's boxes in box order straight into grad_input (through a
// private buffer for half and bfloat16, see cpu/roi_units.h).
template <typename scalar_t>
void backward_channels_last(const scalar_t* go, cpu::Strides4 gs, const scalar_t* rois,
                            scalar_t* gi, const AlignArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = a.H * a.W;
  const cpu::BoxesByImage boxes = cpu::boxes_by_image(rois, a.K, a.N);
  const cpu::ChannelBlocks blocks = cpu::channel_blocks(a.N, a.C);
  at::parallel_for(0, a.N * blocks.count, 1, [&](int64_t begin, int64_t end) {
    BoxTaps<acc_t> taps;
    std::vector<acc_t> buf, g(blocks.width);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / blocks.count, c0 = (u % blocks.count) * blocks.width;
      const int64_t width = std::min(blocks.width, a.C - c0);
      if (width <= 0) continue;
      const cpu::UnitGrad<scalar_t, acc_t> t(gi, buf, n, c0, width, a.C, HW,
                                             /*gi_channels_last=*/true, /*pixel_major=*/true);
      for (int64_t j = boxes.begin[n]; j < boxes.begin[n + 1]; ++j) {
        const int64_t k = boxes.order[j];
        if (!taps.compute(rois + 5 * k, a)) continue;
        box_scatter(taps, go + k * gs.k + c0 * gs.c, gs, width, g.data(), t.data,
                    Grid{a.W * t.pixel_stride, t.pixel_stride}, a);
      }
      t.finish();
    }
  });
}

// go: (K, C, PH, PW) with strides gs; gi: (N, C, H, W), NCHW. Units of (image, channel block,
// band of rows): each scatters its image's boxes, in box order and only the corners in its
// rows, into a zeroed buffer of the band's pixels with their channels adjacent (as the
// channels_last backward does), then transposes the buffer into the channel planes. Every
// element of grad_input is written once, by one unit, its additions in the same order as in
// the channels_last backward: identical numbers in both layouts, for any thread count.
// (Adding into the planes themselves instead means zeroing them first and then adding at
// scattered places all over a map larger than the caches, channel by channel.) Channel blocks
// are narrowed until a band holds kBandRows rows (down to 16 channels).
template <typename scalar_t>
void backward_nchw(const scalar_t* go, cpu::Strides4 gs, const scalar_t* rois, scalar_t* gi,
                   const AlignArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = a.H * a.W;
  const cpu::BoxesByImage boxes = cpu::boxes_by_image(rois, a.K, a.N);
  const int64_t row_bytes = a.W * static_cast<int64_t>(sizeof(acc_t));
  const int64_t fit = kBandBytes / (kBandRows * row_bytes) / 16 * 16;
  const cpu::ChannelBlocks base = cpu::channel_blocks(a.N, a.C);
  const int64_t width = std::min(base.width, std::max<int64_t>(16, fit));
  const int64_t count = (a.C + width - 1) / width;
  const int64_t band = std::clamp<int64_t>(kBandBytes / (row_bytes * width), 1, a.H);
  const int64_t bands = (a.H + band - 1) / band;
  at::parallel_for(0, a.N * count * bands, 1, [&](int64_t begin, int64_t end) {
    BoxTaps<acc_t> taps;
    std::vector<acc_t> buf, g(width);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / (count * bands), c0 = (u / bands % count) * width;
      const int64_t r0 = u % bands * band, r1 = std::min(a.H, r0 + band);
      const int64_t w = std::min(width, a.C - c0);
      buf.assign((r1 - r0) * a.W * w, acc_t(0));
      for (int64_t j = boxes.begin[n]; j < boxes.begin[n + 1]; ++j) {
        const int64_t k = boxes.order[j];
        if (!taps.compute(rois + 5 * k, a) || taps.row_max < r0 || taps.row_min >= r1) continue;
        box_scatter(taps, go + k * gs.k + c0 * gs.c, gs, w, g.data(), buf.data(),
                    Grid{a.W * w, w}, a, r0, r1);
      }
      cpu::transpose(buf.data(), w, gi + (n * a.C + c0) * HW + r0 * a.W, HW, (r1 - r0) * a.W, w);
    }
  });
}

AlignArgs align_args(const RoiGeometry& g, double spatial_scale, int64_t pooled_h,
                     int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
  return {g.n.expect_int(), g.c.expect_int(), g.h.expect_int(), g.w.expect_int(),
          g.k.expect_int(), pooled_h, pooled_w, sampling_ratio, spatial_scale, aligned};
}

at::Tensor roi_align_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                         int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                         bool aligned) {
  const RoiGeometry g =
      check_roi_align(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio);
  const AlignArgs a = align_args(g, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned);
  check_roi_values(rois, a.N, "roi_align");
  const bool channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  at::Tensor out = at::empty({a.K, a.C, a.PH, a.PW},
                             input.options().memory_format(roi_memory_format(channels_last)));
  if (out.numel() == 0) return out;
  const at::Tensor r = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align", [&] {
    static const int fmode = getenv("ROI_FWD") ? atoi(getenv("ROI_FWD")) : 0;
    if (!channels_last && fmode == 0) {
      const at::Tensor x = input.contiguous();
      forward_nchw(x.const_data_ptr<scalar_t>(), r.const_data_ptr<scalar_t>(),
                   out.mutable_data_ptr<scalar_t>(), channels_last, a);
      return;
    }
    const bool tiles = !channels_last && (fmode == 1 ? true : fmode == 2 ? false : use_tiles(r.const_data_ptr<scalar_t>(), a));
    const at::Tensor x = tiles ? input.contiguous() : cpu::to_channels_last(input);
    forward(x.const_data_ptr<scalar_t>(), tiles, r.const_data_ptr<scalar_t>(),
            out.mutable_data_ptr<scalar_t>(), channels_last, a);
  });
  return out;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad_output, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                  int64_t sampling_ratio, bool aligned,
                                  c10::SymIntArrayRef input_size, bool channels_last) {
  const RoiGeometry g = check_roi_backward(grad_output, rois, spatial_scale, pooled_h, pooled_w,
                                           input_size, "_roi_align_backward");
  const AlignArgs a = align_args(g, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned);
  check_roi_values(rois, a.N, "_roi_align_backward");
  at::Tensor gi = cpu::empty_huge_pages(
      {a.N, a.C, a.H, a.W}, grad_output.options().memory_format(roi_memory_format(channels_last)));
  if (gi.numel() == 0) return gi;
  if (a.K == 0) return gi.zero_();
  const at::Tensor r = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(),
                                  "_roi_align_backward", [&] {
    const scalar_t* boxes = r.const_data_ptr<scalar_t>();
    const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
    scalar_t* out = gi.mutable_data_ptr<scalar_t>();
    if (channels_last) {
      backward_channels_last(go, cpu::strides4(grad_output), boxes, out, a);
    } else {
      backward_nchw(go, cpu::strides4(grad_output), boxes, out, a);
    }
  });
  return gi;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("roi_align", roi_align_cpu);
  m.impl("_roi_align_backward", roi_align_backward_cpu);
}

}  // namespace fastconv
