// BatchNorm family kernels (contracts: schemas/batch_norm.cpp, formulas: common/batch_norm.h).
// Device code only, compiled by nvcc and by g++ against csrc/simt (SIMT.md): no ATen, no
// <<<>>>, no inline PTX, no __CUDA_ARCH__ bodies. Launch plans: cuda/launch/batch_norm.h.
//
// Tensors are (outer, C, inner) with element (o, c, i) at (o * C + c) * inner + i: NCHW is
// (N, C, H*W), channels_last and (N, C) input are (N*H*W, C, 1). Per-channel vectors are
// contiguous acc_t arrays (the host converts them). scalar_t is the storage type, acc_t the
// compute type (float for half/bf16).
//
// Per-channel reductions (statistics; backward sums) are two deterministic launches:
//   1. a partial per (channel, chunk): each thread accumulates its elements in a fixed
//      order, then warp shuffles and a block reduction through shared memory merge the
//      threads in a fixed tree (Chan's formula for statistics, sums for the backward);
//   2. one thread per channel merges its chunks' partials in chunk order (the grid-level
//      reduction for large N*H*W). No floating-point atomics anywhere.
#pragma once
#include <cstdint>

#include "common/batch_norm.h"
#include "cuda/launch/launch.h"

namespace fastconv {
namespace FC_KERNEL_NS {

constexpr int kBnThreads = 256;       // every kernel's block size
constexpr int kBnRowsWarps = 8;       // rows kernels: blockDim (32 channels, 8 rows)

struct BnShape {
  int64_t outer, c, inner;
};

// Three accumulators: (count, mean, m2) for statistics, (sum_dy, sum_dy_xmu, unused) for the
// backward reduce.
template <typename acc_t>
struct BnAcc {
  acc_t a, b, c;
};

// ---- what is accumulated --------------------------------------------------------------------
// Statistics: Welford's update per element, Chan's merge between threads and chunks. Values
// are shifted by a pivot, the channel's first value x[c * inner] (its (0, c, 0) element), so
// that a large common offset (mean 1e4, std 1e-2) does not cost the running mean its digits;
// bn_stats_finish adds the pivot back.
template <typename scalar_t, typename acc_t>
struct BnStatsOp {
  const scalar_t* x;
  int64_t inner;
  __device__ __forceinline__ static BnAcc<acc_t> identity() { return {0, 0, 0}; }
  __device__ __forceinline__ void add(BnAcc<acc_t>& s, int64_t index, int64_t c) const {
    const acc_t v = static_cast<acc_t>(x[index]) - static_cast<acc_t>(x[c * inner]);
    s.a += acc_t(1);
    const acc_t d = v - s.b;
    s.b += d / s.a;
    s.c += d * (v - s.b);
  }
  __device__ __forceinline__ static BnAcc<acc_t> merge(const BnAcc<acc_t>& p,
                                                       const BnAcc<acc_t>& q) {
    const Welford<acc_t> w = welford_merge(Welford<acc_t>{p.a, p.b, p.c},
                                           Welford<acc_t>{q.a, q.b, q.c});
    return {w.count, w.mean, w.m2};
  }
};

// Backward: sum of the ReLU-masked gradient g and of g * (x - mean).
template <typename scalar_t, typename acc_t>
struct BnBackwardOp {
  const scalar_t* dy;
  const scalar_t* x;
  const scalar_t* residual;  // null without residual
  const acc_t* alpha;
  const acc_t* beta;
  const acc_t* mean;
  bool relu;
  __device__ __forceinline__ static BnAcc<acc_t> identity() { return {0, 0, 0}; }
  __device__ __forceinline__ void add(BnAcc<acc_t>& s, int64_t index, int64_t c) const {
    const acc_t xv = static_cast<acc_t>(x[index]);
    acc_t pre = xv * alpha[c] + beta[c];
    if (residual != nullptr) pre += static_cast<acc_t>(residual[index]);
    const acc_t g = bn_masked_grad(static_cast<acc_t>(dy[index]), pre, relu);
    s.a += g;
    s.b += g * (xv - mean[c]);
  }
  __device__ __forceinline__ static BnAcc<acc_t> merge(const BnAcc<acc_t>& p,
                                                       const BnAcc<acc_t>& q) {
    return {p.a + q.a, p.b + q.b, acc_t(0)};
  }
};

template <class Op, typename acc_t>
__device__ __forceinline__ BnAcc<acc_t> bn_shfl_down(const BnAcc<acc_t>& s, int offset) {
  return {__shfl_down_sync(0xffffffffu, s.a, offset), __shfl_down_sync(0xffffffffu, s.b, offset),
          __shfl_down_sync(0xffffffffu, s.c, offset)};
}

// Merges the 256 threads' accumulators of a 1-D block; the result is valid in thread 0.
template <class Op, typename acc_t>
__device__ __forceinline__ BnAcc<acc_t> bn_block_reduce(BnAcc<acc_t> s) {
  __shared__ BnAcc<acc_t> warp_results[kBnThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) s = Op::merge(s, bn_shfl_down<Op>(s, offset));
  if (lane == 0) warp_results[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < kBnThreads / 32 ? warp_results[lane] : Op::identity();
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) s = Op::merge(s, bn_shfl_down<Op>(s, offset));
  }
  return s;
}

// ---- reduction, planar layout (inner > 1) ---------------------------------------------------
// Grid (chunks, C): block (k, c) covers values j in [k * chunk, (k+1) * chunk) of channel c,
// j = o * inner + i. partials[c * chunks + k].
template <class Op, typename acc_t>
__global__ void __launch_bounds__(kBnThreads)
    bn_reduce_planar(Op op, BnShape s, int64_t chunk, BnAcc<acc_t>* partials) {
  const int64_t c = blockIdx.y;
  const int64_t count = s.outer * s.inner;
  const int64_t begin = int64_t(blockIdx.x) * chunk;
  const int64_t end = begin + chunk < count ? begin + chunk : count;
  BnAcc<acc_t> acc = Op::identity();
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const int64_t o = j / s.inner, i = j - o * s.inner;
    op.add(acc, (o * s.c + c) * s.inner + i, c);
  }
  acc = bn_block_reduce<Op>(acc);
  if (threadIdx.x == 0) partials[c * gridDim.x + blockIdx.x] = acc;
}

