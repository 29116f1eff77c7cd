// CPU kernels of roi_align and its backward (rules: common/roi.h, contracts: schemas/roi.cpp).
//
// The inner loops run over channels with a pixel's channels adjacent (cpu/roi_simd.h), on a
// "grid" of pixels: the channels_last map itself, or, for an NCHW map, a band of its rows
// transposed into a buffer in L2 (cpu/layout_transpose.h), a block of channels at a time. Both
// give identical numbers (same samples, same order of operations), in the input's layout.
//
// Forward: per box, the bilinear taps of every sample row and column are computed once (the
// 2-D weights are their products); every bin sums its samples over a block of channels at
// once. channels_last: boxes split over threads (forward_channels_last); small NCHW maps are
// transposed whole and take the same path, writing each box's NCHW output through a transposed
// tile; large ones are swept in bands of rows by (image, channel block) units (forward_nchw).
// A bin's samples go to cpu/roi_simd.h in one call (sums in registers). Backward: race-free
// units of (image, channel block), see cpu/roi_units.h, for NCHW also of a band of rows; the
// same taps, scattered into grad_input itself where it is channels_last, or into a band buffer
// that is then transposed into the NCHW planes (backward_nchw).
// float/half/bfloat16 accumulate in float.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
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

// Pixel (row r, column q) of a grid is at r * row + q * col; a pixel's channels are adjacent.
struct Grid {
  int64_t row, col;
};

