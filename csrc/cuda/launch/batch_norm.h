// Launch plans of the BatchNorm family, shared by the nvcc launcher (cuda/batch_norm.cu) and the
// emulated one (simt/batch_norm.cpp). ATen-free; callers pass validated sizes, contiguous
// tensors in the stated layout, and a workspace of bn_partials_size() partial accumulators.
//
// Reductions: enough chunks per channel to fill the GPU (about 4 waves of resident blocks over
// all channels), each chunk at least kBnMinChunk values so that the per-channel merge stays
// short; the chunk count depends only on the problem and the device, never on timing, so
// results are deterministic for one GPU model. Elementwise passes: 256-thread blocks, a 1-D
// grid capped at 4 waves with grid-stride loops.
#pragma once
#include <algorithm>
#include <cstdint>

#include "cuda/kernels/batch_norm.cuh"
#include "cuda/launch/launch.h"

namespace fastconv {
namespace FC_KERNEL_NS {

constexpr int64_t kBnMinChunk = 4096;   // values per chunk, at least (planar)
constexpr int64_t kBnMinRows = 64;      // rows per chunk, at least (rows layout)
constexpr int64_t kBnMaxGridY = 65535;

inline int64_t bn_resident_blocks(const LaunchDevice& dev) {
  return resident_blocks(dev, kBnThreads);
}

inline dim3 bn_elementwise_grid(int64_t work, const LaunchDevice& dev) {
  return grid_stride_grid(work, kBnThreads, dev);
}

// How a reduction is split: `chunks` partials per channel of `chunk` values (planar) or rows.
struct BnReducePlan {
  bool planar;
  int64_t chunk, chunks, channel_groups;
};

inline BnReducePlan bn_reduce_plan(const BnShape& s, const LaunchDevice& dev) {
  const int64_t budget = bn_resident_blocks(dev);
  if (s.inner > 1) {
    const int64_t count = s.outer * s.inner;
    int64_t chunks = std::max<int64_t>(1, budget / std::max<int64_t>(1, s.c));
    chunks = std::min(chunks, std::max<int64_t>(1, count / kBnMinChunk));
    const int64_t chunk = (count + chunks - 1) / chunks;
    return {true, chunk, (count + chunk - 1) / chunk, 1};
  }
  const int64_t groups = (s.c + 31) / 32;
  int64_t chunks = std::max<int64_t>(1, budget / groups);
  chunks = std::min({chunks, std::max<int64_t>(1, s.outer / kBnMinRows), kBnMaxGridY});
  const int64_t chunk = (s.outer + chunks - 1) / chunks;
  return {false, chunk, (s.outer + chunk - 1) / chunk, groups};
}

inline int64_t bn_partials_size(const BnShape& s, const LaunchDevice& dev) {
  return s.c * bn_reduce_plan(s, dev).chunks;
}

template <class Op, typename acc_t>
void launch_bn_reduce(const Op& op, const BnShape& s, BnAcc<acc_t>* partials,
                      const LaunchDevice& dev, fc_stream_t stream) {
  const BnReducePlan p = bn_reduce_plan(s, dev);
  if (p.planar) {
    FC_LAUNCH(FC_KERNEL(bn_reduce_planar<Op, acc_t>),
              dim3(static_cast<unsigned>(p.chunks), static_cast<unsigned>(s.c)),
              dim3(kBnThreads), 0, stream, op, s, p.chunk, partials);
  } else {
    FC_LAUNCH(FC_KERNEL(bn_reduce_rows<Op, acc_t>),
              dim3(static_cast<unsigned>(p.channel_groups), static_cast<unsigned>(p.chunks)),
              dim3(32, kBnRowsWarps), 0, stream, op, s, p.chunk, partials);
  }
}

// mean, var (acc_t, C each) of x.
template <typename scalar_t, typename acc_t>
void launch_bn_stats(const BnShape& s, const scalar_t* x, BnAcc<acc_t>* partials, acc_t* mean,
                     acc_t* var, const LaunchDevice& dev, fc_stream_t stream) {
  launch_bn_reduce(BnStatsOp<scalar_t, acc_t>{x, s.inner}, s, partials, dev, stream);
  FC_LAUNCH(FC_KERNEL(bn_stats_finish<scalar_t, acc_t>), bn_elementwise_grid(s.c, dev),
            dim3(kBnThreads), 0, stream, partials, bn_reduce_plan(s, dev).chunks, s.c, x, s.inner,
            mean, var);
}

// sum_dy, sum_dy_xmu, grad_weight (acc_t, C each); coef from launch_bn_coefficients.
template <typename scalar_t, typename acc_t>
void launch_bn_backward_reduce(const BnShape& s, const scalar_t* dy, const scalar_t* x,
                               const scalar_t* residual, const acc_t* coef, const acc_t* mean,
                               const acc_t* var, double eps, bool relu, BnAcc<acc_t>* partials,
                               acc_t* sum_dy, acc_t* sum_dy_xmu, acc_t* grad_weight,
                               const LaunchDevice& dev, fc_stream_t stream) {
  const BnBackwardOp<scalar_t, acc_t> op{dy, x, residual, coef, coef + s.c, mean, relu};
  launch_bn_reduce(op, s, partials, dev, stream);
  FC_LAUNCH(FC_KERNEL(bn_backward_finish<acc_t>), bn_elementwise_grid(s.c, dev),
            dim3(kBnThreads), 0, stream, partials, bn_reduce_plan(s, dev).chunks, s.c, var, eps,
            sum_dy, sum_dy_xmu, grad_weight);
}

template <typename acc_t>
void launch_bn_coefficients(const acc_t* mean, const acc_t* var, const acc_t* weight,
                            const acc_t* bias, const acc_t* sum_dy, const acc_t* sum_dy_xmu,
                            int64_t count, double eps, int64_t channels, bool backward,
                            acc_t* coef, const LaunchDevice& dev, fc_stream_t stream) {
  FC_LAUNCH(FC_KERNEL(bn_coefficients<acc_t>), bn_elementwise_grid(channels, dev),
            dim3(kBnThreads), 0, stream, mean, var, weight, bias, sum_dy, sum_dy_xmu,
            static_cast<acc_t>(count), eps, channels, backward, coef);
}

template <typename scalar_t, typename acc_t>
void launch_bn_apply(const BnShape& s, const scalar_t* x, const scalar_t* residual, scalar_t* y,
                     const acc_t* coef, bool relu, const LaunchDevice& dev, fc_stream_t stream) {
  const int64_t total = s.outer * s.c * s.inner;
  FC_LAUNCH(FC_KERNEL(bn_apply<scalar_t, acc_t>), bn_elementwise_grid(total, dev),
            dim3(kBnThreads), 0, stream, x, residual, y, coef, s, total, relu);
}

template <typename scalar_t, typename acc_t>
void launch_bn_backward_apply(const BnShape& s, const scalar_t* dy, const scalar_t* x,
                              const scalar_t* residual, scalar_t* dx, scalar_t* grad_residual,
                              const acc_t* coef, bool relu, const LaunchDevice& dev,
                              fc_stream_t stream) {
  const int64_t total = s.outer * s.c * s.inner;
  FC_LAUNCH(FC_KERNEL(bn_backward_apply<scalar_t, acc_t>), bn_elementwise_grid(total, dev),
            dim3(kBnThreads), 0, stream, dy, x, residual, dx, grad_residual, coef, s, total, relu);
}

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
