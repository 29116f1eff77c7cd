// NCHW paths of the fast fp32 CPU convolution (contract in cpu/conv2d_fast.h), vectorized over
// output pixels (fastk::PixRow) instead of channels: an NCHW plane row is a run of adjacent
// pixels, so these read the input and write the result in place, with no transpose to NHWC
// and no strided stores. A register tile is max_m output channels x two vectors of pixels;
// each reduction step loads two vectors of source pixels and broadcasts one packed weight per
// channel. The `*_applies` functions send only 1x1 stride-1 convolutions over images at least
// 24 pixels wide here (see `narrow` for the measurements); the code below is written for any
// kernel with column stride 1 (taps, zero-padded staging), which those cases do not use.
//  - forward (column stride 1): the input is staged with its zero padding columns, so the
//    pixels of one output row read adjacent elements for every tap. A 1x1 stride-1
//    convolution reads the input as it is, one long row of H * W pixels per channel (a GEMM).
//  - input gradient (column stride 1): the gather form of cpu/conv2d_fast_grad.cpp over
//    grad_output staged with zero padding columns; input pixels of one row read adjacent
//    grad_output pixels through every tap.
// Work items are (image, group, row or pixel chunk, channel tile); the reduction order is
// fixed by the geometry (taps in order, then reduction steps ascending), never by threads.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "cpu/conv2d_fast_kernels.h"
#include "cpu/conv2d_fast_nchw.h"
#include "cpu/conv2d_fast_util.h"

namespace fastconv::cpu::fastk {
namespace {

// NCHW x (N, C, H, W) as rows of Wph * sw floats per (n, c, h): element j * sw + p of the
// zero-padded row (columns [left, left + W) hold x, the rest zero) stored at p * Wph + j.
// x's own memory when no padding or phase split is needed, else a copy in workspace `slot`.
const float* nchw_staged(const at::Tensor& x, int64_t left, int64_t Wp, int64_t sw, int slot) {
  const int64_t W = x.size(3), rows = x.size(0) * x.size(1) * x.size(2);
  const float* src = x.data_ptr<float>();
  if (sw == 1 && left == 0 && Wp == W) return src;
  const int64_t Wph = ceil_div(Wp, sw), len = Wph * sw;
  float* dst = workspace(slot, rows * len);
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* in = src + i * W;
      float* out = dst + i * len;
      if (sw == 1) {
        std::fill(out, out + left, 0.0f);
        std::copy(in, in + W, out + left);
        std::fill(out + left + W, out + len, 0.0f);
        continue;
      }
      for (int64_t p = 0; p < sw; ++p) {
        float* o = out + p * Wph;
        for (int64_t j = 0; j < Wph; ++j) {
          const int64_t col = j * sw + p - left;
          o[j] = (col >= 0 && col < W) ? in[col] : 0.0f;
        }
      }
    }
  });
  return dst;
}

// Weights (K, Cg, R, S) packed per tile of M destination channels as [G][T][tap][L][M] for
// the PixRow kernel, zero past the group's channel count. Forward (`gather` false): the
// destination channels are output channels, L = Cg. Input gradient (`gather` true): the
// destination channels are input channels, L = Kg. Every element is written, so no
// zero-fill. In parallel over (group, tile, chunk of 16 steps l): for each tap, the chunk's
// M floats per step are written in order (the taps are often a power-of-two multiple of
// 4 KiB apart: writing all taps of one step at once would put every write in the same cache
// set), gathered from weights (M x 16 x R x S floats) that stay in L1 across the taps.
at::Tensor pack_pix_weights(const ConvGeometry& g, const at::Tensor& weight, int64_t M, bool gather) {
  const int64_t G = g.groups, Cg = g.c_per_group(), Kg = g.k_per_group(), RS = g.r * g.s;
  const int64_t D = gather ? Cg : Kg, L = gather ? Kg : Cg, T = ceil_div(D, M);
  at::Tensor packed = at::empty({G, T, RS, L, M}, weight.options());
  const float* w = weight.data_ptr<float>();
  float* out = packed.data_ptr<float>();
  // element (k, c, r, s) at k * sk + c * sc + r * sr + s * ss (NCHW or channels_last weights)
  const int64_t sk = weight.stride(0), sc = weight.stride(1), sr = weight.stride(2), ss = weight.stride(3);
  const int64_t d_stride = gather ? sc : sk, l_stride = gather ? sk : sc;
  constexpr int64_t LC = 16;
  const int64_t chunks = ceil_div(L, LC);
  // Gather: the M x R x S weights of one tile and step are a short piece of one weight row, so
  // an item runs over all tiles (its 16 rows are then read in order, not piece by piece).
  const int64_t TI = gather ? T : 1;  // tiles per item
  at::parallel_for(0, G * (T / TI) * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      const int64_t l0 = (it % chunks) * LC, l1 = std::min(L, l0 + LC);
      const int64_t gt0 = (it / chunks) * TI;  // first (gi * T + t) of the item
      for (int64_t gt = gt0; gt < gt0 + TI; ++gt) {
        const int64_t t = gt % T, gi = gt / T;
        const int nvalid = static_cast<int>(std::min(M, D - t * M));
        for (int64_t tap = 0; tap < RS; ++tap) {
          for (int64_t l = l0; l < l1; ++l) {
            float* dst = out + ((gt * RS + tap) * L + l) * M;
            const float* e = w + gi * Kg * sk + t * M * d_stride + l * l_stride + (tap / g.s) * sr + (tap % g.s) * ss;
            for (int m = 0; m < nvalid; ++m) dst[m] = e[m * d_stride];
            for (int64_t m = nvalid; m < M; ++m) dst[m] = 0.0f;
          }
        }
      }
    }
  });
  return packed;
}

