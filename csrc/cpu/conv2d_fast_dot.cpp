// The dot-product forward convolution (contract in cpu/conv2d_fast_dot.h).
//
// out[pixel][k] = bias[k] + sum over taps t, channels c of x[pixel + tap t][c] * w[k][t][c]:
// channels_last activations and a channels_last weight both hold c adjacent, so a register
// tile of M pixels x N output channels multiplies M input vectors by N weight vectors per
// step of one vector of channels (M + N loads for M N multiply-adds; 4 x 6 on AVX-512, 3 x 4
// on AVX2), every accumulator holding a vector of partial sums that are added up once, at the
// end of the reduction. Nothing is packed.
// Work items are runs of output channels; each runs all pixels tile by tile, so its N weight
// rows are read from memory once and then from L2, and the (padded) input stays in L2.
// The summation order (taps, then channels by lane, then the lanes by a fixed tree) depends on
// the geometry alone, so results do not depend on the thread count.
#include "cpu/conv2d_fast_dot.h"

#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <vector>

#include "cpu/conv2d_fast_util.h"

namespace fastconv::cpu::dot {
namespace {

// A tile's inputs: pixel i's input (tap 0) at src + pix[i], tap t at + tap_off[t]; output
// channel k's weights of tap t at w + k * wk + t * C; result (pixel i, channel k) at
// dst[d_off[i] + k * d_chan].
struct Job {
  const float* src;
  const int64_t* pix;
  const int64_t* tap_off;
  int ntaps;
  int64_t C;
  const float* w;
  int64_t wk;
  const float* bias;
  float* dst;
  const int64_t* d_off;
  int64_t d_chan;
};

}  // namespace
}  // namespace fastconv::cpu::dot

// The tiles per instruction set (cpu/conv2d_fast_dot_tile.inc). Only intrinsics and plain
// loops under the target pragmas: a standard template instantiated there could be kept by the
// linker for the whole library.
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace fastconv::cpu::dot::avx512 {
namespace {
struct Vec {
  using reg = __m512;
  static constexpr int W = 16;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(reg v) { return _mm512_reduce_add_ps(v); }
};
}  // namespace
}  // namespace fastconv::cpu::dot::avx512
#define FC_DOT_NS avx512
#include "cpu/conv2d_fast_dot_tile.inc"
#undef FC_DOT_NS
namespace fastconv::cpu::dot::avx512 {
// 4 pixels x 6 channels: 24 accumulators + 4 inputs + 1 weight of the 32 zmm registers
constexpr int kPixels = 4, kChannels = 6, kWidth = Vec::W;
void run(const Job& j, int64_t npix, int64_t k0, int64_t k1) {
  run_channels<Vec, kPixels, kChannels>(j, npix, k0, k1);
}
}  // namespace fastconv::cpu::dot::avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace fastconv::cpu::dot::avx2 {
namespace {
struct Vec {
  using reg = __m256;
  static constexpr int W = 8;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(reg v) {  // ((l0 + h0) + (l2 + h2)) + ((l1 + h1) + (l3 + h3))
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
  }
};
}  // namespace
}  // namespace fastconv::cpu::dot::avx2
#define FC_DOT_NS avx2
#include "cpu/conv2d_fast_dot_tile.inc"
#undef FC_DOT_NS
namespace fastconv::cpu::dot::avx2 {
// 3 pixels x 4 channels: 12 accumulators + 3 inputs + 1 weight of the 16 ymm registers
constexpr int kPixels = 3, kChannels = 4, kWidth = Vec::W;
void run(const Job& j, int64_t npix, int64_t k0, int64_t k1) {
  run_channels<Vec, kPixels, kChannels>(j, npix, k0, k1);
}
}  // namespace fastconv::cpu::dot::avx2
#pragma GCC pop_options

