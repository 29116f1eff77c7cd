// CPU kernels of roi_pool and its backward (rules: common/roi.h, contracts: schemas/roi.cpp).
//
// Forward: boxes split over threads; every bin takes the running maximum over its pixels for
// all C channels, 64 (AVX-512) or 32 at a time in registers (channels_last data,
// cpu/roi_simd.h), straight into a channels_last output, or into a tile transposed into an
// NCHW one; an NCHW input is transposed once. Backward:
// race-free units of (image, channel block) that add grad_output at the argmax in box order
// (cpu/roi_units.h), prefetching the next box's block. An NCHW argmax adds channel by channel
// into channel planes (grad_output read in place where a channel's bins are adjacent, else
// through a small transposed copy); a channels_last one goes to units of (image, band of rows)
// instead, each adding bin by bin over all channels what lands in its rows, into a pixel-major
// gradient (grad_output read in place where a bin's channels are adjacent).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cfloat>
#include <type_traits>
#include <vector>

#include "checks/roi.h"
#include "common/roi.h"
#include "cpu/layout_transpose.h"
#include "cpu/roi_simd.h"
#include "cpu/roi_units.h"

namespace fastconv {
namespace {

struct PoolArgs {
  int64_t N, C, H, W, K, PH, PW;
  double spatial_scale;
};

// Pixels of [start, start + size) inside [0, limit): a box's extent on the map along one axis.
inline int64_t inside(int64_t start, int64_t size, int64_t limit) {
  return std::max<int64_t>(0, std::min(limit, start + size) - std::max<int64_t>(0, start));
}

// Splits boxes [0, K) into `parts` ranges of about equal work, part p = [first[p], first[p + 1]):
// a box costs the pixels its bins read (inside the map) and its bins (written). Proposal boxes
// differ up to ~20x in area: halves of 64 boxes of the roi suite's rows differed by 8%.
template <typename scalar_t>
std::vector<int64_t> balanced_box_ranges(const scalar_t* rois, const PoolArgs& a,
                                         int64_t parts) {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<double> cost(a.K + 1, 0.0);  // cost[k]: boxes before k
  for (int64_t k = 0; k < a.K; ++k) {
    const RoiPoolBox b = roi_pool_box<acc_t>(rois + 5 * k, static_cast<acc_t>(a.spatial_scale));
    cost[k + 1] = cost[k] + static_cast<double>(inside(b.start_h, b.roi_h, a.H) *
                                                    inside(b.start_w, b.roi_w, a.W) +
                                                a.PH * a.PW);
  }
  std::vector<int64_t> first(parts + 1, a.K);
  first[0] = 0;
  for (int64_t p = 1, k = 0; p < parts; ++p) {
    while (k < a.K && cost[k] < cost[a.K] * static_cast<double>(p) / parts) ++k;
    first[p] = k;
  }
  return first;
}

// x: (N, H, W, C); out and argmax: (K, C, PH, PW) in NCHW or channels_last.
template <typename scalar_t>
void forward(const scalar_t* x, const scalar_t* rois, scalar_t* out, int32_t* argmax,
             bool channels_last, const PoolArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = a.C, bins = a.PH * a.PW;
  const int64_t parts = std::min<int64_t>(at::get_num_threads(), a.K);
  const std::vector<int64_t> first = balanced_box_ranges(rois, a, parts);
  at::parallel_for(0, parts, 1, [&](int64_t part_begin, int64_t part_end) {
    const int64_t begin = first[part_begin], end = first[part_end];
    std::vector<RoiPoolRange> rows(a.PH), cols(a.PW);
    // NCHW: a box's bins go into (bins, C) tiles (100 KB each for C = 512, in L2) as they do
    // into a channels_last output, then into the box's (C, bins) block of the output (contiguous)
    // as whole lines with non-temporal stores. Storing each bin's channels 49 elements apart
    // instead took 15-16 ms against 12 ms at 1 thread on rp_fastrcnn_vgg16_train (CPU time under
    // load); the tile transposed with ordinary stores (every output line read before it was
    // written), 16.0 / 12.7 ms against 13.9 / 10.4 ms now on the train / test rows (1 thread,
    // CPU time, interleaved, load 3 on 2 cores). Passes of 64 channels (tiles in L1) measured
    // 15.1 / 12.8 ms.
    std::vector<scalar_t> tile(channels_last ? 0 : bins * C);
    std::vector<int32_t> tile_idx(tile.size());
    for (int64_t k = begin; k < end; ++k) {
      const scalar_t* roi = rois + 5 * k;
      const RoiPoolBox box = roi_pool_box<acc_t>(roi, static_cast<acc_t>(a.spatial_scale));
      for (int64_t ph = 0; ph < a.PH; ++ph)
        rows[ph] = roi_pool_range<acc_t>(box.start_h, box.roi_h, a.PH, ph, a.H);
      for (int64_t pw = 0; pw < a.PW; ++pw)
        cols[pw] = roi_pool_range<acc_t>(box.start_w, box.roi_w, a.PW, pw, a.W);
      const scalar_t* image = x + static_cast<int64_t>(roi[0]) * a.H * a.W * C;
      scalar_t* dst = channels_last ? out + k * bins * C : tile.data();
      int32_t* dst_idx = channels_last ? argmax + k * bins * C : tile_idx.data();
      for (int64_t ph = 0; ph < a.PH; ++ph)  // bin by bin, all channels
        for (int64_t pw = 0; pw < a.PW; ++pw) {
          const int64_t b = ph * a.PW + pw;
          cpu::bin_max(image, a.W, C, rows[ph].start, rows[ph].end, cols[pw].start,
                       cols[pw].end, dst + b * C, dst_idx + b * C, 1, C);
        }
      if (!channels_last) {
        cpu::transpose_dense_streaming(tile.data(), C, out + k * C * bins, bins, C);
        cpu::transpose_dense_streaming(tile_idx.data(), C, argmax + k * C * bins, bins, C);
      }
    }
  });
}

// The gradient of pixel i (at base[i * pixel_stride]) += v, for argmax i: negative i (an empty
// bin) adds nothing, i >= HW is an IndexError.
template <typename scalar_t, typename acc_t>
C10_ALWAYS_INLINE void add_at(acc_t* base, int64_t pixel_stride, int64_t HW, int32_t i,
                              scalar_t v) {
  if (C10_LIKELY(static_cast<uint64_t>(static_cast<int64_t>(i)) < static_cast<uint64_t>(HW))) {
    base[i * pixel_stride] += static_cast<acc_t>(v);
  } else if (C10_UNLIKELY(i >= 0)) {
    fail_index_out_of_range("_roi_pool_backward", i, HW);
  }
}

// A box's (w channels) x (PH x PW bins) block of grad_output or argmax at p (strides s), as
// w runs of PH * PW bins: p itself where every channel's bins are adjacent (NCHW, or expanded
// from it), else a copy in tile: a blocked transpose where each bin's channels are adjacent
// (channels_last), element by element otherwise. Reading a channels_last block channel by
// channel in place (49 runs 2 KB apart per channel) doubled the backward's time on
// rp_fastrcnn_vgg16_train per tensor in that layout (8 ms -> 15 ms with argmax channels_last,
// 23 ms with both; 1 thread, CPU time, load 6 on 2 cores).
template <typename T>
const T* bins_by_channel(const T* p, cpu::Strides4 s, int64_t w, int64_t PH, int64_t PW,
                         std::vector<T>& tile) {
  const int64_t bins = PH * PW;
  if ((s.w == 1 && s.h == PW) || w == 0) return p;
  tile.resize(w * bins);
  if (s.c == 1 && s.h == PW * s.w) {  // (bins, w) with leading dimension s.w
    cpu::transpose(p, s.w, tile.data(), bins, bins, w);
  } else {
    for (int64_t c = 0; c < w; ++c)
      for (int64_t ph = 0; ph < PH; ++ph)
        for (int64_t pw = 0; pw < PW; ++pw)
          tile[c * bins + ph * PW + pw] = p[c * s.c + ph * s.h + pw * s.w];
  }
  return tile.data();
}

// One box's bins for w channels: channel c's bins, in bin order, into its plane at planes + c *
// plane_stride (a plane stays in L1 while its bins add). am and go hold each channel's bins
// adjacent (bins_by_channel), channel c's at c * bins.
template <typename scalar_t, typename acc_t, typename Prefetch>
void add_box(acc_t* planes, int64_t plane_stride, int64_t HW, int64_t w, int64_t bins,
             const int32_t* am, const scalar_t* go, const Prefetch& prefetch) {
  for (int64_t c = 0; c < w; ++c) {
    prefetch(c);
    acc_t* plane = planes + c * plane_stride;
    const int32_t* a = am + c * bins;
    const scalar_t* g = go + c * bins;
    for (int64_t b = 0; b < bins; ++b) add_at(plane, 1, HW, a[b], g[b]);
  }
}

// A box's block of grad_output at p (strides s) as PH x PW runs of w channels, bin (ph, pw)'s
// at ptr + ph * h + pw * w: p itself where each bin's channels are adjacent, else a copy in
// tile (a blocked transpose from NCHW, element by element otherwise).
template <typename T>
struct BinRuns {
  const T* ptr;
  int64_t h, w;
};

// Only rows [ph0, ph1) of bins are copied; bin (ph, pw) is at ptr + (ph - ph0) * h + pw * w.
template <typename T>
BinRuns<T> channels_by_bin(const T* p, cpu::Strides4 s, int64_t w, int64_t ph0, int64_t ph1,
                           int64_t PW, std::vector<T>& tile) {
  p += ph0 * s.h;
  if (s.c == 1 || w == 1) return {p, s.h, s.w};
  const int64_t PH = ph1 - ph0;
  tile.resize(w * PH * PW);
  if (s.w == 1 && s.h == PW) {  // (w, bins) with leading dimension s.c
    cpu::transpose(p, s.c, tile.data(), w, w, PH * PW);
  } else {
    for (int64_t ph = 0; ph < PH; ++ph)
      for (int64_t pw = 0; pw < PW; ++pw)
        for (int64_t c = 0; c < w; ++c)
          tile[(ph * PW + pw) * w + c] = p[c * s.c + ph * s.h + pw * s.w];
  }
  return {tile.data(), PW * w, w};
}

// Row bands per image for the channels_last-argmax backward: one per image when there are
// enough images for the threads, else halves, quarters, ... of the rows.
inline int64_t row_bands(int64_t N, int64_t H) {
  int64_t bands = 1;
  while (N * bands < at::get_num_threads() && 2 * bands <= H) bands *= 2;
  return bands;
}

// First rows of the bands of each image: band b of image n is rows [first[n * (bands + 1) + b],
// first[n * (bands + 1) + b + 1]), with about equal work: the pixels of the image's boxes in
// each row (inside the map). Equal rows gave bands of 24000 and 28000 box pixels on
// rp_fasterrcnn_vgg16_test.
template <typename scalar_t>
std::vector<int64_t> balanced_row_bands(const scalar_t* rois, const cpu::BoxesByImage& boxes,
                                        const PoolArgs& a, int64_t bands) {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<int64_t> first(a.N * (bands + 1));
  std::vector<double> cost(a.H + 1);  // cost[r]: box pixels in rows before r
  for (int64_t n = 0; n < a.N; ++n) {
    std::vector<double> in_row(a.H, 0.0);
    for (int64_t j = boxes.begin[n]; j < boxes.begin[n + 1]; ++j) {
      const RoiPoolBox b = roi_pool_box<acc_t>(rois + 5 * boxes.order[j],
                                               static_cast<acc_t>(a.spatial_scale));
      const int64_t w = inside(b.start_w, b.roi_w, a.W), h1 = std::min(a.H, b.start_h + b.roi_h);
      for (int64_t r = std::max<int64_t>(0, b.start_h); r < h1 && w > 0; ++r) in_row[r] += w;
    }
    for (int64_t r = 0; r < a.H; ++r) cost[r + 1] = cost[r] + in_row[r] + 1;  // + 1: zeroing
    int64_t* f = first.data() + n * (bands + 1);
    f[0] = 0;
    f[bands] = a.H;
    for (int64_t b = 1, r = 0; b < bands; ++b) {  // at least one row per band (bands <= H)
      while (r < a.H && cost[r] < cost[a.H] * static_cast<double>(b) / bands) ++r;
      f[b] = std::clamp<int64_t>(r, f[b - 1] + 1, a.H - (bands - b));
      r = f[b];
    }
  }
  return first;
}

// The gradient of one band, rows [r0, r1) of image n over all C channels, pixel-major: pixel
// p0 + r at data + r * C. Adds into channels_last grad_input itself where it holds acc_t
// (float, double); else into a zeroed buffer, which finish() writes into grad_input (a
// transpose into NCHW planes, or a conversion).
template <typename scalar_t, typename acc_t>
struct BandGrad {
  BandGrad(scalar_t* gi, std::vector<acc_t>& buf, int64_t n, int64_t p0, int64_t p1, int64_t C,
           int64_t HW, bool channels_last)
      : gi(gi), n(n), p0(p0), p1(p1), C(C), HW(HW), channels_last(channels_last) {
    direct = std::is_same_v<scalar_t, acc_t> && channels_last;
    if (direct) {
      data = reinterpret_cast<acc_t*>(gi) + (n * HW + p0) * C;
      std::fill_n(data, (p1 - p0) * C, acc_t(0));
    } else {
      buf.assign((p1 - p0) * C, acc_t(0));
      data = buf.data();
    }
  }

