// The hand-written fp32 CPU convolution (contract in cpu/conv2d_fast.h): dispatch, layout,
// weight packing and threading around the SIMD micro-kernels of cpu/conv2d_fast_kernels.h.
//
// 1x1 convolutions without groups or padding (any stride, both layouts, all three passes) are
// a packed GEMM instead: cpu/conv2d_fast_gemm.{h,cpp}, hooked in at the top of each entry
// (except channels_last forward passes over images of 56 x 56 pixels or more, where the
// direct kernel below measured faster: gemm::forward_applies). Before the GEMM (after Winograd
// and depthwise), forward passes with few pixels for many weights (channels_last, or NCHW
// 1x1; channels a multiple of the vector width, a weight whose (r, s, c) are one run per
// output channel) take the dot-product kernel of cpu/conv2d_fast_dot.cpp, which packs nothing; the
// input gradient of such stride-1 layers reads the weight in place too
// (cpu/conv2d_fast_dgrad_inplace.cpp, after the GEMM).
//
// Everything else runs on NHWC data (except NCHW 1x1 layers the GEMM does not take, stride 1
// over images at least 24 pixels wide: cpu/conv2d_fast_nchw.cpp). channels_last tensors are
// used in place; an NCHW input is transposed once into an NHWC buffer (that copy also writes
// the zero columns of the padding, so the kernels never test column bounds), and an NCHW
// result is stored from the register tiles through a small buffer (runs of pixels per
// channel). Rows of padding are not stored (taps whose row falls outside the image are
// skipped) except for narrow images.
//
// Weights are packed one register block at a time (cpu/conv2d_fast_pack.h). Where the staged
// source fits in L2 (always at batch 1), each thread packs the blocks it works on into its own
// buffer just before using them, blocks being the outermost loop; otherwise the whole weight
// is packed first. Both give the same kernel calls, so the same bits.
//
//  - forward: a direct convolution. One work item is (image, group, block of output
//    channels, output row); the micro-kernel holds a tile of pixels x channels in registers
//    and reduces over taps x input channels, with weights packed [tap][c][channel block].
//    Without groups and with unit column dilation, the kernel columns and the input channels
//    of one kernel row are one contiguous run of the padded input row (the S x C "fold"), so
//    each kernel row is a single reduction of length S*C: C = 3 first layers vectorize too.
//    1x1 stride-1 convolutions (grouped ones, large channels_last images; the others take
//    the GEMM) are a packed GEMM over the flattened image; narrow images (7x7, 14x14) use register tiles that run
//    across output rows (per-pixel source offsets) over a source padded in rows too.
//    The reduction is cut into blocks whose weights stay in L1 while a whole row uses them.
//  - input gradient: the same kernel in gather form. Input pixels of one stride phase
//    (iw = phase + j * stride) read consecutive grad_output pixels for every tap, so a phase
//    is one row of the forward kernel over zero-padded grad_output, with the weights packed
//    [tap][k][input channel block]; at unit stride the kernel columns fold (reversed), and
//    narrow images take tiles across rows as in the forward pass.
//  - weight gradient: a GEMM whose reduction runs over all output pixels. Work items are
//    tiles (group, output-channel block, run of kernel-tap x input-channel elements), so no
//    two threads ever add to the same element; each thread sweeps the pixels in fixed chunks
//    of output rows and accumulates into a per-element buffer; where the input's pixel stride
//    is large, each chunk is first packed into contiguous tiles (no L1 set conflicts).
//  - depthwise (groups == channels, multiplier 1): vectorized over channels, forward and
//    input gradient; its weight gradient goes to the generic kernels.
// Every sum has a fixed order set by the geometry alone, so results do not depend on the
// number of threads.
#include "cpu/conv2d_fast.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/conv2d_fast_dot.h"
#include "cpu/conv2d_fast_gemm.h"
#include "cpu/conv2d_fast_im2col.h"
#include "cpu/conv2d_fast_kernels.h"
#include "cpu/conv2d_fast_nchw.h"
#include "cpu/conv2d_fast_pack.h"
#include "cpu/conv2d_fast_util.h"
#include "cpu/conv2d_fast_winograd.h"

