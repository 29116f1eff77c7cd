// The generic CPU convolution kernels: correct and deterministic for every floating dtype
// (float16 / bfloat16 accumulate in float) and both memory formats, multi-threaded with
// at::parallel_for, written in loop orders the compiler vectorizes. cpu/conv2d.cpp runs them
// for every case the hand-written fp32 kernels (cpu/conv2d_fast.h) decline.
// Same tensor contract as cpu/conv2d_fast.h, plus `channels_last`: the memory format the
// activations (input, grad_output, output, grad_input) are contiguous in.
#pragma once
#include <ATen/core/Tensor.h>

#include "common/conv.h"

namespace fastconv::cpu {

void conv2d_forward_generic(const ConvGeometry& g, const at::Tensor& input,
                            const at::Tensor& weight, const at::Tensor& bias, at::Tensor& output,
                            bool channels_last);
void conv2d_input_grad_generic(const ConvGeometry& g, const at::Tensor& grad_output,
                               const at::Tensor& weight, at::Tensor& grad_input,
                               bool channels_last);
void conv2d_weight_grad_generic(const ConvGeometry& g, const at::Tensor& grad_output,
                                const at::Tensor& input, at::Tensor& grad_weight,
                                bool channels_last);

}  // namespace fastconv::cpu
