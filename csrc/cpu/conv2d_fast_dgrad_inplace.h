// The input gradient with a channels_last weight read in place, no packing (defined in
// cpu/conv2d_fast_dgrad_inplace.cpp; contract in cpu/conv2d_fast.h), for stride-1 layers with
// few pixels and many weights.
#pragma once
#include <ATen/core/Tensor.h>

#include "common/conv.h"
#include "cpu/conv2d_fast_kernels.h"

namespace fastconv::cpu {

// fp32, no groups, stride and dilation 1, padding < the kernel, channels a multiple of the
// register block, channels_last grad_output and grad_input, a channels_last weight; by
// default at most 128 input pixels and at least 1024 weights per input channel.
// FASTCONV_CPU_DGRAD_INPLACE=0 turns it off, =1 takes every case it can (tests).
bool inplace_input_grad_applies(const fastk::Kernels& kk, const ConvGeometry& g, const at::Tensor& grad_output,
                                const at::Tensor& weight, const at::Tensor& grad_input);
bool conv2d_input_grad_inplace(const fastk::Kernels& kk, const ConvGeometry& g, const at::Tensor& grad_output,
                               const at::Tensor& weight, at::Tensor& grad_input);

}  // namespace fastconv::cpu