namespace fastconv::cpu {
namespace {

using fastk::ConvRow;
using fastk::DepthwiseRow;
using fastk::Kernels;
using fastk::WgradTile;
using namespace fastk;

// Forward-pass problem in NHWC with the input's columns padded.
struct ForwardPlan {
  int64_t B, G, Cg, Kg, KB, ntaps, L;
  bool fold;  // one tap per kernel row, reducing over S x Cg contiguous elements
};

// Weights (K, Cg, R, S) packed as [G][KB][tap][L][B], zero past Kg (pack_block_forward per
// block, in parallel over blocks).
at::Tensor pack_forward_weights(const Kernels& kk, const WeightView& w, const ForwardPlan& p) {
  at::Tensor packed = at::empty({p.G, p.KB, p.ntaps, p.L, p.B}, at::TensorOptions().dtype(at::kFloat));
  float* out = packed.data_ptr<float>();
  const int64_t block = p.ntaps * p.L * p.B;
  at::parallel_for(0, p.G * p.KB, 1, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      const int64_t gi = it / p.KB, kb = it % p.KB;
      const int nvalid = static_cast<int>(std::min(p.B, p.Kg - kb * p.B));
      pack_block_forward(kk, w, gi * p.Kg + kb * p.B, nvalid, p.B, out + it * block);
    }
  });
  return packed;
}

bool depthwise_forward(const Kernels& kk, const ConvGeometry& g, const at::Tensor& input,
                       const at::Tensor& weight, const at::Tensor& bias, at::Tensor& output) {
  const int64_t B = kk.block, C = g.c, CB = ceil_div(C, B), RS = g.r * g.s;
  const int64_t Wp = std::max(g.pad_w + g.w, (g.q - 1) * g.stride_w + (g.s - 1) * g.dil_w + 1);
  const float* src = nhwc_with_column_padding(input, g.pad_w, Wp, 0);
  const at::Tensor taps_t = weight.reshape({C, -1}).t().contiguous();  // [R * S][C]
  const float* taps = taps_t.data_ptr<float>();
  const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
  const Dest out(output);
  at::parallel_for(0, g.n * CB * g.p, 1, [&](int64_t begin, int64_t end) {
    std::vector<const float*> a(RS), w(RS);
    for (int64_t it = begin; it < end; ++it) {
      const int64_t oh = it % g.p, cb = (it / g.p) % CB, n = it / (g.p * CB);
      int nt = 0;
      for (int64_t r = 0; r < g.r; ++r) {
        const int64_t ih = oh * g.stride_h - g.pad_h + r * g.dil_h;
        if (ih < 0 || ih >= g.h) continue;
        for (int64_t s = 0; s < g.s; ++s, ++nt) {
          a[nt] = src + ((n * g.h + ih) * Wp + s * g.dil_w) * C + cb * B;
          w[nt] = taps + (r * g.s + s) * C + cb * B;
        }
      }
      const DepthwiseRow row{nt, a.data(), w.data(), g.stride_w * C, g.q, b ? b + cb * B : nullptr,
                             out.at(n, cb * B, oh, 0), out.sx, out.sc,
                             static_cast<int>(std::min(B, C - cb * B))};
      kk.depthwise_row(row);
    }
  });
  return handled();
}

}  // namespace

