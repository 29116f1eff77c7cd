// Input and weight gradients of the fast fp32 CPU convolution (design notes in
// cpu/conv2d_fast.cpp; contract in cpu/conv2d_fast.h).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/conv2d_fast.h"
#include "cpu/conv2d_fast_dgrad_inplace.h"
#include "cpu/conv2d_fast_gemm.h"
#include "cpu/conv2d_fast_im2col.h"
#include "cpu/conv2d_fast_kernels.h"
#include "cpu/conv2d_fast_nchw.h"
#include "cpu/conv2d_fast_pack.h"
#include "cpu/conv2d_fast_stride2.h"
#include "cpu/conv2d_fast_util.h"
#include "cpu/conv2d_fast_winograd.h"

namespace fastconv::cpu {
namespace {

using namespace fastk;

int64_t floor_mod(int64_t a, int64_t b) { return a - floor_div(a, b) * b; }

// The gather form of the input gradient: input pixel (ih, iw) receives grad_output pixel
// (oh, ow) through tap (r, s) when ih + pad_h - r * dil_h = oh * stride_h, likewise for
// columns. Input pixels of one column phase (iw = phase + j * stride_w) read consecutive
// output pixels ow0(s) + j through every tap that fits the phase.
struct GatherPlan {
  int64_t Lc, Qp;  // columns of zero padding left of grad_output, padded row width

  explicit GatherPlan(const ConvGeometry& g) {
    const int64_t ow_lo = floor_div(g.pad_w - (g.s - 1) * g.dil_w, g.stride_w);
    const int64_t ow_hi = floor_div(g.w - 1 + g.pad_w, g.stride_w);
    Lc = std::max<int64_t>(0, -ow_lo);
    Qp = Lc + std::max(g.q, ow_hi + 1);
  }
  // Output row read by input row ih through kernel row r, or -1.
  static int64_t out_row(const ConvGeometry& g, int64_t ih, int64_t r) {
    const int64_t u = ih + g.pad_h - r * g.dil_h;
    if (floor_mod(u, g.stride_h) != 0) return -1;
    const int64_t oh = floor_div(u, g.stride_h);
    return oh < g.p ? oh : -1;
  }
  // First output column read by phase `phase` through kernel column s (pixel j reads
  // ow0 + j), or false when the tap does not fit the phase or misses the output entirely.
  static bool out_col(const ConvGeometry& g, int64_t phase, int64_t npix, int64_t s, int64_t* ow0) {
    const int64_t u = phase + g.pad_w - s * g.dil_w;
    if (floor_mod(u, g.stride_w) != 0) return false;
    *ow0 = floor_div(u, g.stride_w);
    return *ow0 < g.q && *ow0 + npix > 0;
  }
};

// Weights (K, Cg, R, S) packed for the gather as [G][CB][R][S][Kg][B] over input channels
// (pack_block_gather per block, in parallel over blocks); with `reverse_s` the kernel columns
// are stored last to first, so a unit-stride, unit-dilation row of taps reads grad_output
// columns in ascending order (one run of S * Kg elements).
at::Tensor pack_gather_weights(const Kernels& kk, const ConvGeometry& g, const WeightView& w, int64_t B,
                               bool reverse_s) {
  const int64_t G = g.groups, Cg = g.c_per_group(), Kg = g.k_per_group(), CB = ceil_div(Cg, B);
  at::Tensor packed = at::empty({G, CB, g.r, g.s, Kg, B}, at::TensorOptions().dtype(at::kFloat));
  float* out = packed.data_ptr<float>();
  const int64_t block = g.r * g.s * Kg * B;
  at::parallel_for(0, G * CB, 1, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      const int64_t gi = it / CB, cb = it % CB;
      const int nvalid = static_cast<int>(std::min(B, Cg - cb * B));
      pack_block_gather(kk, w, gi * Kg, Kg, cb * B, nvalid, B, reverse_s, out + it * block);
    }
  });
  return packed;
}

// One pixel's run of n elements into the per-tile layout of the packed weight gradient:
// elements [t * m, t * m + m) to dst + t * tile_stride (copy_floats: a fixed-size copy for the
// tile widths 6 and 12).
void scatter_run(const float* src, int64_t n, int64_t m, int64_t tile_stride, float* dst) {
  for (int64_t e = 0; e < n; e += m, dst += tile_stride) copy_floats(src + e, std::min(m, n - e), dst);
}

}  // namespace

