// The Winograd weight gradient of 3x3, stride-1 or stride-2, undilated, ungrouped layers on
// the CPU, fp32 and fp64 (contract in cpu/conv2d_fast_winograd.h; kernels and the math in
// cpu/conv2d_fast_winograd_wgrad_kernels.h).
//
// grad_output is cut into m x m tiles (stride 1: m = 2 or 4, alpha = m + 2; stride 2: m = 2,
// alpha = 5; the input patch of a tile is the alpha x alpha window its outputs read, padding
// read as zero, never stored). Then
//  1. per work item, a (slice of tiles, group of output channels) pair: chunk by chunk, the
//     input patches into V[xi][tile][C] (B^T d B) and the grad_output tiles of the group's
//     channels into U[xi][tile][k] (A g A^T), then for each of the alpha^2 values xi one GEMM
//     M_s[xi][k][c] += sum over the chunk's tiles of U[xi][t][k] V[xi][t][c], the tiles in
//     order (a register-tiled outer-product kernel);
//  2. per output channel k: dW[k][c] = G^T (sum over slices s of M_s[.][k][c]) G.
// The slices (runs of consecutive tiles with their own partial sums M_s, added in slice order)
// are a function of the geometry alone; the threads only change which item runs where, and
// the output-channel groups do not change any sum. So the result is bit-identical at any
// thread count. Memory: the slices' M (alpha^2 x K x C each) plus per thread one chunk of V
// and U; NCHW operands are transposed once to NHWC.
//
// Accuracy (fp32, unit normals, C = K = 64, 2 x 24 x 24 outputs, vs an fp64 reference; asserted
// in tests/test_conv2d_winograd.py): max |error| / (eps x rms(dW)) is 39 for the direct kernel,
// 25 for F(2x2,3x3) and 170 for F(4x4,3x3). Stride 2: see tests/test_conv2d_winograd_stride2.py.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu/conv2d_fast_util.h"
#include "cpu/conv2d_fast_winograd.h"
#include "cpu/conv2d_fast_winograd_wgrad_kernels.h"

