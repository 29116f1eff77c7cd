// The input gradient of strided convolutions (cpu/conv2d_fast_stride2.h) as a sum of stride-1
// sub-convolutions, in two forms: on the direct kernels' register tiles (conv2d_input_grad_strided)
// and as implicit GEMMs on the 6 x 16 GEMM micro-kernel (conv2d_input_grad_strided_gemm, at the
// end of the file).
//
// Input pixel (ih, iw) receives grad_output pixel (oh, ow) through tap (r, s) when
// ih + pad_h - r = oh * stride_h and iw + pad_w - s = ow * stride_w. The input pixels of one
// phase class (ih = rho + y * stride_h, iw = phi + x * stride_w) all use the same taps: kernel
// rows r = rho + pad_h (mod stride_h) and columns s = phi + pad_w (mod stride_w), and read
// grad_output rows y + (rho + pad_h - r) / stride_h, columns x + (phi + pad_w - s) / stride_w.
// So each class is a stride-1 convolution of grad_output with a sub-kernel (for 3 x 3 stride
// 2: 2 x 2, 2 x 1, 1 x 2 and 1 x 1 taps, none of them wasted), and since the column taps of a
// class, taken in descending order, read consecutive grad_output columns, they fold into one
// contiguous reduction of (column taps) x K elements per kernel row (the weights are packed
// in that order: per kernel row, the columns grouped by class, descending within a class).
//
// The generic gather path (cpu/conv2d_fast_grad.cpp) ran one input row and one column phase
// per kernel call: 7 pixels per call on a 14 x 14 input (a 6-pixel tile and a 1-pixel tile),
// a reduction blocked for all R x S taps rather than the 1-4 of a class, and weights reloaded
// into L1 for every row. Here the register tiles run across the rows of a class's sub-image
// (per-pixel source offsets into grad_output padded in rows and columns, as the forward pass
// does for narrow images), chunks of up to 16 tiles per call that may span images, computed
// into a small NHWC buffer and then copied to the input pixels of the class (every other
// pixel at stride 2).
// Taken for narrow rows only (cpu/conv2d_fast_stride2.h says why).
// The summation order depends on the geometry alone, so results do not depend on the number
// of threads.
#include "cpu/conv2d_fast_stride2.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "cpu/conv2d_fast_gemm.h"
#include "cpu/conv2d_fast_pack.h"
#include "cpu/conv2d_fast_util.h"

namespace fastconv::cpu {
namespace {

using namespace fastk;

// The kernel taps of one dimension grouped by phase class: taps t = res (mod stride) for
// res = 0 .. stride - 1, descending within a class. Input coordinate phase + j * stride reads
// output coordinate first_out(phase) + j + i through the i-th tap of its class.
struct TapClasses {
  int64_t taps, stride, pad;

  int64_t residue(int64_t phase) const { return (phase + pad) % stride; }
  int64_t count(int64_t res) const { return res < taps ? (taps - res + stride - 1) / stride : 0; }
  int64_t start(int64_t res) const {  // position of the class's first tap in class order
    int64_t n = 0;
    for (int64_t r = 0; r < res; ++r) n += count(r);
    return n;
  }
  // Position of tap t in class order.
  int64_t position(int64_t t) const {
    const int64_t res = t % stride, last = res + (count(res) - 1) * stride;
    return start(res) + (last - t) / stride;
  }
  // Output coordinate read by coordinate `phase` through the first (largest) tap of its class.
  int64_t first_out(int64_t phase) const {
    const int64_t res = residue(phase), last = res + (count(res) - 1) * stride;
    return floor_div(phase + pad - last, stride);
  }
};

// The phase classes of a layer (input pixels ih = rho + y * stride_h, iw = phi + x * stride_w)
// and grad_output padded so that every tap of every class reads inside it: rows [top, top + p)
// and columns [left, left + q) of the (Hp, Wp) padded image hold grad_output, the rest zeros.
struct PhaseClasses {
  const ConvGeometry& g;
  TapClasses rows, cols;
  int64_t n_rho, n_phi, top = 0, left = 0, Hp, Wp;