bool conv2d_input_grad_fast(const ConvGeometry& g, const at::Tensor& grad_output,
                            const at::Tensor& weight, at::Tensor& grad_input) {
  if (grad_output.scalar_type() != at::kFloat) return false;
  const Kernels* kk = pick_kernels();
  if (kk == nullptr || g.c_per_group() == 0 || g.k_per_group() == 0) return false;
  if (grad_input.numel() == 0) return handled();
  if (winograd_input_grad_applies(g, grad_output)) return conv2d_input_grad_winograd(g, grad_output, weight, grad_input);
  if (gemm::input_grad_applies(g, grad_output)) return gemm::conv2d_input_grad_gemm(g, grad_output, weight, grad_input);
  if (inplace_input_grad_applies(*kk, g, grad_output, weight, grad_input)) {
    return conv2d_input_grad_inplace(*kk, g, grad_output, weight, grad_input);
  }
  if (strided_input_grad_gemm_applies(g, grad_input)) {
    return conv2d_input_grad_strided_gemm(g, grad_output, weight, grad_input);
  }

  const bool depthwise = g.depthwise() && g.k == g.c;
  if (nchw_input_grad_applies(g, grad_output, grad_input)) return nchw_input_grad(*kk, g, grad_output, weight, grad_input);
  if (stride2_input_grad_applies(g, kk->max_m)) return conv2d_input_grad_strided(*kk, g, grad_output, weight, grad_input);
  const int64_t B = kk->block, G = g.groups, Cg = g.c_per_group(), Kg = g.k_per_group();
  const int64_t CB = ceil_div(Cg, B), C = g.c, K = g.k;
  const bool fold = !depthwise && G == 1 && g.stride_w == 1 && g.dil_w == 1;
  const GatherPlan plan(g);
  // Narrow images at unit stride (7 x 7, 14 x 14), as in the forward pass: register tiles run
  // across input rows over grad_output padded in rows too (top: R - 1 - pad_h zero rows, so
  // input row ih reads padded row ih + R - 1 - r through kernel row r), so every tap of every
  // pixel exists and a block's weights serve all pixels of the chunk per pass.
  const bool across = fold && g.stride_h == 1 && g.dil_h == 1 && g.pad_h <= g.r - 1 && g.w < 4 * kk->max_m;
  const int64_t top = across ? g.r - 1 - g.pad_h : 0;
  const int64_t Hp = across ? std::max(top + g.p, g.h + g.r - 1) : g.p;
  const int64_t hw = g.h * g.w;
  const int64_t chunk = across ? ceil_div(ceil_div(hw, ceil_div(hw, 16 * kk->max_m)), kk->max_m) * kk->max_m : g.w;
  const int64_t rows = across ? ceil_div(hw, chunk) : g.h;  // work items per (image, block)
  std::vector<int64_t> pix_off(across ? hw : 0);  // source offset of input pixel y * w + x
  for (int64_t i = 0; i < static_cast<int64_t>(pix_off.size()); ++i) {
    pix_off[i] = ((i / g.w) * plan.Qp + i % g.w) * K;
  }
  const float* src = nhwc_padded(grad_output, top, Hp, plan.Lc, plan.Qp, 0);
  // depthwise: weights as [R * S][C]; otherwise packed for the register tile, a block of
  // R x S x Kg x B floats per destination channel block. As in the forward pass, where the
  // staged grad_output fits in L2 each thread packs the blocks it uses into its own buffer
  // (blocks outermost), so the packed weights never go through memory.
  const bool fused = !depthwise && (g.n == 1 || g.n * Hp * plan.Qp * K * 4 <= (512 << 10));
  const WeightView wv(weight);
  const int64_t block = g.r * g.s * Kg * B;
  at::Tensor w_t;
  if (depthwise) {
    w_t = weight.reshape({C, -1}).t().contiguous();
  } else if (!fused) {
    w_t = pack_gather_weights(*kk, g, wv, B, fold);
  }
  const float* w = w_t.defined() ? w_t.data_ptr<float>() : nullptr;
  const Dest out(grad_input);
  const int64_t l_block = l1_reduction_block(fold ? g.r : g.r * g.s, B, kDirectPassBytes);
  const int64_t DCB = depthwise ? ceil_div(C, B) : G * CB;  // channel blocks of the destination

  at::parallel_for(0, g.n * DCB * rows, 1, [&](int64_t begin, int64_t end) {
    const int64_t max_taps = g.r * g.s;
    std::vector<const float*> a(max_taps), b(max_taps);
    std::vector<int64_t> rows_r, rows_oh;
    int64_t have = -1;  // block now in the thread's buffer (fused)
    for (int64_t it = begin; it < end; ++it) {
      // item order: (image, block, row), or (block, image, row) when fused
      const int64_t ih = it % rows;  // input row, or chunk of pixels (across)
      const int64_t blk = fused ? it / (rows * g.n) : (it / rows) % DCB;
      const int64_t n = fused ? (it / rows) % g.n : it / (rows * DCB);
      const int64_t gi = depthwise ? 0 : blk / CB, cb = depthwise ? blk : blk % CB;
      const float* wblk = w;  // this block's packed weights (depthwise: all of them)
      if (fused) {
        float* buf = workspace(2, block);
        if (blk != have) {
          pack_block_gather(*kk, wv, gi * Kg, Kg, cb * B, static_cast<int>(std::min(B, Cg - cb * B)), B, fold, buf);
          have = blk;
        }
        wblk = buf;
      } else if (!depthwise) {
        wblk = w + blk * block;
      }
      if (across) {
        const int64_t x0 = ih * chunk;
        for (int64_t r = 0; r < g.r; ++r) {  // taps s = S-1 .. 0 folded, as below
          a[r] = src + ((n * Hp + g.r - 1 - r) * plan.Qp + plan.Lc + g.pad_w - (g.s - 1)) * K;
          b[r] = wblk + r * g.s * Kg * B;
        }
        const ConvRow row{static_cast<int>(g.r), a.data(), b.data(), g.s * Kg, K, std::min(chunk, hw - x0),
                          nullptr, out.at(n, cb * B, 0, 0) + x0 * out.sx, out.sx, out.sc,
                          static_cast<int>(std::min(B, Cg - cb * B)), l_block, pix_off.data() + x0};
        kk->conv_row(row);
        continue;
      }
      rows_r.clear();
      rows_oh.clear();
      for (int64_t r = 0; r < g.r; ++r) {
        const int64_t oh = GatherPlan::out_row(g, ih, r);
        if (oh >= 0) {
          rows_r.push_back(r);
          rows_oh.push_back(oh);
        }
      }
      const int64_t c0 = depthwise ? cb * B : gi * Cg + cb * B;
      const int nvalid = static_cast<int>(std::min(B, (depthwise ? C : Cg) - cb * B));
      for (int64_t phase = 0; phase < std::min(g.stride_w, g.w); ++phase) {
        const int64_t npix = ceil_div(g.w - phase, g.stride_w);
        float* dst = out.at(n, c0, ih, phase);
        int nt = 0;
        for (size_t i = 0; i < rows_r.size(); ++i) {
          const int64_t r = rows_r[i];
          const float* out_row = src + ((n * g.p + rows_oh[i]) * plan.Qp + plan.Lc) * K;
          if (fold) {  // taps s = S-1 .. 0 read columns phase + pad_w - (S-1) + j + s'
            a[nt] = out_row + (phase + g.pad_w - (g.s - 1)) * K;
            b[nt] = wblk + r * g.s * Kg * B;
            ++nt;
            continue;
          }
          for (int64_t s = 0; s < g.s; ++s) {
            int64_t ow0;
            if (!GatherPlan::out_col(g, phase, npix, s, &ow0)) continue;
            if (depthwise) {
              a[nt] = out_row + ow0 * K + c0;
              b[nt] = w + (r * g.s + s) * C + c0;
            } else {
              a[nt] = out_row + ow0 * K + gi * Kg;
              b[nt] = wblk + (r * g.s + s) * Kg * B;
            }
            ++nt;
          }
        }
        if (depthwise) {
          const DepthwiseRow row{nt,  a.data(), b.data(), K,     npix,
                                 nullptr, dst,   g.stride_w * out.sx, out.sc, nvalid};
          kk->depthwise_row(row);
        } else {
          const ConvRow row{nt, a.data(), b.data(), fold ? g.s * Kg : Kg, K, npix, nullptr,
                            dst, g.stride_w * out.sx, out.sc, nvalid,
                            // blocked for this phase's taps (1-4 of 9 at stride 2): fewer passes
                            l1_reduction_block(std::max(nt, 1), B)};
          kk->conv_row(row);
        }
      }
    }
  });
  return handled();
}