  void finish() const {
    if (direct) return;
    if (channels_last) {
      scalar_t* dst = gi + (n * HW + p0) * C;
      for (int64_t e = 0; e < (p1 - p0) * C; ++e) dst[e] = static_cast<scalar_t>(data[e]);
    } else {  // pixels -> the band's part of every channel plane
      cpu::transpose(data, C, gi + n * C * HW + p0, HW, p1 - p0, C);
    }
  }

  acc_t* data;
  scalar_t* gi;
  int64_t n, p0, p1, C, HW;
  bool channels_last, direct;
};

// The next box's (w channels) blocks of argmax and grad_output (the unit's boxes in order:
// box j + 1 of image n, or box j itself at the end), fetched a piece at a time (part of
// parts) while box j is being added.
template <typename scalar_t>
struct NextBoxPrefetch {
  const int32_t* am;
  const scalar_t* go;
  cpu::Strides4 as, gs;
  int64_t w, PH, PW;

  NextBoxPrefetch(const cpu::BoxesByImage& boxes, int64_t n, int64_t j, const int32_t* am0,
                  cpu::Strides4 as_, const scalar_t* go0, cpu::Strides4 gs_, int64_t c0,
                  int64_t w_, int64_t PH_, int64_t PW_)
      : as(as_), gs(gs_), w(w_), PH(PH_), PW(PW_) {
    const int64_t next = j + 1 < boxes.begin[n + 1] ? boxes.order[j + 1] : boxes.order[j];
    am = am0 + next * as.k + c0 * as.c;
    go = go0 + next * gs.k + c0 * gs.c;
  }