// ---- reduction, rows layout (inner == 1) ----------------------------------------------------
// Block (32, 8): threadIdx.x picks a channel of a group of 32 (coalesced reads along a row),
// threadIdx.y one of 8 interleaved rows. Grid (channel groups, chunks): block (g, k) covers
// rows [k * chunk, (k+1) * chunk). partials[c * gridDim.y + k].
template <class Op, typename acc_t>
__global__ void __launch_bounds__(kBnThreads)
    bn_reduce_rows(Op op, BnShape s, int64_t chunk, BnAcc<acc_t>* partials) {
  __shared__ BnAcc<acc_t> rows[kBnRowsWarps][32];
  const int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  const int64_t begin = int64_t(blockIdx.y) * chunk;
  const int64_t end = begin + chunk < s.outer ? begin + chunk : s.outer;
  BnAcc<acc_t> acc = Op::identity();
  if (c < s.c) {
    for (int64_t r = begin + threadIdx.y; r < end; r += kBnRowsWarps) op.add(acc, r * s.c + c, c);
  }
  rows[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < s.c) {
#pragma unroll
    for (int y = 1; y < kBnRowsWarps; ++y) acc = Op::merge(acc, rows[y][threadIdx.x]);
    partials[c * gridDim.y + blockIdx.y] = acc;
  }
}

// ---- per-channel merge of the chunks' partials -------------------------------------------------
// Statistics: mean (pivot added back, see BnStatsOp) and biased var (m2 / count).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kBnThreads)
    bn_stats_finish(const BnAcc<acc_t>* partials, int64_t chunks, int64_t channels,
                    const scalar_t* x, int64_t inner, acc_t* mean, acc_t* var) {
  for (int64_t c = grid_first(); c < channels; c += grid_step()) {
    Welford<acc_t> w{0, 0, 0};
    for (int64_t k = 0; k < chunks; ++k) {
      const BnAcc<acc_t> p = partials[c * chunks + k];
      w = welford_merge(w, Welford<acc_t>{p.a, p.b, p.c});
    }
    mean[c] = static_cast<acc_t>(x[c * inner]) + w.mean;
    var[c] = w.count > acc_t(0) ? w.m2 / w.count : acc_t(0);
  }
}

