// The weight gradient as one explicit-im2col GEMM on the packed 1x1 GEMM (cpu/conv2d_fast_gemm.h):
//   dW[K, C*R*S] = sum over n of dY_n[K, P] Col_n[P, C*R*S]
// Col_n row p holds the input values that output pixel p sees through every (c, r, s), in
// grad_weight's own memory order, padding as zeros, so the GEMM writes dW in place: (c, r, s)
// for NCHW, (r, s, c) for channels_last (whose grad_weight is channels_last too: each tap's
// channels are then one copy of an input pixel).
// The direct weight-gradient kernel (cpu/conv2d_fast_grad.cpp) accumulates per (run, tile) into
// a buffer as large as dW and reorders it into dW afterwards: where a layer has few pixels per
// weight (res5b at batch 1: 49 pixels for 2.4 M weights) those passes over dW, not the
// multiply-adds, take its time. Here dW is written once, from the GEMM's register tile.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>

#include "cpu/conv2d_fast_gemm.h"
#include "cpu/conv2d_fast_im2col.h"
#include "cpu/conv2d_fast_util.h"
#include "cpu/conv2d_fast_winograd.h"

namespace fastconv::cpu::im2col {
namespace {

using fastk::ceil_div;

// Col for images [n0, n0 + nb): col[((n - n0) * P + p) * ld + (c * R + r) * S + s], or with
// taps_outer col[((n - n0) * P + p) * ld + (r * S + s) * C + c] (NHWC input only); ld >= C R S.
void build_columns(const ConvGeometry& g, const at::Tensor& input, int64_t n0, int64_t nb, bool taps_outer,
                   int64_t ld, float* col) {
  const int64_t C = g.c, H = g.h, W = g.w, RS = g.r * g.s, P = g.p * g.q;
  const float* x = input.data_ptr<float>();
  const bool nhwc = input.stride(1) == 1 && C > 1;
  const int64_t xs_n = input.stride(0), xs_c = input.stride(1), xs_h = input.stride(2), xs_w = input.stride(3);
  at::parallel_for(0, nb * g.p, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = n0 + row / g.p, oh = row % g.p;
      float* out = col + (row / g.p * P + oh * g.q) * ld;  // the row's Q pixels, ld floats apart
      const float* img = x + n * xs_n;
      if (taps_outer) {  // per pixel and tap, the C channels of the input pixel, copied whole
        for (int64_t ow = 0; ow < g.q; ++ow) {
          float* dst = out + ow * ld;
          for (int64_t r = 0; r < g.r; ++r) {
            const int64_t ih = oh * g.stride_h - g.pad_h + r * g.dil_h;
            for (int64_t s = 0; s < g.s; ++s, dst += C) {
              const int64_t iw = ow * g.stride_w - g.pad_w + s * g.dil_w;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
                std::fill(dst, dst + C, 0.0f);
              } else {
                const float* src = img + ih * xs_h + iw * xs_w;
                std::copy(src, src + C, dst);
              }
            }
          }
        }
        continue;
      }
      if (nhwc) {
        // per pixel and tap, the C channels of the input pixel, scattered to stride RS
        for (int64_t ow = 0; ow < g.q; ++ow) {
          float* dst = out + ow * ld;
          for (int64_t r = 0; r < g.r; ++r) {
            const int64_t ih = oh * g.stride_h - g.pad_h + r * g.dil_h;
            for (int64_t s = 0; s < g.s; ++s) {
              const int64_t iw = ow * g.stride_w - g.pad_w + s * g.dil_w, t = r * g.s + s;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
                for (int64_t c = 0; c < C; ++c) dst[c * RS + t] = 0.0f;
              } else {
                const float* src = img + ih * xs_h + iw * xs_w;
                for (int64_t c = 0; c < C; ++c) dst[c * RS + t] = src[c];
              }
            }
          }
        }
        continue;
      }
      // NCHW: per channel, the R input rows it reads stay in L1 across the row's pixels, and
      // each pixel's R * S values are written contiguously
      for (int64_t c = 0; c < C; ++c) {
        const float* plane = img + c * xs_c;
        for (int64_t ow = 0; ow < g.q; ++ow) {
          float* dst = out + ow * ld + c * RS;
          for (int64_t r = 0; r < g.r; ++r) {
            const int64_t ih = oh * g.stride_h - g.pad_h + r * g.dil_h;
            const bool row_in = ih >= 0 && ih < H;
            for (int64_t s = 0; s < g.s; ++s) {
              const int64_t iw = ow * g.stride_w - g.pad_w + s * g.dil_w;
              dst[r * g.s + s] = row_in && iw >= 0 && iw < W ? plane[ih * xs_h + iw * xs_w] : 0.0f;
            }
          }
        }
      }
    }
  });
}

// Col floats at most (images are taken in chunks of at most this much, 128 MiB, each chunk's
// GEMM adding to dW); FASTCONV_CPU_WGRAD_IM2COL_FLOATS sets another cap (tests).
int64_t max_column_floats() {
  const char* env = std::getenv("FASTCONV_CPU_WGRAD_IM2COL_FLOATS");
  return env != nullptr ? std::max<int64_t>(1, std::atoll(env)) : int64_t{32} << 20;
}

std::atomic<int64_t> calls{0};

int mode() {
  const char* env = std::getenv("FASTCONV_CPU_WGRAD_IM2COL");
  return env == nullptr ? -1 : (env[0] == '0' ? 0 : 1);
}

}  // namespace

