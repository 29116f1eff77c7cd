// Depthwise convolution (groups == C, K = C * multiplier): forward and input gradient as
// direct per-element kernels. A depthwise layer has R*S multiply-adds per output, too few for
// a GEMM tile to pay; what matters is that consecutive threads read consecutive memory
// (channels in channels_last, columns in NCHW) and that the R*S taps stay in L1. The weight
// gradient is a GEMM with M = multiplier, N = R*S per group (conv_igemm_* with its split).
// Device code only (SIMT.md).
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
                       int64_t total) {
  using acc_t = typename ConvAcc<T>::type;
  const int64_t mult = g.k_per_group();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, k, p, q;
    if (cl) {
      k = i % g.k;
      const int64_t pix = i / g.k;
      q = pix % g.q;
      p = (pix / g.q) % g.p;
      n = pix / (g.q * g.p);
    } else {
      q = i % g.q;
      p = (i / g.q) % g.p;
      k = (i / (g.q * g.p)) % g.k;
      n = i / (g.q * g.p * g.k);
    }
    const int64_t c = k / mult;
    // plane of channel c: element (h, w) at plane[(h * W + w) * step]
    const int64_t step = cl ? g.c : 1;
    const T* plane = x + (cl ? n * g.h * g.w * g.c + c : (n * g.c + c) * g.h * g.w);
    const T* wk = w + k * g.r * g.s;
    acc_t acc = bias != nullptr ? conv_to_acc(bias[k]) : acc_t(0);
    for (int64_t r = 0; r < g.r; ++r) {
      const int64_t ih = conv_input_coord(p, r, g.stride_h, g.pad_h, g.dil_h);
      if (ih < 0 || ih >= g.h) continue;
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
                         int64_t total) {
  using acc_t = typename ConvAcc<T>::type;
  const int64_t mult = g.k_per_group();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, h, x;
    if (cl) {
      c = i % g.c;
      const int64_t pix = i / g.c;
      x = pix % g.w;
      h = (pix / g.w) % g.h;
      n = pix / (g.w * g.h);
    } else {
      x = i % g.w;
      h = (i / g.w) % g.h;
      c = (i / (g.w * g.h)) % g.c;
      n = i / (g.w * g.h * g.c);
    }
    acc_t acc(0);
    for (int64_t k = c * mult; k < (c + 1) * mult; ++k) {
      const int64_t step = cl ? g.k : 1;
      const T* plane = dy + (cl ? n * g.p * g.q * g.k + k : (n * g.k + k) * g.p * g.q);
      const T* wk = w + k * g.r * g.s;
      for (int64_t r = 0; r < g.r; ++r) {
        const int64_t p = conv_output_for_tap(h, r, g.p, g.stride_h, g.pad_h, g.dil_h);
        if (p < 0) continue;
        for (int64_t s = 0; s < g.s; ++s) {
          const int64_t q = conv_output_for_tap(x, s, g.q, g.stride_w, g.pad_w, g.dil_w);
          if (q < 0) continue;
          acc += conv_to_acc(plane[(p * g.q + q) * step]) * conv_to_acc(wk[r * g.s + s]);
        }
      }
    }
    conv_from_acc(acc, dx + i);
  }
}

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