// The per-axis taps of one box: ys[ph * grid_h + iy], xs[pw * grid_w + ix].
template <typename acc_t>
struct BoxTaps {
  RoiAlignBox<acc_t> box;
  std::vector<AxisTap<acc_t>> ys, xs;
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
    // A box whose samples all fall outside the map along one axis reads no pixel at all: both
    // ranges empty (rows in range with no column left a reversed column range that the NCHW
    // backward's fill of reached pixels ran past: a crash).
    if (row_min > row_max || col_min > col_max) {
      row_min = a.H;
      row_max = -1;
      col_min = a.W;
      col_max = -1;
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

  // The in-range samples of bin (ph, pw) whose low row tap lies in [r0, r1), in torchvision's
  // order, as corner offsets in grid g whose origin is map pixel (r0, q0).
  void bin_samples(int64_t ph, int64_t pw, Grid g, int64_t r0, int64_t r1, int64_t q0,
                   std::vector<cpu::BilinearSample<acc_t>>& out) const {
    out.clear();
    for_each_sample(ph, pw, [&](const AxisTap<acc_t>& ty, const AxisTap<acc_t>& tx) {
      if (ty.low < r0 || ty.low >= r1) return;
      const int64_t y0 = (ty.low - r0) * g.row, y1 = (ty.high - r0) * g.row;
      const int64_t x0 = (tx.low - q0) * g.col, x1 = (tx.high - q0) * g.col;
      out.push_back({{y0 + x0, y0 + x1, y1 + x0, y1 + x1},
                     {ty.w_low * tx.w_low, ty.w_low * tx.w_high, ty.w_high * tx.w_low,
                      ty.w_high * tx.w_high}});
    });
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
};

// A box's bins over n channels of grid g: channel c of bin b goes to dst[b * b_stride +
// c * c_stride]. acc: n accumulators; samples: scratch.
template <typename scalar_t, typename acc_t>
void box_bins(const BoxTaps<acc_t>& taps, const scalar_t* grid, Grid g, int64_t n,
              acc_t* acc, std::vector<cpu::BilinearSample<acc_t>>& samples, scalar_t* dst,
              int64_t b_stride, int64_t c_stride, const AlignArgs& a) {
  for (int64_t ph = 0; ph < a.PH; ++ph) {
    for (int64_t pw = 0; pw < a.PW; ++pw) {
      std::fill_n(acc, n, acc_t(0));
      taps.bin_samples(ph, pw, g, 0, a.H, 0, samples);
      cpu::samples_accumulate(acc, grid, samples.data(), samples.size(), n);
      scalar_t* d = dst + (ph * a.PW + pw) * b_stride;
      for (int64_t c = 0; c < n; ++c) d[c * c_stride] = static_cast<scalar_t>(acc[c] / taps.box.count);
    }
  }
}

// A box's gradient scattered onto n channels of grid g (acc_t), only into the map rows
// [r0, r1), which the grid holds from its row 0 (all rows by default). gk: grad_output at (box,
// first channel) with strides gs; g: n scratch values; corners: scratch. Skipping the corners
// outside the band leaves every element's additions in the same order as without bands.
template <typename scalar_t, typename acc_t>
void box_scatter(const BoxTaps<acc_t>& taps, const scalar_t* gk, cpu::Strides4 gs, int64_t n,
                 acc_t* g, std::vector<cpu::Corner<acc_t>>& corners, std::vector<acc_t>& block,
                 acc_t* grid, Grid gd, const AlignArgs& a, int64_t r0 = 0,
                 int64_t r1 = INT64_MAX) {
  const bool whole = r0 <= 0 && r1 >= a.H;
  const int64_t bins = a.PH * a.PW;
  // An NCHW grad_output holds a bin's channels `bins` elements apart (a cache line each): its
  // (n, bins) block is transposed once into (bins, n) so that every bin reads n adjacent values
  // (the strided gather took a third of the NCHW backward's own time on the P2 map)
  const bool transposed = gs.c != 1 && gs.w == 1 && gs.h == a.PW;
  if (transposed) {
    block.resize(bins * n);
    cpu::transpose(gk, gs.c, block.data(), n, n, bins);
  }
  for (int64_t ph = 0; ph < a.PH; ++ph) {
    if (!whole && !taps.bin_row_reads(ph, r0, r1)) continue;
    for (int64_t pw = 0; pw < a.PW; ++pw) {
      corners.clear();
      taps.for_each_sample(ph, pw, [&](const AxisTap<acc_t>& ty, const AxisTap<acc_t>& tx) {
        const int64_t x0 = tx.low * gd.col, x1 = tx.high * gd.col;
        if (whole || (ty.low >= r0 && ty.low < r1)) {
          const int64_t y = (ty.low - r0) * gd.row;
          corners.push_back({y + x0, ty.w_low * tx.w_low});
          corners.push_back({y + x1, ty.w_low * tx.w_high});
        }
        if (whole || (ty.high >= r0 && ty.high < r1)) {
          const int64_t y = (ty.high - r0) * gd.row;
          corners.push_back({y + x0, ty.w_high * tx.w_low});
          corners.push_back({y + x1, ty.w_high * tx.w_high});
        }
      });
      if (corners.empty()) continue;
      if (transposed) {
        const acc_t* gb = block.data() + (ph * a.PW + pw) * n;
        for (int64_t c = 0; c < n; ++c) g[c] = gb[c] / taps.box.count;
      } else {
        const scalar_t* gb = gk + ph * gs.h + pw * gs.w;
        for (int64_t c = 0; c < n; ++c) g[c] = static_cast<acc_t>(gb[c * gs.c]) / taps.box.count;
      }
      cpu::corners_scatter(grid, corners.data(), corners.size(), g, n);
    }
  }
}

// x: (N, H, W, C), channels_last, and out: (K, PH, PW, C), channels_last, or (K, C, PH, PW)
// where out_nchw. Boxes are split over threads; every bin of a box sums its samples over all C
// channels at once, straight into a channels_last output, or into a (bins, C) tile that is
// transposed into the NCHW output's C rows of bins.
template <typename scalar_t>
void forward_channels_last(const scalar_t* x, const scalar_t* rois, scalar_t* out,
                           bool out_nchw, const AlignArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = a.C, HW = a.H * a.W, bins = a.PH * a.PW;
  at::parallel_for(0, a.K, 1, [&](int64_t begin, int64_t end) {
    BoxTaps<acc_t> taps;
    std::vector<acc_t> acc(C);
    std::vector<cpu::BilinearSample<acc_t>> samples;
    std::vector<scalar_t> tile(out_nchw ? bins * C : 0);
    for (int64_t k = begin; k < end; ++k) {
      const scalar_t* roi = rois + 5 * k;
      scalar_t* box_out = out + k * bins * C;  // (bins, C) or (C, bins)
      if (!taps.compute(roi, a)) {
        std::fill_n(box_out, bins * C, scalar_t(0));
        continue;
      }
      const scalar_t* image = x + static_cast<int64_t>(roi[0]) * HW * C;
      box_bins(taps, image, Grid{a.W * C, C}, C, acc.data(), samples,
               out_nchw ? tile.data() : box_out, C, 1, a);
      if (out_nchw) cpu::transpose_dense_streaming(tile.data(), C, box_out, bins, C);
    }
  });
}

// NCHW maps of at most this many bytes (all images) are transposed whole to channels_last for
// the forward (cpu/layout_transpose.h; the copy stays in the last-level cache) and pooled by
// forward_channels_last: on such maps the bands of forward_nchw make few work units (six on
// ra_maskrcnn_box_p4's 3.5 MB map). Larger maps, whose boxes leave much of them unread, go
// through the bands. FASTCONV_ROI_WHOLE_MAP_BYTES overrides it (0: always bands), read on
// every call so that tests can run both paths.
int64_t whole_map_bytes() {
  const char* env = std::getenv("FASTCONV_ROI_WHOLE_MAP_BYTES");
  return env != nullptr ? std::atoll(env) : int64_t{4} << 20;
}

// The taps of every box (valid[k]: whether box k has samples), computed once for all the
// units that visit the box.
template <typename scalar_t, typename acc_t>
void all_box_taps(const scalar_t* rois, const AlignArgs& a, std::vector<BoxTaps<acc_t>>& taps,
                  std::vector<char>& valid) {
  taps.resize(a.K);
  valid.resize(a.K);
  at::parallel_for(0, a.K, 64, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) valid[k] = taps[k].compute(rois + 5 * k, a);
  });
}