bool conv2d_weight_grad_fast(const ConvGeometry& g, const at::Tensor& grad_output,
                             const at::Tensor& input, at::Tensor& grad_weight) {
  if (g.n * g.p * g.q > 0 && grad_weight.numel() > 0 && im2col::weight_grad_applies(g, grad_output)) {
    return im2col::conv2d_weight_grad_im2col(g, grad_output, input, grad_weight);
  }
  if (winograd_weight_grad_applies(g, grad_output)) return conv2d_weight_grad_winograd(g, grad_output, input, grad_weight);
  if (grad_output.scalar_type() != at::kFloat) return false;
  const Kernels* kk = pick_kernels();
  if (kk == nullptr || g.c_per_group() == 0 || g.k_per_group() == 0) return false;
  if (g.depthwise()) return false;  // too little work per tile: the generic kernel does it
  if (grad_weight.numel() == 0) return handled();
  if (g.n * g.p * g.q == 0) {
    grad_weight.zero_();
    return handled();
  }
  if (gemm::weight_grad_applies(g, grad_output)) return gemm::conv2d_weight_grad_gemm(g, grad_output, input, grad_weight);
  if (g.r == 1 && g.s == 1 && g.pad_h == 0 && g.pad_w == 0 && (g.stride_h > 1 || g.stride_w > 1) &&
      input.is_contiguous()) {
    // An NCHW 1x1 layer with stride reads only every stride-th pixel: gather those (a strided
    // copy) and it is the stride-1 case, instead of staging the whole input as NHWC.
    const at::Tensor sub = input.slice(2, 0, (g.p - 1) * g.stride_h + 1, g.stride_h)
                               .slice(3, 0, (g.q - 1) * g.stride_w + 1, g.stride_w)
                               .contiguous();
    ConvGeometry g1 = g;
    g1.h = g.p;
    g1.w = g.q;
    g1.stride_h = g1.stride_w = 1;
    return conv2d_weight_grad_fast(g1, grad_output, sub, grad_weight);
  }
  const int64_t B = kk->block, M = kk->max_m, G = g.groups, Cg = g.c_per_group(), Kg = g.k_per_group();
  const int64_t KB = ceil_div(Kg, B), C = g.c, K = g.k;
  // Reduction-side elements, in runs contiguous in the padded input row: one run per kernel
  // row of S * Cg (fold) or one per tap of Cg.
  const bool fold = G == 1 && g.dil_w == 1;
  const int64_t nruns = fold ? g.r : g.r * g.s, runlen = fold ? g.s * Cg : Cg;
  const int64_t tiles_per_run = ceil_div(runlen, M);
  // packed tiles (see below)
  const bool pack = C * g.stride_w >= 128 || (Cg >= 32 && Kg >= 64);
  // The in-place tiles read the input with zero columns (a padded NHWC copy); packing reads it
  // unpadded (channels_last: the input itself, not a copy of it: 13 MB for res3a at batch 8)
  // and assembles the runs of border pixels with zeros.
  const int64_t Wp =
      pack ? g.w : std::max(g.pad_w + g.w, (g.q - 1) * g.stride_w + (g.s - 1) * g.dil_w + 1);
  const float* src = pack ? nhwc_padded(input, 0, g.h, 0, g.w, 0)
                          : nhwc_with_column_padding(input, g.pad_w, Wp, 0);
  // (unpacked, every thread reads all of grad_output's copy: streamed where it exceeds a core's
  // L2, see nhwc_padded; smaller ones measured the same or slower streamed)
  const bool stream_gout = !pack && g.n * g.p * g.q * g.k >= (int64_t{2} << 20) / int64_t{sizeof(float)};
  const float* gout = nhwc_with_column_padding(grad_output, 0, g.q, 1, stream_gout);
  // acc[G][KB][run][element][B]: per channel block, the B channels of every element in order
  // (a tile's accumulators are adjacent, and the unpacking below reads them sequentially).
  // Not zeroed: every tile of the first chunk starts from zero (also where no row hits).
  float* acc = workspace(3, G * KB * nruns * runlen * B);

  // The pixels are swept in chunks of whole output rows (fixed by the geometry, never by the
  // thread count, so the summation order is too). Per chunk, a thread (with `pack`) packs what
  // its tiles read into contiguous buffers: for each run, the input elements per tile (all
  // kernel rows that miss the image dropped; see a_tile), and for each channel block
  // grad_output as [pixel][B], zero past the group's channels. NHWC strides of a
  // power of two bytes would otherwise map a tile's pixels to a few L1 sets; packed, they spread
  // over all sets, and the block of grad_output stays in L1 across all tiles of the run.
  // Packing pays where the input's pixel stride is large (C * stride_w >= 128 floats: every
  // pixel a different cache line, in few sets), and, with the per-tile layout, with at least 32
  // input channels where at least 64 output channels (4 blocks on AVX2) share each packed
  // element. 2 threads, batch 1, best of 4-5 interleaved, in place -> packed, NCHW /
  // channels_last: AlexNet conv2 (64x27x27 -> 192 5x5) 2.99 -> 2.70 / 2.89 -> 2.61 ms, -> 128
  // 2.14 -> 1.91 / 2.05 -> 1.81, 32x28x28 -> 192 5x5 1.63 -> 1.58 / 1.55 -> 1.47, GoogLeNet's
  // 5x5 (32 -> 96) 0.82 -> 0.84 / 0.80 -> 0.80. Not with fewer output channels (32x79x341 ->
  // 32 5x10 stride 2: 4.22 -> 4.86 / 3.93 -> 4.58) or input channels (first layers, C = 1 or
  // 3: 1.5-2.1x slower packed): there the tiles read the NHWC data in place, in chunks of
  // about 64 pixels.
  // Chunks of at most ~256 (packed) or ~64 pixels, evened out over the rows: a short last chunk
  // costs a whole sweep of the accumulators for a few pixels (ResNet-50's res5a, 8 x 7 rows of
  // 7: chunks of 18, 18, 18 and 2 rows swept 9.4 MB four times; 4 x 14 rows measured ~10%
  // faster in a one-thread harness, CPU time, load ~6). Packed, 128 -> 256 pixels: 2 threads,
  // channels_last, batch 8, best of 4 interleaved: 256x28x28 -> 256 stride 2 11.8 -> 11.1 ms,
  // 128x56x56 -> 128 stride 2 11.7 -> 11.4 ms; 384 and 512 measured the same as 256.
  const int64_t total_rows = g.n * g.p;
  const int64_t max_rows = std::max<int64_t>(1, (pack ? 256 : 64) / g.q);
  const int64_t chunk_rows = ceil_div(total_rows, ceil_div(total_rows, max_rows));
  const int64_t items = G * nruns * KB * tiles_per_run;  // (group, run, block, tile), tile fastest
  // Packed, the input elements are stored per tile: tile t's M elements of the chunk's pixel p
  // at apack[t * a_tile + p * M], so a tile reads one contiguous stream. (Stored per pixel, a
  // tile's elements sat in one or two cache lines per pixel, 3 KB apart: in a one-thread
  // harness of res4a's runs of 768 the register tile ran at 86-88% of the FMA peak on those,
  // 93-95% on the per-tile layout; 2 threads, 256x28x28 -> 256 stride 2, builds alternated:
  // 12.1-12.8 -> 11.4-11.8 ms.)
  const int64_t chunk_px = chunk_rows * g.q, a_tile = chunk_px * M;
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> apack_mem, gpack(pack ? chunk_px * B : 0), run_buf(pack ? runlen : 0);
    float* apack = pack ? aligned_scratch(apack_mem, tiles_per_run * a_tile) : nullptr;
    std::vector<const float*> grow(chunk_rows), arow(chunk_rows);
    std::vector<int64_t> rows;  // chunk rows (n * P + oh) whose input row exists for this run
    for (int64_t row0 = 0; row0 < total_rows; row0 += chunk_rows) {
      const int64_t row1 = std::min(total_rows, row0 + chunk_rows);
      int64_t packed = -1, packed_g = -1;  // (group, run) and block now packed
      int64_t npix = 0;
      // item it = ((gi * nruns + run) * KB + kb) * tiles_per_run + tile, counted up item by item
      // (four 64-bit divisions per item were ~2% of the pass)
      int64_t tile = begin % tiles_per_run, kb = (begin / tiles_per_run) % KB;
      int64_t gr = begin / (tiles_per_run * KB), gi = gr / nruns, run = gr % nruns;  // gr = gi * nruns + run
      const auto next_item = [&] {
        if (++tile < tiles_per_run) return;
        tile = 0;
        if (++kb < KB) return;
        kb = 0;
        ++gr;
        if (++run < nruns) return;
        run = 0;
        ++gi;
      };
      for (int64_t it = begin; it < end; ++it, next_item()) {
        if (!pack) {
          const int64_t r = fold ? run : run / g.s, s = fold ? 0 : run % g.s;
          const int64_t e0 = tile * M;
          int nrows = 0;
          for (int64_t row = row0; row < row1; ++row) {
            const int64_t n = row / g.p, oh = row % g.p;
            const int64_t ih = oh * g.stride_h - g.pad_h + r * g.dil_h;
            if (ih < 0 || ih >= g.h) continue;
            grow[nrows] = gout + row * g.q * K + gi * Kg + kb * B;
            arow[nrows] = src + ((n * g.h + ih) * Wp + s * g.dil_w) * C + gi * Cg + e0;
            ++nrows;
          }
          if (nrows == 0 && row0 != 0) continue;
          const WgradTile t{nrows, grow.data(), arow.data(), g.q, K, g.stride_w * C,
                            static_cast<int>(std::min(M, runlen - e0)),
                            static_cast<int>(std::min(B, Kg - kb * B)),
                            acc + (((gi * KB + kb) * nruns + run) * runlen + e0) * B, B, row0 == 0};
          kk->wgrad_tile(t);
          continue;
        }
        if (gr != packed) {
          const int64_t r = fold ? run : run / g.s, s = fold ? 0 : run % g.s;
          rows.clear();
          for (int64_t row = row0; row < row1; ++row) {
            const int64_t ih = (row % g.p) * g.stride_h - g.pad_h + r * g.dil_h;
            if (ih >= 0 && ih < g.h) rows.push_back(row);
          }
          npix = static_cast<int64_t>(rows.size()) * g.q;
          for (size_t i = 0; i < rows.size(); ++i) {
            const int64_t n = rows[i] / g.p, oh = rows[i] % g.p;
            const int64_t ih = oh * g.stride_h - g.pad_h + r * g.dil_h;
            const float* x_row = src + (n * g.h + ih) * g.w * C + gi * Cg;
            for (int64_t q = 0; q < g.q; ++q) {
              // The run's columns (fold: S consecutive ones, dil_w = 1), zeros for the padding.
              const int64_t iw0 = q * g.stride_w - g.pad_w + s * g.dil_w, ncols = fold ? g.s : 1;
              const float* run_src = x_row + iw0 * C;
              if (iw0 < 0 || iw0 + ncols > g.w) {  // else contiguous in NHWC (fold implies one group)
                for (int64_t j = 0; j < ncols; ++j) {
                  float* e = run_buf.data() + j * Cg;
                  if (iw0 + j >= 0 && iw0 + j < g.w) {
                    std::memcpy(e, x_row + (iw0 + j) * C, Cg * sizeof(float));
                  } else {
                    std::fill(e, e + Cg, 0.0f);
                  }
                }
                run_src = run_buf.data();
              }
              scatter_run(run_src, runlen, M, a_tile, apack + (static_cast<int64_t>(i) * g.q + q) * M);
            }
          }
          packed = gr;
          packed_g = -1;
        }
        if (npix == 0 && row0 != 0) continue;
        if (kb != packed_g) {  // grad_output of the same pixels as [pixel][B], zeros past the group's channels
          const int64_t nvalid = std::min(B, Kg - kb * B);
          for (size_t i = 0; i < rows.size(); ++i) {
            for (int64_t q = 0; q < g.q; ++q) {
              const float* g_px = gout + (rows[i] * g.q + q) * K + gi * Kg + kb * B;
              float* dst = gpack.data() + (static_cast<int64_t>(i) * g.q + q) * B;
              copy_floats(g_px, nvalid, dst);
              for (int64_t j = nvalid; j < B; ++j) dst[j] = 0.0f;
            }
          }
          packed_g = kb;
        }
        const int64_t e0 = tile * M;
        const float* g_rows[1] = {gpack.data()};
        const float* a_rows[1] = {apack + tile * a_tile};
        const WgradTile t{1, g_rows, a_rows, npix, B, M, static_cast<int>(std::min(M, runlen - e0)),
                          static_cast<int>(B), acc + (((gi * KB + kb) * nruns + run) * runlen + e0) * B, B,
                          row0 == 0};
        kk->wgrad_tile(t);
      }
    }
  });

  // grad_weight[gi * Kg + kb * B + kk][c][r][s] = acc[gi][kb][run][element][kk], in parallel over (group,
  // channel block, chunk of CC input channels): the block's B channels of every (c, r, s) of
  // the chunk are read (one cache line each) into a [B][CC x R x S] buffer, whose rows are
  // then copied as contiguous runs of grad_weight. (Writing grad_weight element by element
  // would scatter over B rows whose stride is often a multiple of 4 KiB: cache set conflicts.)
  float* gw = grad_weight.data_ptr<float>();
  const int64_t RS = g.r * g.s, wrow = Cg * RS;
  if (!grad_weight.is_contiguous()) {
    // channels_last: row k of grad_weight is (r, s, c), the accumulators' own (run, element)
    // order, so each channel block is a [wrow][B] -> [B][wrow] transpose, in chunks of EC
    // elements (EC x B floats, 16 KiB, stay in L1 while the B rows are written).
    const int64_t EC = 128, ECB = ceil_div(wrow, EC);
    at::parallel_for(0, G * KB * ECB, 1, [&](int64_t begin, int64_t end) {
      for (int64_t it = begin; it < end; ++it) {
        const int64_t e0 = (it % ECB) * EC, kb = (it / ECB) % KB, gi = it / (ECB * KB);
        const int64_t ne = std::min(EC, wrow - e0), nk = std::min(B, Kg - kb * B);
        const float* blk = acc + ((gi * KB + kb) * wrow + e0) * B;
        for (int64_t kk = 0; kk < nk; ++kk) {
          float* dst = gw + (gi * Kg + kb * B + kk) * wrow + e0;
          for (int64_t e = 0; e < ne; ++e) dst[e] = blk[e * B + kk];
        }
      }
    });
    return handled();
  }
  const int64_t CC = std::max<int64_t>(1, 256 / RS), CCB = ceil_div(Cg, CC);
  at::parallel_for(0, G * KB * CCB, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(B * CC * RS);
    for (int64_t it = begin; it < end; ++it) {
      const int64_t cc0 = (it % CCB) * CC, kb = (it / CCB) % KB, gi = it / (CCB * KB);
      const int64_t ncc = std::min(CC, Cg - cc0), nk = std::min(B, Kg - kb * B);
      for (int64_t run = 0; run < nruns; ++run) {
        // the run's elements are (s, c) with c fastest (fold) or c alone (tap (r, s_run))
        const int64_t r = fold ? run : run / g.s;
        for (int64_t s = fold ? 0 : run % g.s; s < (fold ? g.s : run % g.s + 1); ++s) {
          const int64_t tap = r * g.s + s;
          for (int64_t c = cc0; c < cc0 + ncc; ++c) {
            const float* src = acc + (((gi * KB + kb) * nruns + run) * runlen + (fold ? s * Cg + c : c)) * B;
            float* dst = buf.data() + (c - cc0) * RS + tap;
            for (int64_t kk = 0; kk < nk; ++kk) dst[kk * CC * RS] = src[kk];
          }
        }
      }
      for (int64_t kk = 0; kk < nk; ++kk) {
        const float* row = buf.data() + kk * CC * RS;
        std::copy(row, row + ncc * RS, gw + (gi * Kg + kb * B + kk) * wrow + cc0 * RS);
      }
    }
  });
  return handled();
}

}  // namespace fastconv::cpu