  explicit PhaseClasses(const ConvGeometry& geom)
      : g(geom), rows{geom.r, geom.stride_h, geom.pad_h}, cols{geom.s, geom.stride_w, geom.pad_w} {
    n_rho = std::min(g.stride_h, g.h);
    n_phi = std::min(g.stride_w, g.w);
    int64_t bottom = g.p, right = g.q;  // rows / columns read: [-top, bottom), [-left, right)
    reach(rows, n_rho, [this](int64_t rho) { return sub_h(rho); }, top, bottom);
    reach(cols, n_phi, [this](int64_t phi) { return sub_w(phi); }, left, right);
    Hp = top + bottom;
    Wp = left + right;
  }
  // Widens [-lo, hi) to what the classes along one axis read (sub: a class's sub-image size).
  template <typename Sub>
  static void reach(const TapClasses& t, int64_t classes, Sub sub, int64_t& lo, int64_t& hi) {
    for (int64_t c = 0; c < classes; ++c) {
      const int64_t n = t.count(t.residue(c));
      if (n == 0) continue;
      const int64_t o = t.first_out(c);
      lo = std::max(lo, -o);
      hi = std::max(hi, o + sub(c) + n - 1);
    }
  }
  int64_t sub_h(int64_t rho) const { return ceil_div(g.h - rho, g.stride_h); }
  int64_t sub_w(int64_t phi) const { return ceil_div(g.w - phi, g.stride_w); }
  // The pixels of a class, over all images (image, then sub-image row, then column).
  int64_t pixels(int64_t rho, int64_t phi) const { return g.n * sub_h(rho) * sub_w(phi); }
  // Offset in the padded grad_output of each pixel of class (rho, phi), relative to where
  // image 0's first pixel reads (K channels per pixel).
  std::vector<int64_t> source_offsets(int64_t rho, int64_t phi) const {
    const int64_t hs = sub_h(rho), ws = sub_w(phi);
    std::vector<int64_t> off(pixels(rho, phi));
    for (int64_t i = 0; i < static_cast<int64_t>(off.size()); ++i) {
      off[i] = ((i / (hs * ws)) * Hp * Wp + ((i / ws) % hs) * Wp + i % ws) * g.k;
    }
    return off;
  }
  // Where the class's i-th row tap (kernel row row_res + (nrow - 1 - i) * stride_h) reads for
  // image 0's first pixel: padded row top + oh0 + i, column left + ow0.
  int64_t first_read(int64_t rho, int64_t phi, int64_t i) const {
    return ((top + rows.first_out(rho) + i) * Wp + left + cols.first_out(phi)) * g.k;
  }
  // Element offset in a channels_last grad_input of pixel `idx` of class (rho, phi).
  int64_t nhwc_offset(int64_t rho, int64_t phi, int64_t idx) const {
    const int64_t hs = sub_h(rho), ws = sub_w(phi);
    const int64_t n = idx / (hs * ws), y = (idx / ws) % hs, x = idx % ws;
    return ((n * g.h + rho + y * g.stride_h) * g.w + phi + x * g.stride_w) * g.c;
  }
};

// One chunk of work: `npix` pixels from pixel `x0` of the sub-image of class (rho, phi).
struct Chunk {
  int64_t rho, phi, x0, npix;
};

// Weights packed for the input-channel block [c0, c0 + nvalid) as
// dst[((r * S + s_pos[s]) * K + k) * B + j] = weight(k, c0 + j, r, s), zero past nvalid, with
// s_pos[s] = cols.position(s): the kernel columns grouped by class.
void pack_block_classes(const Kernels& kk, const WeightView& w, int64_t K, int64_t c0, int nvalid, int64_t B,
                        const std::vector<int64_t>& s_pos, float* dst) {
  pack_block_gather(kk, w, 0, K, c0, nvalid, B, /*reverse_s=*/false, dst, s_pos.data());
}

}  // namespace

bool conv2d_input_grad_strided(const Kernels& kk, const ConvGeometry& g, const at::Tensor& grad_output,
                               const at::Tensor& weight, at::Tensor& grad_input) {
  const int64_t B = kk.block, C = g.c, K = g.k, CB = ceil_div(C, B);
  const PhaseClasses pc(g);
  const TapClasses &rows_c = pc.rows, &cols = pc.cols;
  const int64_t n_rho = pc.n_rho, n_phi = pc.n_phi;
  const auto sub_h = [&](int64_t rho) { return pc.sub_h(rho); };
  const auto sub_w = [&](int64_t phi) { return pc.sub_w(phi); };
  const float* src = nhwc_padded(grad_output, pc.top, pc.Hp, pc.left, pc.Wp, 0);

  // The source offset of each pixel of a class (per class: (rho, phi) at rho * n_phi + phi).
  // Tiles and chunks may span images: a pixel's sum is the same whichever tile computes it, so
  // the batch size does not change any bit, and a 7 x 7 sub-image no longer ends in a 1-pixel
  // tile.
  const auto class_pixels = [&](int64_t rho, int64_t phi) { return pc.pixels(rho, phi); };
  std::vector<std::vector<int64_t>> pix_off(n_rho * n_phi);
  for (int64_t rho = 0; rho < n_rho; ++rho) {
    for (int64_t phi = 0; phi < n_phi; ++phi) pix_off[rho * n_phi + phi] = pc.source_offsets(rho, phi);
  }
  // Chunks of each class: up to 16 tiles, evened out over the class's pixels.
  std::vector<Chunk> chunks;
  for (int64_t rho = 0; rho < n_rho; ++rho) {
    for (int64_t phi = 0; phi < n_phi; ++phi) {
      const int64_t npx = class_pixels(rho, phi);
      const int64_t size = ceil_div(ceil_div(npx, ceil_div(npx, 16 * kk.max_m)), kk.max_m) * kk.max_m;
      for (int64_t x0 = 0; x0 < npx; x0 += size) chunks.push_back({rho, phi, x0, std::min(size, npx - x0)});
    }
  }
  // Chunks of all classes that start in the same input rows run one after another, so an NCHW
  // destination row, written every stride_w-th element by each column class, is completed while
  // its cache lines are still in L1 (the order of the chunks does not change any sum).
  const auto first_row = [&](const Chunk& c) {
    const int64_t hs = sub_h(c.rho), ws = sub_w(c.phi), y = c.x0 / ws;
    return (y / hs) * g.h + c.rho + (y % hs) * g.stride_h;
  };
  std::stable_sort(chunks.begin(), chunks.end(),
                   [&](const Chunk& u, const Chunk& v) { return first_row(u) < first_row(v); });
  const int64_t T = static_cast<int64_t>(chunks.size()), max_chunk = 16 * kk.max_m;

  // Work items (block, chunk), blocks outermost: each thread packs the weight blocks of its
  // items into its own buffer right before using them (a block stays in L2 while it serves the
  // whole batch; the staged grad_output, small on these narrow images, streams past it).
  const WeightView wv(weight);
  const int64_t block = g.r * g.s * K * B;
  std::vector<int64_t> s_pos(g.s);
  for (int64_t s = 0; s < g.s; ++s) s_pos[s] = cols.position(s);
  const Dest out(grad_input);

  at::parallel_for(0, CB * T, 1, [&](int64_t begin, int64_t end) {
    std::vector<const float*> a(g.r), b(g.r);
    std::vector<float> buf(max_chunk * B);
    std::vector<int64_t> dst_off(max_chunk);  // of the chunk's pixels, channel cb * B
    int64_t have = -1;  // block now in the thread's buffer
    for (int64_t it = begin; it < end; ++it) {
      const Chunk& ch = chunks[it % T];
      const int64_t cb = it / T;
      const int nvalid = static_cast<int>(std::min(B, C - cb * B));
      float* wblk = workspace(2, block);
      if (cb != have) {
        pack_block_classes(kk, wv, K, cb * B, nvalid, B, s_pos, wblk);
        have = cb;
      }
      // Taps: one per kernel row of the row class, each folding the column taps of the class.
      const int64_t col_res = cols.residue(ch.phi), ncol = cols.count(col_res);
      int nt = 0;
      if (ncol > 0) {
        const int64_t row_res = rows_c.residue(ch.rho), nrow = rows_c.count(row_res);
        for (int64_t i = 0; i < nrow; ++i) {  // kernel row r reads grad_output row y + oh0 + i
          const int64_t r = row_res + (nrow - 1 - i) * g.stride_h;
          a[nt] = src + pc.first_read(ch.rho, ch.phi, i);  // image 0: pix_off adds n
          b[nt] = wblk + (r * g.s + cols.start(col_res)) * K * B;
          ++nt;
        }
      }
      const int64_t l_block = l1_reduction_block(std::max(nt, 1), B);
      const ConvRow job{nt, a.data(), b.data(), ncol * K, K, ch.npix, nullptr, buf.data(), B, 1,
                        static_cast<int>(B), l_block, pix_off[ch.rho * n_phi + ch.phi].data() + ch.x0};
      kk.conv_row(job);
      // Copy the chunk to its input pixels (destination offsets stepped pixel by pixel: a
      // division per element cost as much as the arithmetic).
      const int64_t hs = sub_h(ch.rho), ws = sub_w(ch.phi);
      int64_t n = ch.x0 / (hs * ws), y = (ch.x0 / ws) % hs, x = ch.x0 % ws;
      for (int64_t i = 0; i < ch.npix; ++i) {
        dst_off[i] = out.at(n, cb * B, ch.rho + y * g.stride_h, ch.phi + x * g.stride_w) - out.data;
        if (++x == ws) {
          x = 0;
          if (++y == hs) {
            y = 0;
            ++n;
          }
        }
      }
      if (out.sc == 1) {
        for (int64_t i = 0; i < ch.npix; ++i) copy_floats(buf.data() + i * B, nvalid, out.data + dst_off[i]);
      } else {
        for (int c = 0; c < nvalid; ++c) {
          float* d = out.data + c * out.sc;
          for (int64_t i = 0; i < ch.npix; ++i) d[dst_off[i]] = buf[i * B + c];
        }
      }
    }
  });
  return handled();
}

namespace {

// ---- The implicit-GEMM form (channels_last; cpu/conv2d_fast_stride2.h) ----
//
// Per class, dX_class[pixels, C] = A[pixels, taps x K] W_class[taps x K, C]: row i of A is the
// class's grad_output reads of pixel i, one run of (column taps) x K contiguous floats per row
// tap in the padded grad_output, read in place by gemm::Kernels::micro_a_ptrs (as the forward's
// im2col::forward_nhwc does with the input). The 9 taps of all classes (each tap belongs to one
// class) are packed once per call into nr-channel micro-panels per reduction block.

// Reduction steps per block: a KC x 16 weight panel is 24 KiB (L1: 32 KiB), the forward's
// choice (cpu/conv2d_fast_im2col.cpp).
constexpr int64_t kGemmKC = 384;
alignas(64) const float kZeroSteps[kGemmKC] = {};  // A rows of pixels past a class's end

// One reduction block of one class: row tap `run`, steps [t0, t0 + kc) of the run's
// (column taps) x K, packed at `packed` (panel j at packed + j * kc * nr).
struct GemmBlock {
  int64_t run, t0, kc;
  float* packed;
};

struct GemmClass {
  int64_t rho, phi, nrow, ncol, row_res, col_res, pixels;
  int64_t per_run = 1, kc_len = 0;  // blocks per row tap, steps per block (the last may be shorter)
  std::vector<GemmBlock> blocks;    // row tap (run) major
  std::vector<int64_t> src_off;
};

std::atomic<int64_t> strided_gemm_calls{0};

// A work item: pixel panels [p0, p1) x channel panels [j0, j1) of class `cls`.
struct GemmItem {
  int64_t cls, p0, p1, j0, j1;
};

}  // namespace

bool strided_input_grad_gemm_applies(const ConvGeometry& g, const at::Tensor& grad_input) {
  const char* env = std::getenv("FASTCONV_CPU_STRIDED_GEMM");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  if (fastk::pick_kernels() == nullptr || !__builtin_cpu_supports("fma")) return false;
  const bool nhwc = grad_input.dim() == 4 && grad_input.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                    !grad_input.is_contiguous();
  if (g.groups != 1 || g.dil_h != 1 || g.dil_w != 1 || !nhwc) return false;
  if (env != nullptr && std::strcmp(env, "1") == 0) return true;  // also stride 1: one class
  // Measured against the paths it replaces (ResNet-50, channels_last, load ~3 on the 2 cores, so
  // minima of 10-20 calls over alternating processes; speedup over oneDNN in the same run):
  // 2 threads: res3a_branch2b b8 (per-row gather path) ~0.8-1.0x -> 0.93-1.08x, res4a b8 (class
  // path) 0.93-0.95x -> 1.06-1.10x, res3a b1 0.81x -> 0.98x; but res5a b8 (392 grad_output
  // pixels for 9.4 MB of weights) 1.46x -> 1.16x, and 1 thread (CPU time) 27.0 -> 29.0 ms: its
  // class path packs each weight block per thread while it is used, where this path packs all
  // weights in a pass of their own, so it needs >= 512 pixels. Slower too with few pixels or
  // channels: DCGAN's transposed 4x4 s2 512 -> 256 at batch 1 (16 pixels) 2.0 -> 9.3 ms, at
  // batch 8 9.2 -> 13.8 ms, 128 -> 64 at 16 x 16 1.06 -> 1.46 ms; stride 1 (forced): AlexNet
  // conv2 (5 x 5, C = 64) 5.6 -> 7.7 ms, ResNet-50 res4b at batch 1 4.65 -> 4.88 ms.
  return (g.stride_h > 1 || g.stride_w > 1) && g.c >= 128 && g.k >= 128 && g.n * g.p * g.q >= 512;
}

bool conv2d_input_grad_strided_gemm(const ConvGeometry& g, const at::Tensor& grad_output,
                                    const at::Tensor& weight, at::Tensor& grad_input) {
  const gemm::Kernels& kk = gemm::kernels_for_columns(g.c);  // (the input channels are the columns)
  const int64_t MR = kk.mr, NR = kk.nr, C = g.c, K = g.k;
  const int64_t kc_max = NR > 32 ? kGemmKC / 2 : kGemmKC;  // (B's micro-panel twice as wide at 6 x 64)
  const int64_t nt = ceil_div(C, NR), Cpad = nt * NR;
  const PhaseClasses pc(g);
  const float* src = nhwc_padded(grad_output, pc.top, pc.Hp, pc.left, pc.Wp, 0);
  float* packed = workspace(1, g.r * g.s * K * Cpad);

  std::vector<GemmClass> classes;
  int64_t steps = 0;  // packed so far
  for (int64_t rho = 0; rho < pc.n_rho; ++rho) {
    for (int64_t phi = 0; phi < pc.n_phi; ++phi) {
      GemmClass cl{rho, phi, 0, 0, pc.rows.residue(rho), pc.cols.residue(phi), pc.pixels(rho, phi), {}, {}};
      cl.nrow = pc.rows.count(cl.row_res);
      cl.ncol = pc.cols.count(cl.col_res);
      if (cl.ncol == 0) cl.nrow = 0;  // no tap: the class's pixels get zeros
      const int64_t len = cl.ncol * K;
      cl.per_run = std::max<int64_t>(1, ceil_div(len, kc_max));
      cl.kc_len = ceil_div(len, cl.per_run);
      for (int64_t run = 0; run < cl.nrow; ++run) {
        for (int64_t t0 = 0; t0 < len; t0 += cl.kc_len) {
          const int64_t kc = std::min(cl.kc_len, len - t0);
          cl.blocks.push_back({run, t0, kc, packed + steps * Cpad});
          steps += kc;
        }
      }
      cl.src_off = pc.source_offsets(rho, phi);
      classes.push_back(std::move(cl));
    }
  }

  // Pack: tap (r, s) = (row_res + (nrow - 1 - i) * stride_h, col_res + (ncol - 1 - jpos) *
  // stride_w) of a class is its row tap (run) i, steps jpos * K + k of the run. In parallel over
  // the layer's output channels k: weight[k] (C x R x S, in L1) goes to a 16-float row of every
  // panel of every tap. (A permuted copy of the weights first, then packed from rows, cost ~20%
  // of res5a_branch2b's time at batch 8: 9.4 MB through memory twice more; perf, 1 thread.)
  // weight[k] is first transposed to [tap][C] (8 x 8 register transposes) in a small buffer.
  struct TapSlot {
    int64_t cls = -1, run = 0, jpos = 0;  // cls -1: a tap no pixel uses (image under a stride)
  };
  std::vector<TapSlot> slots(g.r * g.s);
  for (int64_t c = 0; c < static_cast<int64_t>(classes.size()); ++c) {
    const GemmClass& cl = classes[c];
    for (int64_t i = 0; i < cl.nrow; ++i) {
      for (int64_t jpos = 0; jpos < cl.ncol; ++jpos) {
        const int64_t r = cl.row_res + (cl.nrow - 1 - i) * g.stride_h;
        const int64_t s = cl.col_res + (cl.ncol - 1 - jpos) * g.stride_w;
        slots[r * g.s + s] = {c, i, jpos};
      }
    }
  }
  const float* w = weight.data_ptr<float>();
  const int64_t wk = weight.stride(0), wc = weight.stride(1), wr = weight.stride(2), wsd = weight.stride(3);
  const int64_t RS = g.r * g.s;
  const bool taps_dense = wr == g.s && wsd == 1;  // weight[k] a [C][R * S] matrix, rows wc apart
  const auto transpose = pick_kernels()->transpose;  // non-null: the fast paths only
  at::parallel_for(0, K, 16, [&](int64_t begin, int64_t end) {
    float* by_tap = workspace(2, RS * C);  // weight[k] as [tap][C]
    for (int64_t k = begin; k < end; ++k) {
      if (taps_dense) {
        transpose(w + k * wk, wc, by_tap, C, C, RS);
      } else {
        for (int64_t tap = 0; tap < RS; ++tap) {
          for (int64_t c = 0; c < C; ++c) by_tap[tap * C + c] = w[k * wk + c * wc + (tap / g.s) * wr + (tap % g.s) * wsd];
        }
      }
      for (int64_t tap = 0; tap < RS; ++tap) {
        const TapSlot& slot = slots[tap];
        if (slot.cls < 0) continue;
        const GemmClass& cl = classes[slot.cls];
        const int64_t t = slot.jpos * K + k;
        const GemmBlock& b = cl.blocks[slot.run * cl.per_run + t / cl.kc_len];
        for (int64_t j = 0; j < nt; ++j) {
          float* d = b.packed + j * b.kc * NR + (t - b.t0) * NR;
          const float* src_row = by_tap + tap * C + j * NR;
          if ((j + 1) * NR <= C) {
            std::copy(src_row, src_row + NR, d);
          } else {
            const int64_t nc = std::min(NR, C - j * NR);
            for (int64_t i = 0; i < nc; ++i) d[i] = src_row[i];
            for (int64_t i = nc; i < NR; ++i) d[i] = 0.0f;
          }
        }
      }
    }
  });

  // Items: runs of up to 16 pixel panels x all channel panels, halved while the threads would
  // get fewer than 4 items each; then split over the threads by cost (pixels x channels x
  // steps), as classes differ up to 4x in steps (1 to 4 taps at 3 x 3 stride 2).
  const int64_t T = at::get_num_threads();
  int64_t pm = 16, nb = nt;
  const auto count_items = [&]() {
    int64_t n = 0;
    for (const GemmClass& cl : classes) n += ceil_div(ceil_div(cl.pixels, MR), pm) * ceil_div(nt, nb);
    return n;
  };
  while (count_items() < 4 * T && (pm > 2 || nb > 1)) {
    if (pm > 2) {
      pm = ceil_div(pm, 2);
    } else {
      nb = ceil_div(nb, 2);
    }
  }
  std::vector<GemmItem> items;
  std::vector<double> cost_end;  // cumulative cost through each item
  double total = 0;
  for (int64_t c = 0; c < static_cast<int64_t>(classes.size()); ++c) {
    const int64_t panels = ceil_div(classes[c].pixels, MR), red = classes[c].nrow * classes[c].ncol * K;
    for (int64_t p0 = 0; p0 < panels; p0 += pm) {
      for (int64_t j0 = 0; j0 < nt; j0 += nb) {
        items.push_back({c, p0, std::min(panels, p0 + pm), j0, std::min(nt, j0 + nb)});
        total += double(items.back().p1 - p0) * double(items.back().j1 - j0) * double(std::max<int64_t>(red, 1));
        cost_end.push_back(total);
      }
    }
  }
  const Dest out(grad_input);
  at::parallel_for(0, T, 1, [&](int64_t t_begin, int64_t t_end) {
    // this thread's items: from where the cumulative cost reaches t_begin / T of the total
    const auto share = [&](int64_t t) {
      return static_cast<int64_t>(std::lower_bound(cost_end.begin(), cost_end.end(), total * double(t) / double(T)) -
                                  cost_end.begin());
    };
    const int64_t begin = t_begin == 0 ? 0 : share(t_begin), end = t_end == T ? items.size() : share(t_end);
    const int64_t ldc = nb * NR;
    float* cbuf = workspace(2, pm * MR * ldc);
    std::vector<const float*> rows(pm * MR);
    std::vector<float*> cdst(pm);  // where each pixel panel's results go: grad_input or cbuf
    std::vector<int64_t> crs(pm);  // and the distance between its pixels there
    std::vector<char> buffered(pm);
    for (int64_t it = begin; it < end; ++it) {
      const GemmItem& item = items[it];
      const GemmClass& cl = classes[item.cls];
      const int64_t np = item.p1 - item.p0, npix = std::min(cl.pixels, item.p1 * MR) - item.p0 * MR;
      const int64_t c0 = item.j0 * NR, c1 = std::min(C, item.j1 * NR), ws = pc.sub_w(cl.phi);
      // A panel within one sub-image row is computed in place (its pixels stride_w * C floats
      // apart in grad_input); one that wraps to the next row, through cbuf. (All through cbuf,
      // the copies out of it took ~15% of res3a_branch2b's time at batch 8, perf, 1 thread.)
      for (int64_t ip = 0; ip < np; ++ip) {
        const int64_t idx = (item.p0 + ip) * MR, m = std::min(MR, npix - ip * MR);
        const bool in_place = !cl.blocks.empty() && idx % ws + m <= ws;
        cdst[ip] = in_place ? out.data + pc.nhwc_offset(cl.rho, cl.phi, idx) + c0 : cbuf + ip * MR * ldc;
        crs[ip] = in_place ? g.stride_w * C : ldc;
        buffered[ip] = !in_place;
      }
      if (cl.blocks.empty()) std::fill(cbuf, cbuf + npix * ldc, 0.0f);
      for (size_t kb = 0; kb < cl.blocks.size(); ++kb) {
        const GemmBlock& b = cl.blocks[kb];
        const float* base = src + pc.first_read(cl.rho, cl.phi, b.run) + b.t0;
        for (int64_t i = 0; i < np * MR; ++i) rows[i] = i < npix ? base + cl.src_off[item.p0 * MR + i] : kZeroSteps;
        for (int64_t j = item.j0; j < item.j1; ++j) {
          const int n = static_cast<int>(std::min(NR, C - j * NR));
          for (int64_t ip = 0; ip < np; ++ip) {
            const int m = static_cast<int>(std::min(MR, npix - ip * MR));
            kk.micro_a_ptrs(b.kc, rows.data() + ip * MR, b.packed + j * b.kc * NR, cdst[ip] + (j - item.j0) * NR,
                            crs[ip], 1, m, n, kb > 0, nullptr, false);
          }
        }
      }
      for (int64_t ip = 0; ip < np; ++ip) {
        if (!buffered[ip]) continue;
        for (int64_t i = ip * MR; i < std::min(npix, (ip + 1) * MR); ++i) {
          const float* row = cbuf + i * ldc;
          std::copy(row, row + (c1 - c0), out.data + pc.nhwc_offset(cl.rho, cl.phi, item.p0 * MR + i) + c0);
        }
      }
    }
  });
  strided_gemm_calls.fetch_add(1, std::memory_order_relaxed);
  return handled();
}

namespace {
int64_t strided_gemm_info() { return strided_gemm_calls.load(); }
}  // namespace

}  // namespace fastconv::cpu

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  // _conv2d_cpu_strided_gemm_info() -> int: how many input gradients the implicit-GEMM form of
  // csrc/cpu/conv2d_fast_stride2.cpp has computed in this process. For tests and benchmarks.
  m.def("_conv2d_cpu_strided_gemm_info() -> int", &fastconv::cpu::strided_gemm_info);
}
