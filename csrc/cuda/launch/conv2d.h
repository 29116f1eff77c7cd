// Launch plans of the convolution family, shared by the nvcc launcher (cuda/conv2d.cu) and the
// emulated one (simt/conv2d.cpp) through cuda/host/conv2d.h: which core (SIMT implicit GEMM,
// tensor-core implicit GEMM, depthwise), which tile, whether the channels_last vector loads
// apply, the weight gradient's split, grid, block and dynamic shared memory, all from the
// problem size, dtype and device. ATen-free; callers pass validated geometry and raw pointers.
//
// Cores and variants (each one is exercised by tests/test_conv2d_cuda.py):
//   simt-large   SimtTileLarge  128x64x8, 256 threads, 8x4 outputs per thread   fp32 / fp64
//   simt-small   SimtTileSmall   64x32x8, 256 threads, 4x2 outputs per thread   (few blocks)
//   wmma         WmmaTile        64x64x16, 128 threads (4 warps of 32x32)        fp16, bf16,
//                                                                               fp32 as TF32
//   depthwise    one thread per element, 256 threads                            forward, dgrad
// "-v<V>" : channels_last with 16-byte accesses (V = 4 fp32, 2 fp64, 8 fp16/bf16) when the
// channel counts and pointers allow; otherwise scalar gathers in the coalescing direction.
// The weight gradient splits its N*P*Q reduction so that the grid covers the device, into
// partials reduced in split order by conv_wgrad_reduce (deterministic, no atomics).
//
// Resources (nvcc 13.0, sm_80, ptxas -v; no stack or spills in any of the 108 kernels of
// sm_80 + sm_90). Registers per thread (fp32 .. fp64 / fp16 .. TF32), dynamic shared memory:
//   simt-large  scalar 116-192, vector 91-164 regs; 2*8*(132+68) elements = 12.8 / 25.6 KB
//   simt-small  scalar  92-128, vector 84-130 regs; 2*8*(68+36) elements  =  6.7 / 13.3 KB
//   wmma        scalar 208-254, vector 72-128 regs (128 threads);  17.4 KB (16-bit), 24.6 KB
//   depthwise   34-40 regs; conv_wgrad_reduce 25-31 regs; no shared memory.
#pragma once
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/kernels/conv2d_depthwise.cuh"
#include "cuda/kernels/conv2d_igemm.cuh"
#include "cuda/kernels/conv2d_wmma.cuh"
#include "cuda/launch/launch.h"