// Reduction steps per pass: the weights of one pass (taps x steps x M floats) fill about
// 16 KiB, half of L1.
int64_t pix_l_block(int64_t ntaps, int64_t M) {
  return std::max<int64_t>(8, (16 << 10) / (4 * M * std::max<int64_t>(ntaps, 1)));
}

// FASTCONV_NCHW_PIX=0 turns these NCHW paths off (NCHW then goes through the NHWC-staged
// kernels of cpu/conv2d_fast.cpp), for measuring one against the other.
bool pix_enabled() {
  const char* env = std::getenv("FASTCONV_NCHW_PIX");
  return env == nullptr || env[0] != '0';
}

// Only 1x1 stride-1 convolutions over rows of at least four register tiles of the NHWC kernel
// take these paths; everything else goes to the NHWC-staged kernels of cpu/conv2d_fast.cpp,
// whose weights are packed per block with vector transposes and whose tiles run across rows
// of narrow images. Measured (AVX2, 1 thread, this path / NHWC-staged): 3x3 and 5x5 kernels
// over 7- to 112-pixel rows 1.0-1.5x slower here (only 5x5 input gradients over 56-pixel rows
// were ~10% faster); 1x1 over 7 x 7 and 14 x 14 images 1.1-1.7x slower; 1x1 over 56 x 56
// images faster here (0.6-0.8x of the time); over 28 x 28 the forward pass faster (0.7x) and
// the input gradient slower (1.4x), one measurement on a loaded machine: kept here for now.
bool narrow(int64_t row_pixels) {
  const Kernels* kk = pick_kernels();
  return kk != nullptr && row_pixels < 4 * kk->max_m;
}

}  // namespace

bool nchw_forward_applies(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& output) {
  // Column stride 1 only: with sw > 1 the phase-split staging plus R x S short reductions
  // measured slower than the NHWC-staged kernel (3x3 stride 2, 128 channels: ~0.6x of it).
  return input.is_contiguous() && output.is_contiguous() && !g.depthwise() && g.stride_w == 1 &&
         g.pointwise() && !narrow(g.q) && pix_enabled();
}

bool nchw_forward(const Kernels& kk, const ConvGeometry& g, const at::Tensor& input,
                  const at::Tensor& weight, const at::Tensor& bias, at::Tensor& output) {
  const int64_t M = kk.max_m, G = g.groups, Cg = g.c_per_group(), Kg = g.k_per_group();
  const int64_t T = ceil_div(Kg, M), RS = g.r * g.s, C = g.c;
  const at::Tensor packed_t = pack_pix_weights(g, weight, M, false);
  at::Tensor bias_t;
  if (bias.defined()) {  // padded to whole tiles per group: [G][T * M]
    bias_t = at::zeros({G, T * M}, bias.options());
    bias_t.narrow(1, 0, Kg).copy_(bias.view({G, Kg}));
  }
  const float* packed = packed_t.data_ptr<float>();
  const float* bias_p = bias_t.defined() ? bias_t.data_ptr<float>() : nullptr;
  float* out = output.data_ptr<float>();
  const int64_t PQ = g.p * g.q;

  // Source rows: Wph * sw floats per (n, c, h); tap (r, s) of output pixel x reads padded
  // column x * sw + s * dil_w, i.e. phase (s * dil_w) % sw, element x + (s * dil_w) / sw.
  const bool flat = g.pointwise();
  const int64_t sw = g.stride_w;
  const int64_t Wp = std::max(g.pad_w + g.w, (g.q - 1) * sw + (g.s - 1) * g.dil_w + 1);
  const int64_t Wph = flat ? g.w : ceil_div(Wp, sw), row_len = flat ? g.w : Wph * sw;
  const float* src = flat ? input.data_ptr<float>() : nchw_staged(input, g.pad_w, Wp, sw, 0);
  const int64_t plane = g.h * row_len;

  // 1x1 stride 1: one long row of H * W pixels, cut into chunks whose input (Cg x chunk) stays
  // in L2 while every channel tile uses it. Otherwise one output row per item.
  const int64_t chunk = flat ? std::max<int64_t>(64, ceil_div((128 << 10) / (4 * std::max<int64_t>(Cg, 1)), 16) * 16) : g.q;
  const int64_t rows = flat ? ceil_div(PQ, chunk) : g.p;
  // Channel tiles fastest (the source rows stay in cache across tiles) when all the weights
  // fit in L2 next to them; otherwise rows fastest (one tile's weights stay in L1/L2).
  const bool tiles_inner = 4 * Kg * Cg * RS <= (256 << 10);
  const int64_t l_block = pix_l_block(RS, M);
  at::parallel_for(0, g.n * G * rows * T, 1, [&](int64_t begin, int64_t end) {
    std::vector<const float*> a(RS), w(RS);
    for (int64_t it = begin; it < end; ++it) {
      int64_t t, row;
      if (tiles_inner) {
        t = it % T;
        row = (it / T) % rows;
      } else {
        row = it % rows;
        t = (it / rows) % T;
      }
      const int64_t gi = (it / (rows * T)) % G, n = it / (rows * T * G);
      const float* w0 = packed + (gi * T + t) * RS * Cg * M;
      const float* x0 = src + (n * C + gi * Cg) * plane;
      int nt = 0;
      int64_t npix, first;
      if (flat) {
        first = row * chunk;
        npix = std::min(chunk, PQ - first);
        a[0] = x0 + first;
        w[0] = w0;
        nt = 1;
      } else {
        first = row * g.q;
        npix = g.q;
        for (int64_t r = 0; r < g.r; ++r) {
          const int64_t ih = row * g.stride_h - g.pad_h + r * g.dil_h;
          if (ih < 0 || ih >= g.h) continue;
          for (int64_t s = 0; s < g.s; ++s) {
            const int64_t col = s * g.dil_w;
            a[nt] = x0 + ih * row_len + (col % sw) * Wph + col / sw;
            w[nt] = w0 + (r * g.s + s) * Cg * M;
            ++nt;
          }
        }
      }
      const PixRow job{nt, a.data(), w.data(), Cg, plane, M, npix,
                       bias_p ? bias_p + (gi * T + t) * M : nullptr,
                       out + (n * g.k + gi * Kg + t * M) * PQ + first, PQ,
                       static_cast<int>(std::min(M, Kg - t * M)), l_block};
      kk.pix_row(job);
    }
  });
  return handled();
}