namespace fastconv::cpu {
namespace {

using fastk::ceil_div;
using fastk::odd_lines;

std::atomic<int64_t> weight_grad_calls{0};

int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Output channels per group are a multiple of this (the GEMM's rows and the vector width).
constexpr int64_t kGroupAlign = 24;

// The tile size m for the weight gradient, or 0 for the direct kernel. A function of the
// geometry only (and FASTCONV_CPU_WINOGRAD, see cpu/conv2d_fast_winograd.h). Measured on the
// ResNet-50 3x3 layers at batch 1 and 8 (AVX2, numbers in the README): F(2x2) beats the direct
// kernel from 49 tiles (res4b at batch 1, 1.3-1.6x) up (res2a: 1.5x); at 16 tiles (res5b at
// batch 1) it only ties. F(4x4) does 0.56x F(2x2)'s multiplications but transforms 36 values
// per tile and keeps 2.25x the partial sums: it was never clearly faster (at best +15% on
// res4b at batch 8, within the noise), and it is ~7x less accurate, so it is not picked.
// In fp64 the alternative is the generic direct kernel, 2-10x slower than F(2x2) on all four
// layers at batch 1 (res5b included), so there it takes every layer with C, K >= 32.
// With the AVX-512 kernels F(2x2) beats the direct kernel at any tile count (2 threads, best of
// 8 interleaved, channels_last / NCHW, direct -> F(2x2): 1x64x8x8 -> 64 0.125 -> 0.092 / 0.125 ->
// 0.110 ms, 1x128x6x6 -> 128 0.253 -> 0.183 / 0.299 -> 0.227, 1x256x4x4 -> 256 0.828 -> 0.504 /
// 0.966 -> 0.583), so there it takes every layer with C, K >= 32 too (few-pixel layers with many
// weights go to the im2col GEMM first, see cpu/conv2d_fast_wgrad_im2col.cpp).
// Stride 2: 25 products per 2 x 2 tile against the direct kernel's 36, where the tiles waste
// few outputs (at most 3/4 of the direct products, as in the forward pass) and one side has at
// most 64 channels, where the direct kernel is slow. Measured (AVX-512, 2 threads, best of 6
// interleaved, channels_last, Winograd vs the default path; NCHW alike): C -> K 56 x 56 batch 8:
// 64 -> 64 3.2 vs 4.9 ms, 64 -> 128 5.7 vs 7.8; 128 -> 64 28 x 28 2.1 vs 2.4; 64 -> 64 batch 1
// 0.58 vs 0.57. With more channels the direct kernel wins at batch 8 (res3a_branch2b 12.1 vs
// 11.6 ms, res4a_branch2b 15.1 vs 13.2) and at batch 1 on res3a (2.4 vs 2.1), though not on
// res4a at batch 1-2 (2.5 vs 2.8, 3.6 vs 4.3).
bool stride2_wgrad_pays(const ConvGeometry& g) {
  return std::min(g.c, g.k) <= 64 && winograd_stride2_pays(ceil_div(g.p, 2) * ceil_div(g.q, 2), g.p * g.q);
}

int pick_wgrad_tile(const ConvGeometry& g, bool fp64) {
  const int forced = winograd_forced_tile(g.stride_h);
  if (forced >= 0) return forced;
  if (g.c < 32 || g.k < 32) return 0;
  if (g.stride_h == 2) return stride2_wgrad_pays(g) ? 2 : 0;
  const int64_t tiles2 = g.n * ceil_div(g.p, 2) * ceil_div(g.q, 2);
  return tiles2 >= 32 || fp64 || fastk::avx512_picked() ? 2 : 0;
}

// Slices (independent partial sums) for `tiles` tiles: about 256 tiles each (so each GEMM
// call amortizes its accumulator loads), at most 16, and at most 64 MiB of partial sums.
int64_t slices_for(int64_t tiles, int64_t msize_bytes) {
  const int64_t by_memory = std::max<int64_t>(1, (int64_t(64) << 20) / msize_bytes);
  return std::clamp<int64_t>(tiles / 256, 1, std::min<int64_t>(16, by_memory));
}

// Thread-local scratch, reused across calls, aligned to 64 bytes (the GEMM reads whole lines):
// slot 0 for one chunk's transforms (per worker), slot 1 for the slices' partial sums (the
// calling thread; every element is written by the GEMMs before it is read).
template <class T>
T* scratch(int slot, int64_t elements) {
  thread_local std::vector<T> v[2];
  return fastk::aligned_scratch(v[slot], elements);
}

// x (N, C, H, W) as NHWC data: its own memory when channels_last, else a transposed copy
// (fp32: in the fast kernels' workspace `slot`; fp64: in `keep`).
template <class T>
const T* as_nhwc(const at::Tensor& x, int slot, at::Tensor& keep) {
  if constexpr (std::is_same_v<T, float>) {
    return fastk::nhwc_padded(x, 0, x.size(2), 0, x.size(3), slot);
  } else {
    const at::Tensor nhwc = x.permute({0, 2, 3, 1});
    if (nhwc.is_contiguous()) return x.data_ptr<T>();
    keep = nhwc.contiguous();
    return keep.data_ptr<T>();
  }
}

template <class T>
void run(const wino::WgradKernels<T>& kw, const ConvGeometry& g, const at::Tensor& grad_output,
         const at::Tensor& input, at::Tensor& grad_weight) {
  const int64_t m = kw.m, A2 = int64_t(kw.alpha) * kw.alpha, W = kw.width;
  const int64_t C = g.c, K = g.k, P = g.p, Q = g.q;
  const int64_t TH = ceil_div(P, m), TW = ceil_div(Q, m), tiles = g.n * TH * TW;
  at::Tensor keep_x, keep_g;
  const T* src = as_nhwc<T>(input, 0, keep_x);
  const T* gsrc = as_nhwc<T>(grad_output, 1, keep_g);

  // M_s[xi][k][c]: rows of Cp (a whole number of register tiles) for k < Kr.
  const int64_t Cp = round_up(C, 2 * W), Kr = round_up(K, wino::kRows);
  const int64_t msize = A2 * Kr * Cp;
  const int64_t S = slices_for(tiles, msize * static_cast<int64_t>(sizeof(T)));
  const int64_t slice_tiles = ceil_div(tiles, S);
  const int64_t nslices = ceil_div(tiles, slice_tiles);
  T* M = scratch<T>(1, nslices * msize);

  // Groups of output channels: enough work items for the threads (the groups never change a
  // sum, only how the work is split); each group transforms all of the input again.
  const int64_t threads = at::get_num_threads();
  const int64_t max_groups = ceil_div(K, kGroupAlign);
  const int64_t ngroups = std::clamp<int64_t>(ceil_div(2 * threads, nslices), 1, max_groups);
  const int64_t group = round_up(ceil_div(K, ngroups), kGroupAlign);
  const int64_t groups = ceil_div(K, group);
  const int64_t ldv = odd_lines<T>(Cp), ldu = odd_lines<T>(round_up(round_up(group, wino::kRows), W));
  // Tiles per chunk: V and U of a chunk within about 384 KiB, so the GEMMs read them from L2
  // right after the transforms wrote them; but at least 32 tiles, and 128 where the group's
  // accumulators (read and written once per chunk) exceed 2 MiB and come from memory.
  const int64_t tile_bytes = sizeof(T) * A2 * (ldv + ldu), acc_bytes = sizeof(T) * A2 * group * Cp;
  const int64_t min_chunk = acc_bytes > (int64_t(2) << 20) ? 128 : 32;
  const int64_t chunk = std::min(slice_tiles, std::max(min_chunk, (int64_t(384) << 10) / tile_bytes));

  at::parallel_for(0, nslices * groups, 1, [&](int64_t begin, int64_t end) {
    T* V = scratch<T>(0, A2 * chunk * (ldv + ldu));
    T* U = V + A2 * chunk * ldv;
    for (int64_t it = begin; it < end; ++it) {
      const int64_t s = it / groups, gi = it % groups;
      const int64_t k0 = gi * group, kn = std::min(group, K - k0);
      const int64_t krows = round_up(kn, wino::kRows), kout = round_up(krows, W);
      const int64_t s0 = s * slice_tiles, s1 = std::min(tiles, s0 + slice_tiles);
      for (int64_t t0 = s0; t0 < s1; t0 += chunk) {
        const int64_t nt = std::min(chunk, s1 - t0);
        for (int64_t t = 0; t < nt; ++t) {
          const int64_t tile = t0 + t, n = tile / (TH * TW), ty = (tile / TW) % TH, tx = tile % TW;
          const int64_t step = m * kw.stride;  // input pixels between tiles
          const wino::WPatch<T> in{src + n * g.h * g.w * C, g.w * C, C, ty * step - g.pad_h, tx * step - g.pad_w,
                                   g.h, g.w, C, Cp, V + t * ldv, chunk * ldv};
          kw.input(in);
          const wino::WPatch<T> go{gsrc + n * P * Q * K + k0, Q * K, K, ty * m, tx * m,
                                   P, Q, kn, kout, U + t * ldu, chunk * ldu};
          kw.grad(go);
        }
        for (int64_t xi = 0; xi < A2; ++xi) {
          const wino::WGemm<T> mm{U + xi * chunk * ldu, ldu, V + xi * chunk * ldv, ldv, nt,
                                  M + s * msize + (xi * Kr + k0) * Cp, Cp, krows, Cp, t0 == s0};
          kw.gemm(mm);
        }
      }
    }
  });

  T* dw = grad_weight.data_ptr<T>();
  const bool channels_last = !grad_weight.is_contiguous();  // then (K, 3, 3, C) in memory
  at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
    const wino::WReduce<T> r{M, nslices, msize, Kr * Cp, Cp, begin, end, C, dw, channels_last};
    kw.reduce(r);
  });
}

}  // namespace