  void operator()(int64_t part, int64_t parts) const {
    cpu::prefetch_block_part(am, as, w, PH, PW, part, parts);
    cpu::prefetch_block_part(go, gs, w, PH, PW, part, parts);
  }
};

// The backward where argmax holds each bin's channels adjacent (the forward ran on a
// channels_last map): units of (image, band of rows) over all C channels; each visits the
// image's boxes in order and, bin by bin over the bin rows that reach its band, adds the
// channels whose argmax lies in the band. Every grad_input element still receives its terms in
// box order, then bin order, whatever the bands. (An argmax outside its own bin, which the
// forward never writes, is added only if that bin reaches the element's band, as the CUDA
// gather only looks at the bins over each pixel.) Units of (image, channel block) instead, with
// the image's whole gradient per unit: 256 channels took 19.7 ms and 128 channels 26.2 ms
// against 14.1 ms for 512 on rp_fasterrcnn_vgg16_test (1 thread, CPU time, load 3): each bin's
// run of channels costs the same per unit, however narrow.
template <typename scalar_t>
void backward_by_bin(const scalar_t* go, cpu::Strides4 gs, const int32_t* am, cpu::Strides4 as,
                     const scalar_t* rois, const cpu::BoxesByImage& boxes, scalar_t* gi,
                     bool channels_last, const PoolArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = a.H * a.W, C = a.C;
  const int64_t bands = row_bands(a.N, a.H);
  const std::vector<int64_t> band_rows = balanced_row_bands(rois, boxes, a, bands);
  at::parallel_for(0, a.N * bands, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf;
    std::vector<scalar_t> go_tile;
    std::vector<RoiPoolRange> rows(a.PH);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / bands, band = u % bands;
      const int64_t r0 = band_rows[n * (bands + 1) + band];
      const int64_t r1 = band_rows[n * (bands + 1) + band + 1];
      const BandGrad<scalar_t, acc_t> t(gi, buf, n, r0 * a.W, r1 * a.W, C, HW, channels_last);
      for (int64_t j = boxes.begin[n]; j < boxes.begin[n + 1]; ++j) {
        const int64_t k = boxes.order[j];
        const RoiPoolBox box =
            roi_pool_box<acc_t>(rois + 5 * k, static_cast<acc_t>(a.spatial_scale));
        int64_t ph0 = a.PH, ph1 = 0;  // the bin rows that reach the band
        for (int64_t ph = 0; ph < a.PH; ++ph) {
          rows[ph] = roi_pool_range<acc_t>(box.start_h, box.roi_h, a.PH, ph, a.H);
          if (rows[ph].start < r1 && rows[ph].end > r0) {
            ph0 = std::min(ph0, ph);
            ph1 = ph + 1;
          }
        }
        if (ph0 >= ph1) continue;
        const NextBoxPrefetch<scalar_t> next(boxes, n, j, am, as, go, gs, 0, C, a.PH, a.PW);
        const BinRuns<scalar_t> gok = channels_by_bin(go + k * gs.k, gs, C, ph0, ph1, a.PW,
                                                      go_tile);
        for (int64_t ph = ph0; ph < ph1; ++ph) {  // bin rows reach the band in one run
          next(ph - ph0, ph1 - ph0);  // a piece of the next box's blocks per bin row
          for (int64_t pw = 0; pw < a.PW; ++pw) {
            const int32_t bad = cpu::add_in_band(
                t.data, C, static_cast<int32_t>(t.p0), static_cast<int32_t>(t.p1),
                static_cast<int32_t>(HW), C, am + k * as.k + ph * as.h + pw * as.w,
                gok.ptr + (ph - ph0) * gok.h + pw * gok.w);
            if (C10_UNLIKELY(bad >= 0)) fail_index_out_of_range("_roi_pool_backward", bad, HW);
          }
        }
      }
      t.finish();
    }
  });
}

