// NCHW paths of the fast fp32 CPU convolution, vectorized over output pixels (defined in
// cpu/conv2d_fast_nchw.cpp; called by conv2d_forward_fast / conv2d_input_grad_fast where
// `*_applies` says so; same contract as cpu/conv2d_fast.h).
#pragma once
#include <ATen/core/Tensor.h>

#include "common/conv.h"
#include "cpu/conv2d_fast_kernels.h"

namespace fastconv::cpu::fastk {

// Input and output contiguous (NCHW), 1x1 stride 1, not depthwise, rows of >= 4 NHWC tiles.
bool nchw_forward_applies(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& output);
bool nchw_forward(const Kernels& kk, const ConvGeometry& g, const at::Tensor& input,
                  const at::Tensor& weight, const at::Tensor& bias, at::Tensor& output);

// grad_output and grad_input contiguous (NCHW), 1x1 stride 1, not depthwise, rows of >= 4
// NHWC tiles.
bool nchw_input_grad_applies(const ConvGeometry& g, const at::Tensor& grad_output,
                             const at::Tensor& grad_input);
bool nchw_input_grad(const Kernels& kk, const ConvGeometry& g, const at::Tensor& grad_output,
                     const at::Tensor& weight, at::Tensor& grad_input);

}  // namespace fastconv::cpu::fastk