// Bytes of a band buffer (the forward's transposed rows, the backward's gradient): it stays in
// L2 (512 KB) while samples read or scatter into it.
constexpr int64_t kBandBytes = 256 * 1024;
// Rows a band should hold at least: a bin whose samples span rows of two bands is visited once
// per band, so bands of few rows visit it several times over.
constexpr int64_t kBandRows = 8;

// x: (N, C, H, W) and out: (K, C, PH, PW), NCHW. Units of (image, channel
// block), each sweeping its map rows in bands: a band's rows (and one more, the samples' high
// taps), only the columns its boxes read, are transposed into a buffer with a pixel's
// channels adjacent, and every box adds its samples whose low tap row lies in the band to its
// bins' sums (kept for the whole sweep). A bin thus adds its samples in torchvision's order
// (rows of samples in turn) as long as the sample rows go down the map; those of inverted
// boxes (aligned, negative height) go up, so they are swept a second time bottom up. Each
// map element is read from memory about once, and rows no box reads not at all. Identical
// numbers to the channels_last forward.
template <typename scalar_t>
void forward_nchw(const scalar_t* x, const scalar_t* rois, scalar_t* out, const AlignArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = a.C, HW = a.H * a.W, bins = a.PH * a.PW;
  const cpu::BoxesByImage boxes = cpu::boxes_by_image(rois, a.K, a.N);
  const int64_t row_bytes = a.W * static_cast<int64_t>(sizeof(scalar_t));
  const int64_t fit = kBandBytes / ((kBandRows + 1) * row_bytes) / 8 * 8;
  const int64_t width = std::min(cpu::channel_blocks(a.N, C).width, std::max<int64_t>(8, fit));
  const int64_t count = (C + width - 1) / width;
  const int64_t band = std::clamp<int64_t>(kBandBytes / (row_bytes * width) - 1, 1, a.H);
  const int64_t bands = (a.H + band - 1) / band;
  std::vector<BoxTaps<acc_t>> all_taps;
  std::vector<char> all_valid;
  all_box_taps(rois, a, all_taps, all_valid);
  at::parallel_for(0, a.N * count, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc;
    std::vector<scalar_t> buf;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / count, c0 = u % count * width, w = std::min(width, C - c0);
      const int64_t first = boxes.begin[n], nb = boxes.begin[n + 1] - first;
      // box j of the image: k = boxes.order[first + j]
      const auto box = [&](int64_t j) -> const BoxTaps<acc_t>& {
        return all_taps[boxes.order[first + j]];
      };
      const auto valid = [&](int64_t j) -> bool { return all_valid[boxes.order[first + j]]; };
      acc.assign(nb * bins * w, acc_t(0));
      const scalar_t* planes = x + (n * C + c0) * HW;
      for (const bool upward : {false, true}) {
        for (int64_t i = 0; i < bands; ++i) {
          const int64_t r0 = (upward ? bands - 1 - i : i) * band, r1 = std::min(a.H, r0 + band);
          const auto reads = [&](int64_t j) {
            return valid(j) && (box(j).box.bin_h < 0) == upward && box(j).row_max >= r0 &&
                   box(j).row_min < r1;
          };
          int64_t lo = a.W, hi = -1;  // the columns read
          for (int64_t j = 0; j < nb; ++j) {
            if (!reads(j)) continue;
            lo = std::min(lo, box(j).col_min);
            hi = std::max(hi, box(j).col_max);
          }
          if (hi < lo) continue;
          // Most of the width: all of it, so that each channel's rows are one run (a transpose
          // call per row kept w short runs in flight; mask_p3 NCHW forward 15.2 -> 12.1 ms).
          if (2 * (hi - lo + 1) > a.W) {
            lo = 0;
            hi = a.W - 1;
          }
          const int64_t span = hi - lo + 1, r_end = std::min(a.H, r1 + 1);
          buf.resize((r_end - r0) * span * w);
          if (span == a.W) {  // the band's rows are one contiguous run of each channel's plane
            cpu::transpose(planes + r0 * a.W, HW, buf.data(), w, w, (r_end - r0) * a.W);
          } else {
            for (int64_t r = r0; r < r_end; ++r)
              cpu::transpose(planes + r * a.W + lo, HW, buf.data() + (r - r0) * span * w, w, w, span);
          }
          for (int64_t j = 0; j < nb; ++j) {
            if (!reads(j)) continue;
            const BoxTaps<acc_t>& t = box(j);
            for (int64_t ph = 0; ph < a.PH; ++ph) {
              if (!t.bin_row_low_in(ph, r0, r1)) continue;
              for (int64_t pw = 0; pw < a.PW; ++pw) {
                acc_t* sum = acc.data() + (j * bins + ph * a.PW + pw) * w;
                t.for_each_sample(ph, pw, [&](const AxisTap<acc_t>& ty, const AxisTap<acc_t>& tx) {
                  if (ty.low < r0 || ty.low >= r1) return;
                  // map pixel (r, q) is at buf[((r - r0) * span + q - lo) * w]
                  const int64_t y0 = (ty.low - r0) * span - lo, y1 = (ty.high - r0) * span - lo;
                  const scalar_t* b = buf.data();
                  cpu::bilinear_accumulate(sum, b + (y0 + tx.low) * w, b + (y0 + tx.high) * w,
                                           b + (y1 + tx.low) * w, b + (y1 + tx.high) * w,
                                           ty.w_low * tx.w_low, ty.w_low * tx.w_high,
                                           ty.w_high * tx.w_low, ty.w_high * tx.w_high, w);
                });
              }
            }
          }
        }
      }
      for (int64_t j = 0; j < nb; ++j) {  // bins' means into the output, zeros for no samples
        scalar_t* box_out = out + (boxes.order[first + j] * C + c0) * bins;  // (w, bins), dense
        if (!valid(j)) {
          std::fill_n(box_out, w * bins, scalar_t(0));
          continue;
        }
        // the means in place (a vector loop), then (bins, w) -> (w, bins) in blocks, not one
        // strided scalar loop with a division per element (mask_p3's NCHW forward at 2
        // threads: 17.3 -> 15.2 ms, best of 40)
        acc_t* sum = acc.data() + j * bins * w;
        const auto count = box(j).box.count;
        for (int64_t e = 0; e < bins * w; ++e) sum[e] = sum[e] / count;
        if constexpr (std::is_same_v<scalar_t, acc_t>) {
          cpu::transpose_dense_streaming(sum, w, box_out, bins, w);
        } else {
          cpu::transpose(sum, w, box_out, bins, bins, w);
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
    std::vector<acc_t> buf, g(blocks.width), block;
    std::vector<cpu::Corner<acc_t>> corners;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / blocks.count, c0 = (u % blocks.count) * blocks.width;
      const int64_t width = std::min(blocks.width, a.C - c0);
      if (width <= 0) continue;
      const cpu::UnitGrad<scalar_t, acc_t> t(gi, buf, n, c0, width, a.C, HW,
                                             /*gi_channels_last=*/true, /*pixel_major=*/true);
      for (int64_t j = boxes.begin[n]; j < boxes.begin[n + 1]; ++j) {
        const int64_t k = boxes.order[j];
        if (!taps.compute(rois + 5 * k, a)) continue;
        box_scatter(taps, go + k * gs.k + c0 * gs.c, gs, width, g.data(), corners, block, t.data,
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
  std::vector<BoxTaps<acc_t>> taps;
  std::vector<char> valid;
  all_box_taps(rois, a, taps, valid);
  at::parallel_for(0, a.N * count * bands, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf, g(width), block;
    std::vector<cpu::Corner<acc_t>> corners;
    std::vector<uint8_t> reached;  // per pixel of the band: whether a box's taps cover it
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / (count * bands), c0 = (u / bands % count) * width;
      const int64_t r0 = u % bands * band, r1 = std::min(a.H, r0 + band);
      const int64_t w = std::min(width, a.C - c0);
      buf.assign((r1 - r0) * a.W * w, acc_t(0));
      reached.assign((r1 - r0) * a.W, 0);
      for (int64_t j = boxes.begin[n]; j < boxes.begin[n + 1]; ++j) {
        const int64_t k = boxes.order[j];
        const BoxTaps<acc_t>& t = taps[k];
        if (!valid[k] || t.row_max < r0 || t.row_min >= r1) continue;
        box_scatter(t, go + k * gs.k + c0 * gs.c, gs, w, g.data(), corners, block, buf.data(),
                    Grid{a.W * w, w}, a, r0, r1);
        for (int64_t r = std::max(r0, t.row_min); r <= std::min(r1 - 1, t.row_max); ++r)
          std::fill(reached.begin() + (r - r0) * a.W + t.col_min,
                    reached.begin() + (r - r0) * a.W + t.col_max + 1, uint8_t{1});
      }
      cpu::transpose_streaming(buf.data(), w, gi + (n * a.C + c0) * HW + r0 * a.W, HW,
                               (r1 - r0) * a.W, w, reached.data());
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
  const auto options = input.options().memory_format(roi_memory_format(channels_last));
  at::Tensor out = cpu::empty_cached({a.K, a.C, a.PH, a.PW}, options);
  if (out.numel() == 0) return out;
  const at::Tensor r = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align", [&] {
    const bool small = input.numel() * input.element_size() <= whole_map_bytes();
    if (channels_last || small) {
      const at::Tensor x = channels_last ? input.contiguous(at::MemoryFormat::ChannelsLast)
                                         : cpu::to_channels_last(input);
      forward_channels_last(x.const_data_ptr<scalar_t>(), r.const_data_ptr<scalar_t>(),
                            out.mutable_data_ptr<scalar_t>(), !channels_last, a);
    } else {
      forward_nchw(input.contiguous().const_data_ptr<scalar_t>(), r.const_data_ptr<scalar_t>(),
                   out.mutable_data_ptr<scalar_t>(), a);
    }
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
  at::Tensor gi = cpu::empty_cached(
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