// go and am: (K, C, PH, PW) with strides gs and as; gi: (N, C, H, W). Each unit adds
// grad_output at the argmax a pass of cpu::l2_channels channels at a time, box by box and
// channel by channel (add_box), into one plane per channel (NCHW grad_input itself, or a
// private buffer that finish() transposes into channels_last grad_input), so every grad_input
// element receives its terms in box order, then bin order. Those planes stay in L2; with an NCHW
// argmax, walking a channels_last slice of grad_input bin by bin instead (each bin's channels
// at up to C different pixels) took 3x as long on rp_fastrcnn_vgg16_train. A channels_last
// argmax goes to backward_by_bin.
template <typename scalar_t>
void backward(const scalar_t* go, cpu::Strides4 gs, const int32_t* am, cpu::Strides4 as,
              const scalar_t* rois, scalar_t* gi, bool channels_last, const PoolArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = a.H * a.W;
  const cpu::BoxesByImage boxes = cpu::boxes_by_image(rois, a.K, a.N);
  if (as.c == 1 && a.C > 1) {
    backward_by_bin(go, gs, am, as, rois, boxes, gi, channels_last, a);
    return;
  }
  const cpu::ChannelBlocks blocks = cpu::channel_blocks(a.N, a.C);
  at::parallel_for(0, a.N * blocks.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf;
    std::vector<int32_t> am_tile;
    std::vector<scalar_t> go_tile;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / blocks.count, c0 = (u % blocks.count) * blocks.width;
      const int64_t width = std::min(blocks.width, a.C - c0);
      const int64_t pass = cpu::l2_channels(HW, width);
      for (int64_t s0 = c0; s0 < c0 + width; s0 += pass) {
        const int64_t w = std::min(pass, c0 + width - s0);
        const cpu::UnitGrad<scalar_t, acc_t> t(gi, buf, n, s0, w, a.C, HW, channels_last,
                                               /*pixel_major=*/false);
        for (int64_t j = boxes.begin[n]; j < boxes.begin[n + 1]; ++j) {
          const int64_t k = boxes.order[j];
          const NextBoxPrefetch<scalar_t> next(boxes, n, j, am, as, go, gs, s0, w, a.PH,
                                               a.PW);
          const auto prefetch = [&](int64_t c) { next(c, w); };  // a piece per channel
          const int32_t* amk =
              bins_by_channel(am + k * as.k + s0 * as.c, as, w, a.PH, a.PW, am_tile);
          const scalar_t* gok =
              bins_by_channel(go + k * gs.k + s0 * gs.c, gs, w, a.PH, a.PW, go_tile);
          add_box(t.data, t.channel_stride, HW, w, a.PH * a.PW, amk, gok, prefetch);
        }
        t.finish();
      }
    }
  });
}

