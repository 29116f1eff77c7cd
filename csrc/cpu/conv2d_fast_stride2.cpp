// The input gradient of column-strided convolutions (cpu/conv2d_fast_stride2.h) as a sum of
// stride-1 sub-convolutions.
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

#include <algorithm>
#include <vector>

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

// n floats, n usually a channel block (16, 32): fixed-size copies compile to a few vector
// moves, where std::copy would call memmove for each pixel.
inline void copy_floats(const float* s, int64_t n, float* d) {
  switch (n) {
    case 16: for (int i = 0; i < 16; ++i) d[i] = s[i]; return;
    case 32: for (int i = 0; i < 32; ++i) d[i] = s[i]; return;
    default: std::copy(s, s + n, d);
  }
}

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
  const TapClasses rows_c{g.r, g.stride_h, g.pad_h}, cols{g.s, g.stride_w, g.pad_w};
  const int64_t n_rho = std::min(g.stride_h, g.h), n_phi = std::min(g.stride_w, g.w);
  const auto sub_h = [&](int64_t rho) { return ceil_div(g.h - rho, g.stride_h); };
  const auto sub_w = [&](int64_t phi) { return ceil_div(g.w - phi, g.stride_w); };

  // grad_output padded so that every tap of every class reads inside it: rows [top, top + p)
  // and columns [left, left + q) hold grad_output, the rest zeros.
  int64_t top = 0, bottom = g.p, left = 0, right = g.q;  // rows / columns read: [-top, bottom)
  for (int64_t rho = 0; rho < n_rho; ++rho) {
    const int64_t n = rows_c.count(rows_c.residue(rho));
    if (n == 0) continue;
    const int64_t o = rows_c.first_out(rho);
    top = std::max(top, -o);
    bottom = std::max(bottom, o + sub_h(rho) + n - 1);
  }
  for (int64_t phi = 0; phi < n_phi; ++phi) {
    const int64_t n = cols.count(cols.residue(phi));
    if (n == 0) continue;
    const int64_t o = cols.first_out(phi);
    left = std::max(left, -o);
    right = std::max(right, o + sub_w(phi) + n - 1);
  }
  const int64_t Hp = top + bottom, Wp = left + right;
  const float* src = nhwc_padded(grad_output, top, Hp, left, Wp, 0);

  // The pixels of a class, over all images (image, then sub-image row, then column), and the
  // source offset of each (per class: (rho, phi) at rho * n_phi + phi). Tiles and chunks may
  // span images: a pixel's sum is the same whichever tile computes it, so the batch size does
  // not change any bit, and a 7 x 7 sub-image no longer ends in a 1-pixel tile.
  const auto class_pixels = [&](int64_t rho, int64_t phi) { return g.n * sub_h(rho) * sub_w(phi); };
  std::vector<std::vector<int64_t>> pix_off(n_rho * n_phi);
  for (int64_t rho = 0; rho < n_rho; ++rho) {
    for (int64_t phi = 0; phi < n_phi; ++phi) {
      std::vector<int64_t>& off = pix_off[rho * n_phi + phi];
      const int64_t hs = sub_h(rho), ws = sub_w(phi);
      off.resize(class_pixels(rho, phi));
      for (int64_t i = 0; i < static_cast<int64_t>(off.size()); ++i) {
        off[i] = ((i / (hs * ws)) * Hp * Wp + ((i / ws) % hs) * Wp + i % ws) * K;
      }
    }
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
        const int64_t oh0 = rows_c.first_out(ch.rho), ow0 = cols.first_out(ch.phi);
        for (int64_t i = 0; i < nrow; ++i) {  // kernel row r reads grad_output row y + oh0 + i
          const int64_t r = row_res + (nrow - 1 - i) * g.stride_h;
          a[nt] = src + ((top + oh0 + i) * Wp + left + ow0) * K;  // image 0: pix_off adds n
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

}  // namespace fastconv::cpu
