// Depthwise convolution (groups == C, K = C * multiplier): forward and input gradient as
// direct per-element kernels. A depthwise layer has R*S multiply-adds per output, too few for
// a GEMM tile to pay; what matters is that consecutive threads read consecutive memory
// (channels in channels_last, columns in NCHW) and that the R*S taps stay in L1. The weight
// gradient is a GEMM with M = multiplier, N = R*S per group (conv_igemm_* with its split).
// Device code only (SIMT.md). Element indices are 32-bit (the plan sends larger tensors to the
// GEMM path): a 64-bit division is a subroutine call on the GPU, whose register saves spill.
#pragma once
#include "cuda/kernels/conv2d_problems.cuh"

namespace fastconv {
namespace FC_KERNEL_NS {

constexpr int kDepthwiseThreads = 256;

// One thread per output element; `total` = N*K*P*Q. Logical index order is the memory order
// of the layout, so the writes are coalesced.
template <typename T>
__global__ void __launch_bounds__(kDepthwiseThreads)
    conv_depthwise_fwd(const T* x, const T* w, const T* bias, T* y, ConvGeometry g, bool cl,
                       int total) {
  using acc_t = typename ConvAcc<T>::type;
  const int K = int(g.k), P = int(g.p), Q = int(g.q), mult = K / int(g.groups);
  for (int i = int(blockIdx.x * blockDim.x + threadIdx.x); i < total;
       i += int(gridDim.x * blockDim.x)) {
    int n, k, p, q;
    if (cl) {
      k = i % K;
      const int pix = i / K;
      q = pix % Q;
      p = (pix / Q) % P;
      n = pix / (Q * P);
    } else {
      q = i % Q;
      p = (i / Q) % P;
      k = (i / (Q * P)) % K;
      n = i / (Q * P * K);
    }
    const int64_t c = k / mult;
    // plane of channel c: element (h, w) at plane[(h * W + w) * step]
    const int64_t step = cl ? g.c : 1;
    const T* plane = x + (cl ? n * g.h * g.w * g.c + c : (n * g.c + c) * g.h * g.w);
    const T* wk = w + k * g.r * g.s;
    acc_t acc = bias != nullptr ? conv_to_acc(bias[k]) : acc_t(0);
#pragma unroll 1
    for (int64_t r = 0; r < g.r; ++r) {
      const int64_t ih = conv_input_coord(p, r, g.stride_h, g.pad_h, g.dil_h);
      if (ih < 0 || ih >= g.h) continue;
#pragma unroll 1
      for (int64_t s = 0; s < g.s; ++s) {
        const int64_t iw = conv_input_coord(q, s, g.stride_w, g.pad_w, g.dil_w);
        if (iw < 0 || iw >= g.w) continue;
        acc += conv_to_acc(plane[(ih * g.w + iw) * step]) * conv_to_acc(wk[r * g.s + s]);
      }
    }
    conv_from_acc(acc, y + i);
  }
}

// Input gradient: one thread per input element (a gather: each input sums the outputs that
// read it, for its `multiplier` output channels, in (k, r, s) order); `total` = N*C*H*W.
template <typename T>
__global__ void __launch_bounds__(kDepthwiseThreads)
    conv_depthwise_dgrad(const T* dy, const T* w, T* dx, ConvGeometry g, bool cl,
                         int total) {
  using acc_t = typename ConvAcc<T>::type;
  const int C = int(g.c), H = int(g.h), W = int(g.w), mult = int(g.k) / int(g.groups);
  for (int i = int(blockIdx.x * blockDim.x + threadIdx.x); i < total;
       i += int(gridDim.x * blockDim.x)) {
    int n, c, h, x;
    if (cl) {
      c = i % C;
      const int pix = i / C;
      x = pix % W;
      h = (pix / W) % H;
      n = pix / (W * H);
    } else {
      x = i % W;
      h = (i / W) % H;
      c = (i / (W * H)) % C;
      n = i / (W * H * C);
    }
    acc_t acc(0);
    // 32-bit tap arithmetic (spatial sizes are checked < 2^31 by the host)
    const int R = int(g.r), S = int(g.s), P = int(g.p), Q = int(g.q);
    // no unrolling: unrolled copies keep values live across the int64 index decode (a call
    // on the GPU) and spill
#pragma unroll 1
    for (int64_t k = int64_t(c) * mult; k < int64_t(c + 1) * mult; ++k) {
      const int64_t step = cl ? g.k : 1;
      const T* plane = dy + (cl ? n * g.p * g.q * g.k + k : (n * g.k + k) * g.p * g.q);
      const T* wk = w + k * R * S;
#pragma unroll 1
      for (int r = 0; r < R; ++r) {
        const int p = conv_output_for_tap_as<int>(h, r, P, int(g.stride_h), int(g.pad_h),
                                                  int(g.dil_h));
        if (p < 0) continue;
#pragma unroll 1
        for (int s = 0; s < S; ++s) {
          const int q = conv_output_for_tap_as<int>(x, s, Q, int(g.stride_w),
                                                    int(g.pad_w), int(g.dil_w));
          if (q < 0) continue;
          acc += conv_to_acc(plane[(int64_t(p) * Q + q) * step]) * conv_to_acc(wk[r * S + s]);
        }
      }
    }
    conv_from_acc(acc, dx + i);
  }
}

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