bool weight_grad_applies(const ConvGeometry& g, const at::Tensor& grad_output) {
  if (grad_output.scalar_type() != at::kFloat || g.groups != 1 || fastk::pick_kernels() == nullptr) return false;
  if (g.r == 1 && g.s == 1) return false;  // the 1x1 GEMM reads the input as it is
  const int m = mode();
  if (m >= 0) return m == 1;
  // Images of at most 64 output pixels and at least 1024 weights per output channel: there the
  // direct kernel's passes over its dW-sized buffer cost more than its multiply-adds, and the
  // GEMM's columns fill its tile. 2 threads, best of 5-6 interleaved, direct -> this path, NCHW
  // / channels_last: 512x7x7 -> 512 3x3 batch 1 4.07 -> 2.45 / 4.05 -> 2.50 ms; 512x14x14 -> 512
  // stride 2 batch 8 12.0 -> 11.8 / 15.4 -> 14.0; DCGAN's 4x4 stride-2 transposed layer 512x4x4
  // -> 256 (a 256x8x8 -> 512 weight gradient) batch 1 3.45 -> 1.51 / 3.20 -> 1.35. Not
  // elsewhere: 256x14x14 -> 256 batch 1 1.58 -> 2.01 / 2.45 -> 2.52; first layers (C = 3) 2-3x
  // slower (few columns, long Col).
  if (g.p * g.q > 64 || g.c * g.r * g.s < 1024) return false;
  // Where the Winograd weight gradient runs, only with few tiles and many channels: its
  // transformed partial sums (16 K C floats) cost as the direct kernel's buffer does, unless
  // enough tiles share them. AVX-512, 2 threads, best of 6-8 interleaved, channels_last / NCHW,
  // F(2x2) -> this path: 512x7x7 -> 512 batch 1 5.34 -> 2.74 / 6.20 -> 3.15 ms, batch 2 (32
  // tiles) 5.83 -> 3.58 / 5.91 -> 5.02, batch 3 (48) 6.05 -> 6.54 / 6.59 -> 6.96, batch 8 10.9
  // -> 13.2 / 13.3 -> 17.2; 256x8x8 -> 256 batch 1 0.536 -> 0.516 / 0.729 -> 1.096.
  if (winograd_weight_grad_applies(g, grad_output)) {
    const int64_t tiles2 = g.n * ceil_div(g.p, 2) * ceil_div(g.q, 2);
    return tiles2 < 48 && g.c * g.k > 256 * 256;
  }
  return true;
}

bool conv2d_weight_grad_im2col(const ConvGeometry& g, const at::Tensor& grad_output, const at::Tensor& input,
                               at::Tensor& grad_weight) {
  // Col's columns are in grad_weight's memory order: (C, R, S), or (R, S, C) for the
  // channels_last tensor of cpu/conv2d.cpp (which comes with NHWC activations)
  const bool taps_outer = !grad_weight.is_contiguous();
  TORCH_INTERNAL_ASSERT(!taps_outer || (grad_weight.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                                        input.stride(1) == 1));
  // Col's rows are ld floats apart: CRS rounded up to an odd number of 64-byte lines, so the
  // rows the GEMM reads in place (Kernels::micro_b_rows, one step per row) fall in all of L1's
  // sets. With CRS = 4608 (512 channels x 3 x 3), 288 lines apart, they fell in two of its 64.
  // res5b_branch2b (512x7x7 -> 512, batch 1), 2 threads, best of 12 interleaved: NCHW 1.88 ->
  // 1.71 and 2.00 -> 1.79 ms; channels_last 1.57 -> 1.49 and 1.42 -> 1.43 ms. (The cap on
  // Col counts CRS floats per row: the padding adds less than two lines to each.)
  const int64_t CRS = g.c * g.r * g.s, P = g.p * g.q, ld = fastk::odd_lines<float>(CRS);
  const int64_t images = std::max<int64_t>(1, std::min(g.n, max_column_floats() / std::max<int64_t>(1, P * CRS)));
  float* col = fastk::workspace(3, images * P * ld);
  float* gw = grad_weight.data_ptr<float>();
  for (int64_t n0 = 0; n0 < g.n; n0 += images) {
    const int64_t nb = std::min(images, g.n - n0);
    build_columns(g, input, n0, nb, taps_outer, ld, col);
    gemm::Problem pr;
    pr.M = g.k;
    pr.N = CRS;
    pr.K = P;
    pr.batch = nb;
    pr.reduce_batch = true;
    pr.accumulate = n0 > 0;
    pr.a = grad_output.data_ptr<float>() + n0 * grad_output.stride(0);
    pr.a_rs = grad_output.stride(1), pr.a_cs = grad_output.stride(3), pr.a_batch = grad_output.stride(0);
    pr.b = col, pr.b_rs = ld, pr.b_cs = 1, pr.b_batch = P * ld;
    pr.c = gw, pr.c_rs = grad_weight.stride(0), pr.c_cs = 1;
    gemm::run(pr);
  }
  calls.fetch_add(1, std::memory_order_relaxed);
  return fastk::handled();
}

namespace {
int64_t wgrad_im2col_info() { return calls.load(); }
}  // namespace

}  // namespace fastconv::cpu::im2col

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  // _conv2d_cpu_wgrad_im2col_info() -> int: how many weight gradients the explicit-im2col GEMM
  // (csrc/cpu/conv2d_fast_wgrad_im2col.cpp) has computed in this process. For tests.
  m.def("_conv2d_cpu_wgrad_im2col_info() -> int", &fastconv::cpu::im2col::wgrad_im2col_info);
}