namespace fastconv::cpu::dot {
namespace {

std::atomic<int64_t> calls{0};

int mode() {
  const char* env = std::getenv("FASTCONV_CPU_DOT");
  return env == nullptr || env[0] == '\0' ? -1 : (env[0] == '0' ? 0 : 1);
}

// The tiles of the instruction set pick_kernels() runs (nullptr: no SIMD kernels): `run` takes
// output channels in groups of `group`, channels in steps of `width`.
struct Tiles {
  void (*run)(const Job&, int64_t, int64_t, int64_t);
  int64_t group, width;
};
const Tiles* tiles() {
  static const Tiles on_avx512{&avx512::run, avx512::kChannels, avx512::kWidth},
      on_avx2{&avx2::run, avx2::kChannels, avx2::kWidth};
  if (fastk::pick_kernels() == nullptr) return nullptr;
  return fastk::avx512_picked() ? &on_avx512 : &on_avx2;
}

}  // namespace

bool forward_applies(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                     const at::Tensor& output) {
  const int m = mode();
  const Tiles* t = tiles();
  if (m == 0 || input.scalar_type() != at::kFloat || t == nullptr || g.groups != 1 || g.c % t->width != 0) return false;
  const bool nhwc = fastk::channels_adjacent(input) && fastk::channels_adjacent(output);
  // NCHW: the input staged as NHWC, the result stored a plane per channel. (An NCHW 3x3 weight
  // transposed into (K, R, S, C) rows cost more than the kernel saved: res5b_branch2b batch 1
  // 1.73 -> 1.96 ms. So the weight must be one run per output channel as it is: 1x1 layers.)
  const bool nchw = input.is_contiguous() && output.is_contiguous();
  if ((!nhwc && !nchw) || !fastk::weight_taps_outer(weight)) return false;
  if (m == 1) return true;
  // At most 128 output pixels for at least 1024 weights per output channel. 2 threads, best of
  // 5-12 interleaved, channels_last, the path taken before -> this one: ResNet-50
  // res5b_branch2b (512x7x7 -> 512) batch 1 1.40 -> 1.16 ms and 1.62 -> 1.30 ms (direct
  // kernel), batch 2 2.74 -> 2.40; res5a_branch2b (512x14x14 -> 512, stride 2) batch 1 2.20 ->
  // 1.33 (implicit GEMM); 1024x14x14 -> 1024 stride 2 batch 1 9.90 -> 6.17. Beyond that the
  // others amortize their packing: equal or slower here at 196 pixels and more (256x14x14 ->
  // 256, 128x28x28 -> 128 stride 2 0.35 -> 0.40, AlexNet conv2 2.23 -> 2.31, res5b batch 8
  // 7.50 -> 7.74 against Winograd). 1x1 layers too, against the packed GEMM (which packs the
  // weight as B panels): 2048x7x7 -> 512 batch 1 0.78 -> 0.56 ms, batch 2 1.56 -> 1.31;
  // 1024x7x7 -> 1024 0.85 -> 0.62; 1024x14x14 -> 2048 stride 2 batch 1 1.94 -> 1.40, batch 2
  // 3.05 -> 2.80; equal at 512 -> 2048 (512 weights per channel) and 1024x14x14 -> 256. NCHW
  // 1x1 layers against the GEMM: 2048x7x7 -> 512 batch 1 0.74 -> 0.66 ms, 1024x14x14 -> 2048
  // stride 2 1.76 -> 1.55.
  // The AVX2 tiles (an AVX2-only AMD EPYC, 2 threads, best of 5-7 interleaved, the path taken
  // before -> this one), channels_last: res5b_branch2b batch 1 1.60 -> 1.41 ms, batch 2 3.05 ->
  // 2.87; res5a_branch2b batch 1 2.01 -> 1.71; 1x1 1024x7x7 -> 1024 0.80 -> 0.68, 1024x14x14 ->
  // 2048 stride 2 1.62 -> 1.37, 2048x7x7 -> 512 0.79 -> 0.78, 512x7x7 -> 2048 0.78 -> 0.67;
  // 128x28x28 -> 128 stride 2 (196 pixels) 0.41 -> 0.40. NCHW 1x1: 2048x7x7 -> 512 0.85 ->
  // 0.81, 1024x14x14 -> 2048 stride 2 1.70 -> 1.39.
  return fastk::few_pixels_many_weights(g.n * g.p * g.q, g.c * g.r * g.s);
}

bool conv2d_forward_dot(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                        const at::Tensor& bias, at::Tensor& output) {
  // the input padded in rows and columns, so every tap of every pixel exists
  const int64_t Hp = std::max(g.pad_h + g.h, (g.p - 1) * g.stride_h + (g.r - 1) * g.dil_h + 1);
  const int64_t Wp = std::max(g.pad_w + g.w, (g.q - 1) * g.stride_w + (g.s - 1) * g.dil_w + 1);
  const float* src = fastk::nhwc_padded(input, g.pad_h, Hp, g.pad_w, Wp, 0);
  const int64_t npix = g.n * g.p * g.q;
  std::vector<int64_t> pix(npix), tap_off(g.r * g.s);
  for (int64_t i = 0; i < npix; ++i) {
    const int64_t n = i / (g.p * g.q), y = (i / g.q) % g.p, x = i % g.q;
    pix[i] = ((n * Hp + y * g.stride_h) * Wp + x * g.stride_w) * g.c;
  }
  for (int64_t t = 0; t < g.r * g.s; ++t) tap_off[t] = ((t / g.s) * g.dil_h * Wp + (t % g.s) * g.dil_w) * g.c;
  // result element (pixel i, channel k) at d_off[i] + k * d_chan, in either format
  const bool nhwc = output.stride(1) == 1;
  const int64_t PQ = g.p * g.q, d_chan = nhwc ? 1 : PQ;
  std::vector<int64_t> d_off(npix);
  for (int64_t i = 0; i < npix; ++i) d_off[i] = nhwc ? i * g.k : (i / PQ) * g.k * PQ + i % PQ;
  const Job job{src, pix.data(), tap_off.data(), static_cast<int>(g.r * g.s), g.c, weight.data_ptr<float>(),
                weight.stride(0),
                bias.defined() ? bias.data_ptr<float>() : nullptr, output.data_ptr<float>(), d_off.data(), d_chan};
  const Tiles& t = *tiles();
  at::parallel_for(0, fastk::ceil_div(g.k, t.group), 1, [&](int64_t begin, int64_t end) {
    t.run(job, npix, begin * t.group, std::min(g.k, end * t.group));
  });
  calls.fetch_add(1, std::memory_order_relaxed);
  return fastk::handled();
}

namespace {
int64_t dot_info() { return calls.load(); }
}  // namespace

}  // namespace fastconv::cpu::dot

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  // _conv2d_cpu_dot_info() -> int: how many forward passes the dot-product kernel
  // (csrc/cpu/conv2d_fast_dot.cpp) has computed in this process. For tests.
  m.def("_conv2d_cpu_dot_info() -> int", &fastconv::cpu::dot::dot_info);
}
