// The forward convolution as a packed implicit GEMM (cpu/conv2d_fast_im2col.cpp: blocking,
// weight packing, threading; cpu/conv2d_fast_im2col_avx2.cpp: the gather of NCHW pixel panels),
// on the micro-kernel of the 1x1 GEMM (cpu/conv2d_fast_gemm.h, gemm::Kernels).
//
// The reduction index runs over taps, then input channels: k = (r * S + s) * C + c. Per layout:
//   NCHW           Y_n[K, P] = W[K, RSC] im2col_n[RSC, P]   (pixels are the GEMM's N side)
//   channels_last  Y[N*P, K] = im2col[N*P, RSC] W[K, RSC]^T  (pixels are the M side)
// The weight operand is packed once per call; the im2col operand is never built: NCHW
// micro-panels of pixels (nr pixels x kc steps) are gathered straight from the input, padding
// read as zeros; channels_last rows of A (one pixel's kc steps, contiguous in the input) are
// read in place by the micro-kernel (gemm::Kernels::micro_a_ptrs). Strided NCHW layers with
// small output images and more than one image run the channels_last form on transposed copies
// (nchw_via_nhwc in the .cpp).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "common/conv.h"

namespace fastconv::cpu::im2col {

// Where the pixels of one NCHW panel read: per pixel j < nr, the input row and column of its
// tap (0, 0) (ih0, iw0; a pixel past the end of the image has ih0 = kNoPixel, so every tap of
// it is padding).
constexpr int32_t kNoPixel = -(1 << 30);
struct NchwPanel {
  const float* img;  // image n, channel 0
  int64_t H, W, C, S, dh, dw, sw;
  const int32_t* ih0;
  const int32_t* iw0;
};
// dst[(k - k0) * nr + j] = im2col element (k, pixel j) for k in [k0, k0 + kc); nr % 8 == 0.
// May write up to 8 floats past the panel's end (callers leave that room).
void gather_nchw(const NchwPanel& pp, int nr, int64_t k0, int64_t kc, float* dst);

// Whether this path takes the forward pass (fp32, no groups, the AVX2 kernels on; the
// FASTCONV_CPU_IM2COL switch: 0 off, 1 on wherever it can run, unset: where it measured
// faster than the direct kernel; the dot-product forward, cpu/conv2d_fast_dot.h, runs before
// it either way), and the pass itself (tensors as in cpu/conv2d_fast.h).
bool forward_applies(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& output);
bool conv2d_forward_im2col(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                           const at::Tensor& bias, at::Tensor& output);

// The weight gradient as an explicit-im2col GEMM (cpu/conv2d_fast_wgrad_im2col.cpp): fp32, no
// groups, kernels larger than 1x1. FASTCONV_CPU_WGRAD_IM2COL: 0 off, 1 on wherever it can run,
// unset: where it measured faster than the direct and Winograd kernels.
bool weight_grad_applies(const ConvGeometry& g, const at::Tensor& grad_output);
bool conv2d_weight_grad_im2col(const ConvGeometry& g, const at::Tensor& grad_output, const at::Tensor& input,
                               at::Tensor& grad_weight);

}  // namespace fastconv::cpu::im2col
