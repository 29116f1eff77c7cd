// The forward convolution as dot products along the input channels (cpu/conv2d_fast_dot.cpp),
// for layers with many weights and few output pixels (ResNet-50 res5b_branch2b at batch 1: 2.4
// M weights, 49 pixels), 1x1 layers included (it runs before the 1x1 GEMM). Both operands are
// read in their own memory order, channels adjacent, so the weight is never packed: the direct
// kernel's packing reads every weight once per call through strided rows, which there costs
// about a fifth of the pass.
#pragma once
#include <ATen/core/Tensor.h>

#include "common/conv.h"

namespace fastconv::cpu::dot {

// Whether the dot-product forward takes the case: fp32, the AVX2 or AVX-512 kernels on, no
// groups, input and output both channels_last or both NCHW (staged through an NHWC copy), each
// output channel's weights one run in (r, s, c) order (a channels_last weight; for 1x1 kernels
// any weight with unit channel stride, so NCHW layers are 1x1 ones), channels a multiple of
// the vector width (8 or 16), and few pixels for many weights (see the .cpp).
// FASTCONV_CPU_DOT=0 turns it off, =1 takes every case it can (tests). It runs after Winograd
// and depthwise, before the 1x1 GEMM and the implicit GEMM (whose FASTCONV_CPU_GEMM=all and
// FASTCONV_CPU_IM2COL=1 do not override it).
bool forward_applies(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                     const at::Tensor& output);
// The contract of cpu/conv2d_fast.h; only for cases forward_applies takes.
bool conv2d_forward_dot(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                        const at::Tensor& bias, at::Tensor& output);

}  // namespace fastconv::cpu::dot
