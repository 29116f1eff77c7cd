// The input gradient with a channels_last weight read in place (cpu/conv2d_fast_dgrad_inplace.h),
// for stride-1 layers with few pixels and many weights (ResNet-50 res5b_branch2b at batch 1: 49
// pixels, 2.4 M weights).
//
// dX[pixel][c] = sum over taps (r, s), output channels k of dY[pixel + pad - (r, s)][k] *
// W[k][r][s][c]. In a channels_last weight the channels of one (k, r, s) are adjacent, so a
// block of input channels at one reduction step is two vectors of the weight itself, the steps
// (k) a whole weight row apart: the ConvRow kernel reads them in place (ConvRow::b_ld) and the
// weight is never packed ahead. The direct kernel's packing gathers those same 128-byte pieces
// from every weight row once per channel block, which with 49 pixels costs a quarter of the
// pass. Here the first tile of each row stores the pieces it loads (ConvRow::b_copy) and the
// row's other tiles read that copy: the rows' stride (R S C floats, a multiple of 2 KiB for C a
// multiple of 512) puts all of a block's pieces in 2 of the L1's 64 sets and 32 of the L2's
// 1024. 2 threads, best of 11-21 interleaved, in place -> with the copy: 512x7x7 -> 512 3x3
// batch 1 1.75 -> 1.52 ms, batch 2 3.45 -> 3.13; 256x7x7 -> 256 0.44 -> 0.38.
// Loop order: output channels in chunks (outermost, per thread), then the thread's channel
// blocks, then every pixel: a chunk's weights (all taps, the thread's channels) stay in L2
// while all its blocks and tiles use them, and the partial sums wait in dX (ConvRow::accumulate).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <vector>

#include "cpu/conv2d_fast_dgrad_inplace.h"
#include "cpu/conv2d_fast_util.h"

namespace fastconv::cpu {
namespace {

using namespace fastk;

std::atomic<int64_t> inplace_calls{0};

int inplace_mode() {
  const char* env = std::getenv("FASTCONV_CPU_DGRAD_INPLACE");
  return env == nullptr || env[0] == '\0' ? -1 : (env[0] == '0' ? 0 : 1);
}

}  // namespace

bool inplace_input_grad_applies(const Kernels& kk, const ConvGeometry& g, const at::Tensor& grad_output,
                                const at::Tensor& weight, const at::Tensor& grad_input) {
  const int m = inplace_mode();
  if (m == 0 || grad_output.scalar_type() != at::kFloat || g.groups != 1) return false;
  if (g.stride_h != 1 || g.stride_w != 1 || g.dil_h != 1 || g.dil_w != 1) return false;
  if (g.pad_h > g.r - 1 || g.pad_w > g.s - 1) return false;  // every tap of every pixel in the padded dY
  // whole blocks only: the kernel loads both vectors of a block from the weight itself
  if (g.c % kk.block != 0) return false;
  if (!channels_adjacent(grad_output) || !channels_adjacent(grad_input) || !weight_taps_outer(weight)) return false;
  if (m == 1) return true;
  // At most 128 input pixels for at least 1024 weights per input channel (as the dot-product
  // forward, cpu/conv2d_fast_dot.cpp). 2 threads, best of 6-12 interleaved, channels_last,
  // direct kernel -> this path: 512x7x7 -> 512 3x3 batch 1 1.56 -> 1.32 ms, batch 2 3.12 ->
  // 2.92; 256x7x7 -> 256 0.42 -> 0.34. Equal at 196 pixels (512x14x14 without Winograd 4.88 vs
  // 4.77 ms); 1x1 layers keep the GEMM, which runs first (equal or faster: 1024x7x7 -> 1024
  // 0.71 vs 0.75 ms).
  return few_pixels_many_weights(g.n * g.h * g.w, g.k * g.r * g.s);
}

bool conv2d_input_grad_inplace(const Kernels& kk, const ConvGeometry& g, const at::Tensor& grad_output,
                               const at::Tensor& weight, at::Tensor& grad_input) {
  const int64_t K = g.k, C = g.c, B = kk.block, CB = C / B, RS = g.r * g.s;
  // dY padded so that input pixel (y, x) reads padded pixel (y + R-1 - r, x + S-1 - s) through
  // tap (r, s)
  const int64_t top = g.r - 1 - g.pad_h, left = g.s - 1 - g.pad_w;
  const int64_t Hp = std::max(top + g.p, g.h + g.r - 1), Wp = std::max(left + g.q, g.w + g.s - 1);
  const float* src = nhwc_padded(grad_output, top, Hp, left, Wp, 0);
  const int64_t npix = g.n * g.h * g.w;
  std::vector<int64_t> pix_off(npix);
  for (int64_t i = 0; i < npix; ++i) {
    const int64_t n = i / (g.h * g.w), y = (i / g.w) % g.h, x = i % g.w;
    pix_off[i] = ((n * Hp + y) * Wp + x) * K;
  }
  std::vector<int64_t> a_tap(RS), w_tap(RS);
  for (int64_t t = 0; t < RS; ++t) {
    const int64_t r = t / g.s, s = t % g.s;
    a_tap[t] = ((g.r - 1 - r) * Wp + (g.s - 1 - s)) * K;
    w_tap[t] = r * weight.stride(2) + s * weight.stride(3);
  }
  const float* w = weight.data_ptr<float>();
  const int64_t wk = weight.stride(0);
  // Output channels per chunk: the chunk's weights for half the channels (a thread's share at 2
  // threads) about 512 KiB, at least 16 steps per pass. A function of the geometry only (it
  // sets the summation order).
  const int64_t kc = std::min(K, std::max<int64_t>(16, (int64_t{256} << 10) / (RS * C)));
  float* dx = grad_input.data_ptr<float>();
  at::parallel_for(0, CB, 1, [&](int64_t cb0, int64_t cb1) {
    std::vector<const float*> a(RS), b(RS);
    float* b_copy = workspace(2, RS * kc * B);  // ConvRow::b_copy
    for (int64_t k0 = 0; k0 < K; k0 += kc) {
      for (int64_t cb = cb0; cb < cb1; ++cb) {
        for (int64_t t = 0; t < RS; ++t) {
          a[t] = src + a_tap[t] + k0;
          b[t] = w + k0 * wk + w_tap[t] + cb * B;
        }
        ConvRow row{};
        row.ntaps = static_cast<int>(RS);
        row.a = a.data();
        row.b = b.data();
        row.L = std::min(kc, K - k0);
        row.a_pix = K;
        row.npix = npix;
        row.dst = dx + cb * B;
        row.d_pix = C;
        row.d_chan = 1;
        row.nvalid = static_cast<int>(B);
        row.l_block = row.L;
        row.pix_off = pix_off.data();
        row.b_ld = wk;
        row.accumulate = k0 > 0;
        row.b_copy = b_copy;
        kk.conv_row(row);
      }
    }
  });
  inplace_calls.fetch_add(1, std::memory_order_relaxed);
  return handled();
}

namespace {
int64_t inplace_info() { return inplace_calls.load(); }
}  // namespace

}  // namespace fastconv::cpu

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  // _conv2d_cpu_dgrad_inplace_info() -> int: how many input gradients the in-place-weight path
  // (csrc/cpu/conv2d_fast_dgrad_inplace.cpp) has computed in this process. For tests.
  m.def("_conv2d_cpu_dgrad_inplace_info() -> int", &fastconv::cpu::inplace_info);
}