// Backward: sum_dy, sum_dy_xmu and grad_weight = sum_dy_xmu * invstd.
template <typename acc_t>
__global__ void __launch_bounds__(kBnThreads)
    bn_backward_finish(const BnAcc<acc_t>* partials, int64_t chunks, int64_t channels,
                       const acc_t* var, double eps, acc_t* sum_dy, acc_t* sum_dy_xmu,
                       acc_t* grad_weight) {
  for (int64_t c = grid_first(); c < channels; c += grid_step()) {
    acc_t a = 0, b = 0;
    for (int64_t k = 0; k < chunks; ++k) {
      a += partials[c * chunks + k].a;
      b += partials[c * chunks + k].b;
    }
    sum_dy[c] = a;
    sum_dy_xmu[c] = b;
    grad_weight[c] = b * bn_invstd(var[c], eps);
  }
}

// ---- per-channel coefficients -----------------------------------------------------------------
// coef[0..C): alpha, [C..2C): beta; with `backward`, also [2C..5C): k_g, k_x, k_0 of
// grad_input = g * k_g + x * k_x + k_0 (training when sum_dy is not null). weight/bias null
// mean 1/0.
template <typename acc_t>
__global__ void __launch_bounds__(kBnThreads)
    bn_coefficients(const acc_t* mean, const acc_t* var, const acc_t* weight, const acc_t* bias,
                    const acc_t* sum_dy, const acc_t* sum_dy_xmu, acc_t count, double eps,
                    int64_t channels, bool backward, acc_t* coef) {
  for (int64_t c = grid_first(); c < channels; c += grid_step()) {
    const acc_t w = weight != nullptr ? weight[c] : acc_t(1);
    const acc_t b = bias != nullptr ? bias[c] : acc_t(0);
    const BnAffine<acc_t> a = bn_affine(mean[c], var[c], w, b, eps);
    coef[c] = a.alpha;
    coef[channels + c] = a.beta;
    if (backward) {
      const bool training = sum_dy != nullptr;
      const BnBackwardCoef<acc_t> k =
          bn_backward_coef(mean[c], var[c], w, eps, training, training ? sum_dy[c] : acc_t(0),
                           training ? sum_dy_xmu[c] : acc_t(0), count);
      coef[2 * channels + c] = k.alpha;
      coef[3 * channels + c] = k.k_x;
      coef[4 * channels + c] = k.k_0;
    }
  }
}

// ---- elementwise passes ------------------------------------------------------------------------
// y = [relu](x * alpha + beta [+ residual]); one thread per element, grid-stride.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kBnThreads)
    bn_apply(const scalar_t* x, const scalar_t* residual, scalar_t* y, const acc_t* coef,
             BnShape s, int64_t total, bool relu) {
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    const int64_t c = (i / s.inner) % s.c;
    acc_t v = static_cast<acc_t>(x[i]) * coef[c] + coef[s.c + c];
    if (residual != nullptr) v += static_cast<acc_t>(residual[i]);
    y[i] = static_cast<scalar_t>(relu ? bn_relu(v) : v);
  }
}

// grad_input = g * k_g + x * k_x + k_0 and, when grad_residual is not null, grad_residual = g.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kBnThreads)
    bn_backward_apply(const scalar_t* dy, const scalar_t* x, const scalar_t* residual,
                      scalar_t* dx, scalar_t* grad_residual, const acc_t* coef, BnShape s,
                      int64_t total, bool relu) {
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    const int64_t c = (i / s.inner) % s.c;
    const acc_t xv = static_cast<acc_t>(x[i]);
    acc_t pre = xv * coef[c] + coef[s.c + c];
    if (residual != nullptr) pre += static_cast<acc_t>(residual[i]);
    const acc_t g = bn_masked_grad(static_cast<acc_t>(dy[i]), pre, relu);
    dx[i] = static_cast<scalar_t>(g * coef[2 * s.c + c] + xv * coef[3 * s.c + c] +
                                  coef[4 * s.c + c]);
    if (grad_residual != nullptr) grad_residual[i] = static_cast<scalar_t>(g);
  }
}

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