bool winograd_weight_grad_applies(const ConvGeometry& g, const at::Tensor& grad_output) {
  const auto dtype = grad_output.scalar_type();
  const bool stride1 = g.stride_h == 1 && g.stride_w == 1, stride2 = g.stride_h == 2 && g.stride_w == 2;
  return (dtype == at::kFloat || dtype == at::kDouble) && g.groups == 1 && g.r == 3 && g.s == 3 &&
         (stride1 || stride2) && g.dil_h == 1 && g.dil_w == 1 && g.c > 0 && g.k > 0 &&
         g.n * g.p * g.q > 0 && fastk::pick_kernels() != nullptr && pick_wgrad_tile(g, dtype == at::kDouble) != 0;
}

bool conv2d_weight_grad_winograd(const ConvGeometry& g, const at::Tensor& grad_output,
                                 const at::Tensor& input, at::Tensor& grad_weight) {
  const int m = pick_wgrad_tile(g, grad_output.scalar_type() == at::kDouble);
  const bool avx512 = fastk::avx512_picked();
  if (grad_output.scalar_type() == at::kFloat) {
    run<float>(avx512 ? wino::avx512_wgrad_kernels_f32(m, g.stride_h) : wino::avx2_wgrad_kernels_f32(m, g.stride_h),
               g, grad_output, input, grad_weight);
  } else {
    run<double>(avx512 ? wino::avx512_wgrad_kernels_f64(m, g.stride_h) : wino::avx2_wgrad_kernels_f64(m, g.stride_h),
                g, grad_output, input, grad_weight);
  }
  weight_grad_calls.fetch_add(1, std::memory_order_relaxed);
  return fastk::handled();
}

namespace {
int64_t winograd_wgrad_info() { return weight_grad_calls.load(); }
}  // namespace

}  // namespace fastconv::cpu

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  // _conv2d_cpu_winograd_wgrad_info() -> int: how many weight gradients the Winograd CPU
  // convolution has computed in this process. For tests and the benchmark report.
  m.def("_conv2d_cpu_winograd_wgrad_info() -> int", &fastconv::cpu::winograd_wgrad_info);
}
