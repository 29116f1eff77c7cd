// The hand-written fp32 CPU convolution kernels (packed weights, register blocking, AVX-512 /
// AVX2 micro-kernels chosen at run time; 1x1 and depthwise fast paths), defined in
// cpu/conv2d_fast*.cpp. The op entry points in cpu/conv2d.cpp validate, allocate and then try
// these first; each returns false for a case it does not handle (a dtype, layout or geometry
// it has no kernel for, or FASTCONV_CPU_KERNELS=generic), and the caller then runs the generic
// kernel. Contract for every function:
//   - `g` is the validated geometry of the forward convolution (batched; n may be 0).
//   - input, grad_output and the output tensor are 4-D and contiguous in one memory format,
//     NCHW (contiguous) or channels_last, the same for all of them; weight (K, C / groups, R,
//     S) may have any strides (it is read through them: packed, or in place by the paths
//     that need each output channel's (r, s, c) elements in one run, which a channels_last
//     weight has -- the dot-product forward and the in-place input gradient; so a weight's
//     strides can decide the path, and with it the rounding); grad_weight is contiguous, or
//     channels_last (not contiguous) when the activations are (cpu/conv2d.cpp); bias is 1-D
//     contiguous or undefined.
//   - the output tensor is allocated by the caller with its final shape and format; its
//     contents on entry are unspecified (the kernel writes every element).
//   - deterministic: the same inputs give bit-identical results at any thread count.
#pragma once
#include <ATen/core/Tensor.h>

#include "common/conv.h"

namespace fastconv::cpu {

bool conv2d_forward_fast(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias, at::Tensor& output);
bool conv2d_input_grad_fast(const ConvGeometry& g, const at::Tensor& grad_output,
                            const at::Tensor& weight, at::Tensor& grad_input);
bool conv2d_weight_grad_fast(const ConvGeometry& g, const at::Tensor& grad_output,
                             const at::Tensor& input, at::Tensor& grad_weight);

}  // namespace fastconv::cpu