bool conv2d_forward_fast(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias, at::Tensor& output) {
  if (input.scalar_type() != at::kFloat) return false;
  const Kernels* kk = pick_kernels();
  if (kk == nullptr || g.c_per_group() == 0) return false;
  if (output.numel() == 0) return handled();
  if (winograd_applies(g, input)) return conv2d_forward_winograd(g, input, weight, bias, output);
  if (g.depthwise() && g.k == g.c) return depthwise_forward(*kk, g, input, weight, bias, output);
  if (dot::forward_applies(g, input, weight, output)) return dot::conv2d_forward_dot(g, input, weight, bias, output);
  if (gemm::forward_applies(g, input)) return gemm::conv2d_forward_gemm(g, input, weight, bias, output);
  if (im2col::forward_applies(g, input, output)) return im2col::conv2d_forward_im2col(g, input, weight, bias, output);

  ForwardPlan p;
  p.B = kk->block;
  p.G = g.groups;
  p.Cg = g.c_per_group();
  p.Kg = g.k_per_group();
  p.KB = ceil_div(p.Kg, p.B);
  p.fold = p.G == 1 && g.dil_w == 1;
  p.ntaps = p.fold ? g.r : g.r * g.s;
  p.L = p.fold ? g.s * p.Cg : p.Cg;
  if (nchw_forward_applies(g, input, output)) return nchw_forward(*kk, g, input, weight, bias, output);
  at::Tensor bias_t;
  if (bias.defined()) {  // padded to whole blocks per group: [G][KB * B]
    bias_t = at::zeros({p.G, p.KB * p.B}, bias.options());  // small: K floats
    bias_t.narrow(1, 0, p.Kg).copy_(bias.view({p.G, p.Kg}));
  }
  // 1x1 stride 1: the image is one long row of h * w pixels, cut into chunks for balance.
  // Narrow images (q < 4 tiles): register tiles run across output rows over a source padded in
  // rows too, so a 7 x 7 image is 9 tiles of 6 pixels rather than 7 rows of 6 + 1, and each
  // L1 block of weights serves the whole chunk. Otherwise one work item is one output row.
  const bool flat = g.pointwise();
  const bool across = !flat && g.q < 4 * kk->max_m;
  const int64_t pq = g.p * g.q;
  const int64_t chunk = flat ? 16 * kk->max_m
                      : across ? ceil_div(ceil_div(pq, ceil_div(pq, 16 * kk->max_m)), kk->max_m) * kk->max_m
                               : g.q;
  const int64_t rows = (flat || across) ? ceil_div(pq, chunk) : g.p;
  const int64_t top = across ? g.pad_h : 0;
  const int64_t Hp = across ? std::max(g.pad_h + g.h, (g.p - 1) * g.stride_h + (g.r - 1) * g.dil_h + 1) : g.h;
  const int64_t Wp = std::max(g.pad_w + g.w, (g.q - 1) * g.stride_w + (g.s - 1) * g.dil_w + 1);
  const float* src = nhwc_padded(input, top, Hp, g.pad_w, Wp, 0);
  std::vector<int64_t> pix_off(across ? pq : 0);  // source offset of output pixel y * q + x
  for (int64_t i = 0; i < static_cast<int64_t>(pix_off.size()); ++i) {
    pix_off[i] = ((i / g.q) * g.stride_h * Wp + (i % g.q) * g.stride_w) * g.c;
  }
  const float* bias_p = bias_t.defined() ? bias_t.data_ptr<float>() : nullptr;
  const Dest out(output);

  // Packed weights: where the whole (staged) input fits in L2, each thread packs the blocks
  // its work items use into its own buffer right before using them (blocks outermost, so each
  // is packed once per thread that touches it), and the packed weights never go through
  // memory; this matters most where there are few pixels per weight (small images, batch 1).
  // Otherwise all blocks are packed up front and every image reads them.
  const int64_t C = g.c, block = p.ntaps * p.L * p.B;
  const WeightView wv(weight);
  // A 1x1 layer whose weights fit in L2 instead runs all blocks over one chunk of pixels
  // before the next (blocks fastest): each chunk of the input is read once, from L1/L2, and
  // the weights stay in L2 (measured, res2a 1x1 layers at 1 thread: 10-15% faster).
  const bool rows_outer = flat && 4 * p.Kg * p.Cg <= (256 << 10);
  const bool fused = !rows_outer && (g.n == 1 || g.n * Hp * Wp * C * 4 <= (512 << 10));
  at::Tensor packed_t;
  if (!fused) packed_t = pack_forward_weights(*kk, wv, p);
  const float* packed = fused ? nullptr : packed_t.data_ptr<float>();
  const int64_t l_block = l1_reduction_block(p.ntaps, p.B, kDirectPassBytes);
  at::parallel_for(0, g.n * p.G * p.KB * rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<const float*> a(p.ntaps), b(p.ntaps);
    int64_t have = -1;  // block (gi * KB + kb) now in the thread's buffer
    for (int64_t it = begin; it < end; ++it) {
      // item order: (image, group, block, row); (group, block, image, row) when fused;
      // (image, row, group, block) when rows_outer
      const int64_t GKB = p.G * p.KB;
      const int64_t row = rows_outer ? (it / GKB) % rows : it % rows;
      const int64_t n = fused ? (it / rows) % g.n : it / (rows * GKB);
      const int64_t gk = rows_outer ? it % GKB : fused ? it / (rows * g.n) : (it / rows) % GKB;  // gi * KB + kb
      const int64_t kb = gk % p.KB, gi = gk / p.KB;
      const float* w0;
      if (fused) {
        float* buf = workspace(2, block);
        if (gk != have) {
          pack_block_forward(*kk, wv, gi * p.Kg + kb * p.B, static_cast<int>(std::min(p.B, p.Kg - kb * p.B)),
                             p.B, buf);
          have = gk;
        }
        w0 = buf;
      } else {
        w0 = packed + gk * block;
      }
      ConvRow job{};
      int nt = 0;
      if (across) {
        const int64_t x0 = row * chunk;
        for (int64_t r = 0; r < g.r; ++r) {
          for (int64_t s = 0; s < (p.fold ? 1 : g.s); ++s) {
            a[nt] = src + ((n * Hp + r * g.dil_h) * Wp + s * g.dil_w) * C + gi * p.Cg;
            b[nt] = w0 + (p.fold ? r : r * g.s + s) * p.L * p.B;
            ++nt;
          }
        }
        job.pix_off = pix_off.data() + x0;
        job.npix = std::min(chunk, pq - x0);
        job.dst = out.at(n, gi * p.Kg + kb * p.B, 0, 0) + x0 * out.sx;
      } else if (flat) {
        const int64_t x0 = row * chunk;
        a[0] = src + (n * g.h * g.w + x0) * C + gi * p.Cg;
        b[0] = w0;
        nt = 1;
        job.npix = std::min(chunk, g.p * g.q - x0);
        job.dst = out.at(n, gi * p.Kg + kb * p.B, 0, 0) + x0 * out.sx;  // y * sy = y * q * sx
      } else {
        for (int64_t r = 0; r < g.r; ++r) {
          const int64_t ih = row * g.stride_h - g.pad_h + r * g.dil_h;
          if (ih < 0 || ih >= g.h) continue;
          for (int64_t s = 0; s < (p.fold ? 1 : g.s); ++s) {
            a[nt] = src + ((n * g.h + ih) * Wp + s * g.dil_w) * C + gi * p.Cg;
            b[nt] = w0 + (p.fold ? r : r * g.s + s) * p.L * p.B;
            ++nt;
          }
        }
        job.npix = g.q;
        job.dst = out.at(n, gi * p.Kg + kb * p.B, row, 0);
      }
      job.ntaps = nt;
      job.a = a.data();
      job.b = b.data();
      job.L = p.L;
      job.a_pix = flat ? C : g.stride_w * C;
      job.init = bias_p ? bias_p + (gi * p.KB + kb) * p.B : nullptr;
      job.d_pix = out.sx;
      job.d_chan = out.sc;
      job.nvalid = static_cast<int>(std::min(p.B, p.Kg - kb * p.B));
      job.l_block = l_block;
      kk->conv_row(job);
    }
  });
  return handled();
}

namespace {
std::tuple<std::string, int64_t> fast_info() {
  const Kernels* k = pick_kernels();
  return {k ? k->isa : "generic", handled_calls.load()};
}
}  // namespace

}  // namespace fastconv::cpu

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  // _conv2d_cpu_fast_info() -> (isa, handled): the instruction set the hand-written fp32 CPU
  // convolution kernels use at this moment ("avx512", "avx2", or "generic" when they are off:
  // no AVX2 or FASTCONV_CPU_KERNELS=generic) and how many conv calls they have handled in this
  // process (the rest went to the generic kernels). For tests and the benchmark report.
  m.def("_conv2d_cpu_fast_info() -> (str, int)", &fastconv::cpu::fast_info);
}