namespace fastconv {
namespace FC_KERNEL_NS {

enum class ConvPass { Forward, InputGrad, WeightGrad };
enum class ConvCore { Simt, Wmma, Depthwise };

// Overrides for tests (tests/test_conv2d_cuda.py): 0 = the plan decides.
struct ConvOptions {
  bool tf32 = false;        // fp32 on tensor cores (PyTorch's cudnn.allow_tf32 for convs)
  int force_tile = 0;       // SIMT tile: 1 large, 2 small
  int64_t force_splits = 0; // weight-gradient splits
  int force_scalar = 0;     // 1: no vector loads
};

struct ConvPlan {
  ConvPass pass;
  ConvCore core;
  bool large;             // SIMT tile
  int vec;                // elements per global access of the GEMM panels (1: scalar)
  int64_t splits;         // weight gradient: reduction splits (1 otherwise)
  int64_t k_chunk;        // reduction elements per split (a multiple of the tile's BK)
  dim3 grid;
  int threads;
  int smem;               // dynamic shared memory, bytes
};

inline std::string describe(const ConvPlan& plan) {
  static const char* passes[] = {"fwd", "dgrad", "wgrad"};
  std::string s = std::string(passes[int(plan.pass)]) + ":";
  if (plan.core == ConvCore::Depthwise) return s + "depthwise";
  s += plan.core == ConvCore::Wmma ? "wmma" : (plan.large ? "simt-large" : "simt-small");
  if (plan.vec > 1) s += "-v" + std::to_string(plan.vec);
  if (plan.pass == ConvPass::WeightGrad) s += " splits=" + std::to_string(plan.splits);
  return s;
}

template <typename T>
constexpr bool conv_is_reduced() {
  return std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;
}
template <typename T>
constexpr int conv_vector_width() {
  return 16 / int(sizeof(T));
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// GEMM sizes of a pass (per group), as the problems of conv2d_problems.cuh define them.
struct ConvGemm {
  int64_t m, n, k;
};
inline ConvGemm conv_gemm(ConvPass pass, const ConvGeometry& g) {
  const int64_t cg = g.c_per_group(), kg = g.k_per_group(), rs = g.r * g.s;
  switch (pass) {
    case ConvPass::Forward: return {g.n * g.p * g.q, kg, cg * rs};
    case ConvPass::InputGrad: return {g.n * g.h * g.w, cg, kg * rs};
    default: return {kg, cg * rs, g.n * g.p * g.q};
  }
}

// Whether the channels_last vector variant applies: every vector stays within one tap's run
// of contiguous channels (see the along_k directions of each problem) and every pointer is
// aligned to the vector (`aligned`, checked by the host for all tensors of the pass).
inline bool conv_vector_ok(ConvPass pass, const ConvGeometry& g, bool cl, bool aligned, int v) {
  if (!cl || !aligned || v <= 1) return false;
  const bool c_ok = g.c_per_group() % v == 0, k_ok = g.k_per_group() % v == 0;
  return pass == ConvPass::Forward ? c_ok : (c_ok && k_ok);
}

template <typename T>
ConvPlan plan_conv(ConvPass pass, const ConvGeometry& g, bool cl, bool aligned,
                   const ConvOptions& opt, const LaunchDevice& dev) {
  ConvPlan plan{pass, ConvCore::Simt, true, 1, 1, 0, dim3(1), 256, 0};
  const int64_t dw_total = pass == ConvPass::Forward ? g.n * g.k * g.p * g.q : g.n * g.c * g.h * g.w;
  // (the depthwise kernels index elements in 32 bits; larger tensors take the GEMM path)
  if (g.depthwise() && pass != ConvPass::WeightGrad && dw_total <= INT32_MAX) {
    plan.core = ConvCore::Depthwise;
    plan.grid = grid_stride_grid(dw_total, kDepthwiseThreads, dev);
    plan.threads = kDepthwiseThreads;
    return plan;
  }
  const ConvGemm gemm = conv_gemm(pass, g);
  const bool wmma = conv_is_reduced<T>() || (std::is_same_v<T, float> && opt.tf32);
  int bm, bn, bk;
  if (wmma) {
    plan.core = ConvCore::Wmma;
    bm = WmmaTile::BM, bn = WmmaTile::BN, bk = WmmaTile::BK;
    plan.threads = WmmaTile::kThreads;
    plan.smem = WmmaTile::smem_bytes<T>();
  } else {
    const int64_t large_blocks = ceil_div(gemm.m, SimtTileLarge::BM) *
                                 ceil_div(gemm.n, SimtTileLarge::BN) * g.groups;
    // Large tiles when they alone fill the device and N is not mostly padding.
    plan.large = opt.force_tile ? opt.force_tile == 1
                                : (large_blocks >= dev.sm_count && gemm.n > SimtTileSmall::BN);
    bm = plan.large ? SimtTileLarge::BM : SimtTileSmall::BM;
    bn = plan.large ? SimtTileLarge::BN : SimtTileSmall::BN;
    bk = SimtTileLarge::BK;
    plan.threads = SimtTileLarge::kThreads;
    plan.smem = plan.large ? SimtTileLarge::smem_bytes<T>() : SimtTileSmall::smem_bytes<T>();
  }
  const int v = conv_vector_width<T>();
  plan.vec = !opt.force_scalar && conv_vector_ok(pass, g, cl, aligned, v) ? v : 1;
  const int64_t tiles = ceil_div(gemm.m, bm) * ceil_div(gemm.n, bn) * g.groups;
  plan.splits = 1;
  if (pass == ConvPass::WeightGrad) {
    // Enough blocks for two waves of one block per SM, each split at least 16 steps long,
    // at most 64 splits and a grid z within 65535.
    const int64_t want = opt.force_splits ? opt.force_splits : ceil_div(2 * dev.sm_count, tiles);
    const int64_t most = std::max<int64_t>(1, std::min<int64_t>({ceil_div(gemm.k, 16 * bk), 64,
                                                                  65535 / g.groups}));
    plan.splits = opt.force_splits ? std::max<int64_t>(1, want) : std::clamp<int64_t>(want, 1, most);
  }
  plan.k_chunk = std::max<int64_t>(bk, ceil_div(ceil_div(gemm.k, plan.splits), bk) * bk);
  plan.splits = std::max<int64_t>(1, ceil_div(gemm.k, plan.k_chunk));  // no empty split
  plan.grid = dim3(unsigned(ceil_div(gemm.m, bm)), unsigned(ceil_div(gemm.n, bn)),
                   unsigned(g.groups * plan.splits));
  return plan;
}

// ---- launches (definitions: cuda/launch/conv2d_passes.h) ------------------------------------
// T is the storage type: float, double, __half or __nv_bfloat16 (FC_CONV_STORAGE_TYPES).
#define FC_CONV_STORAGE_TYPES(X) X(float) X(double) X(__half) X(__nv_bfloat16)

template <typename T>
void launch_conv2d_forward(const ConvPlan& plan, const ConvGeometry& g, bool cl, const T* x,
                           const T* w, const T* bias, T* y, fc_stream_t stream);

template <typename T>
void launch_conv2d_input_grad(const ConvPlan& plan, const ConvGeometry& g, bool cl, const T* dy,
                              const T* w, T* dx, fc_stream_t stream);

// ws: plan.splits * K * C/g * R * S accumulators (acc_t), fully overwritten.
template <typename T>
void launch_conv2d_weight_grad(const ConvPlan& plan, const ConvGeometry& g, bool cl,
                               const T* dy, const T* x, typename ConvAcc<T>::type* ws, T* dw,
                               const LaunchDevice& dev, fc_stream_t stream);

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