PoolArgs pool_args(const RoiGeometry& g, double spatial_scale, int64_t pooled_h,
                   int64_t pooled_w) {
  return {g.n.expect_int(), g.c.expect_int(), g.h.expect_int(), g.w.expect_int(),
          g.k.expect_int(), pooled_h,         pooled_w,         spatial_scale};
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cpu(const at::Tensor& input, const at::Tensor& rois,
                                                double spatial_scale, int64_t pooled_h,
                                                int64_t pooled_w) {
  const RoiGeometry g = check_roi_pool(input, rois, spatial_scale, pooled_h, pooled_w);
  const PoolArgs a = pool_args(g, spatial_scale, pooled_h, pooled_w);
  check_roi_values(rois, a.N, "roi_pool");
  FC_CHECK(a.H * a.W <= INT32_MAX, "roi_pool", "feature maps of fewer than 2^31 pixels, got ",
           a.H, "x", a.W);
  const bool channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  const auto options = input.options().memory_format(roi_memory_format(channels_last));
  // outputs of several MB come from the block cache (cpu/buffer_cache.h): 25 MB of output and
  // argmax faulted in 4 KB pages took twice as long as the whole forward
  at::Tensor out = cpu::empty_cached({a.K, a.C, a.PH, a.PW}, options);
  at::Tensor argmax = cpu::empty_cached({a.K, a.C, a.PH, a.PW}, options.dtype(at::kInt));
  if (out.numel() == 0) return {out, argmax};
  const at::Tensor x = cpu::to_channels_last(input);
  const at::Tensor r = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "roi_pool", [&] {
    forward(x.const_data_ptr<scalar_t>(), r.const_data_ptr<scalar_t>(),
            out.mutable_data_ptr<scalar_t>(), argmax.mutable_data_ptr<int32_t>(), channels_last,
            a);
  });
  return {out, argmax};
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad_output, const at::Tensor& rois,
                                 const at::Tensor& argmax, double spatial_scale,
                                 int64_t pooled_h, int64_t pooled_w,
                                 c10::SymIntArrayRef input_size, bool channels_last) {
  const char* op = "_roi_pool_backward";
  const RoiGeometry g =
      check_roi_backward(grad_output, rois, spatial_scale, pooled_h, pooled_w, input_size, op);
  check_roi_argmax(argmax, grad_output, op);
  const PoolArgs a = pool_args(g, spatial_scale, pooled_h, pooled_w);
  check_roi_values(rois, a.N, op);
  FC_CHECK(a.H * a.W <= INT32_MAX, op, "feature maps of fewer than 2^31 pixels, got ", a.H, "x",
           a.W);
  at::Tensor gi = cpu::empty_cached(
      {a.N, a.C, a.H, a.W}, grad_output.options().memory_format(roi_memory_format(channels_last)));
  if (gi.numel() == 0) return gi;
  if (a.K == 0) return gi.zero_();
  const at::Tensor r = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(),
                                  "_roi_pool_backward", [&] {
    backward(grad_output.const_data_ptr<scalar_t>(), cpu::strides4(grad_output),
             argmax.const_data_ptr<int32_t>(), cpu::strides4(argmax), r.const_data_ptr<scalar_t>(),
             gi.mutable_data_ptr<scalar_t>(), channels_last, a);
  });
  return gi;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("roi_pool", roi_pool_cpu);
  m.impl("_roi_pool_backward", roi_pool_backward_cpu);
}

}  // namespace fastconv