bool nchw_input_grad_applies(const ConvGeometry& g, const at::Tensor& grad_output,
                             const at::Tensor& grad_input) {
  return grad_output.is_contiguous() && grad_input.is_contiguous() && !g.depthwise() &&
         g.pointwise() && !narrow(g.w) && pix_enabled();
}

bool nchw_input_grad(const Kernels& kk, const ConvGeometry& g, const at::Tensor& grad_output,
                     const at::Tensor& weight, at::Tensor& grad_input) {
  const int64_t M = kk.max_m, G = g.groups, Cg = g.c_per_group(), Kg = g.k_per_group();
  const int64_t T = ceil_div(Cg, M), RS = g.r * g.s, K = g.k;
  const at::Tensor packed_t = pack_pix_weights(g, weight, M, true);
  const float* packed = packed_t.data_ptr<float>();
  float* out = grad_input.data_ptr<float>();
  const int64_t HW = g.h * g.w;
  // Input column iw reads grad_output column iw + pad_w - s * dil_w through kernel column s:
  // grad_output staged with Lc zero columns on the left and zeros up to column Qp.
  const int64_t Lc = std::max<int64_t>(0, (g.s - 1) * g.dil_w - g.pad_w);
  const int64_t Qp = Lc + std::max(g.q, g.w + g.pad_w);
  const float* src = nchw_staged(grad_output, Lc, Qp, 1, 0);
  const int64_t plane = g.p * Qp;
  const bool tiles_inner = 4 * Kg * Cg * RS <= (256 << 10);
  const int64_t l_block = pix_l_block(RS, M);
  at::parallel_for(0, g.n * G * g.h * T, 1, [&](int64_t begin, int64_t end) {
    std::vector<const float*> a(RS), w(RS);
    for (int64_t it = begin; it < end; ++it) {
      int64_t t, ih;
      if (tiles_inner) {
        t = it % T;
        ih = (it / T) % g.h;
      } else {
        ih = it % g.h;
        t = (it / g.h) % T;
      }
      const int64_t gi = (it / (g.h * T)) % G, n = it / (g.h * T * G);
      const float* w0 = packed + (gi * T + t) * RS * Kg * M;
      const float* y0 = src + (n * K + gi * Kg) * plane + Lc + g.pad_w;
      int nt = 0;
      for (int64_t r = 0; r < g.r; ++r) {
        const int64_t u = ih + g.pad_h - r * g.dil_h;  // = oh * stride_h for a tap that hits
        if (u < 0 || u % g.stride_h != 0 || u / g.stride_h >= g.p) continue;
        for (int64_t s = 0; s < g.s; ++s) {
          a[nt] = y0 + (u / g.stride_h) * Qp - s * g.dil_w;
          w[nt] = w0 + (r * g.s + s) * Kg * M;
          ++nt;
        }
      }
      const PixRow job{nt, a.data(), w.data(), Kg, plane, M, g.w, nullptr,
                       out + (n * g.c + gi * Cg + t * M) * HW + ih * g.w, HW,
                       static_cast<int>(std::min(M, Cg - t * M)), l_block};
      kk.pix_row(job);
    }
  });
  return handled();
}

}  // namespace fastconv::cpu::fastk
