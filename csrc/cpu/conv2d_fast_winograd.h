// Winograd convolution for 3x3, undilated, ungrouped fp32 layers on the CPU
// (cpu/conv2d_fast_winograd.cpp): the forward pass and the input gradient at stride 1 or 2 (at
// stride 1 the input gradient is a 3x3 stride-1 convolution of grad_output with the flipped,
// transposed weights and padding 2 - pad; at stride 2 a transposed convolution with its own
// transforms). Called first by conv2d_forward_fast / conv2d_input_grad_fast (same contract as
// cpu/conv2d_fast.h) when `winograd_applies` / `winograd_input_grad_applies` say so: the
// geometry fits (for the stride-2 input gradient: paddings of equal parity), the SIMD kernels
// are on, FASTCONV_CPU_WINOGRAD is not 0, and the size heuristic (a function of the geometry
// alone, so results never depend on the thread count) expects it to be faster.
// FASTCONV_CPU_WINOGRAD=0 turns it off; =2 or =4 forces F(2x2,3x3) or F(4x4,3x3) wherever the
// geometry fits (tests use these to reach both variants on small shapes); stride-2 layers have
// one variant (m = 2), which either value forces.
// The weight gradient (cpu/conv2d_fast_winograd_wgrad.cpp, fp32 and fp64; stride 1 or 2) is
// called first by conv2d_weight_grad_fast under the same rules, with its own size heuristic.
#pragma once
#include <ATen/core/Tensor.h>

#include "common/conv.h"

namespace fastconv::cpu {

// FASTCONV_CPU_WINOGRAD: 0 (off), 2 or 4 (forced), or -1 (unset or anything else: the heuristics).
// At stride 2 either forced value gives 2, the one stride-2 tile.
int winograd_forced_tile(int64_t stride);

// Whether stride-2 tiles pay: `tiles` tiles of 25 products each at most 3/4 of the direct
// kernel's 9 per output pixel (per channel pair); see conv2d_fast_winograd.cpp.
bool winograd_stride2_pays(int64_t tiles, int64_t output_pixels);

bool winograd_applies(const ConvGeometry& g, const at::Tensor& input);
bool winograd_input_grad_applies(const ConvGeometry& g, const at::Tensor& grad_output);

bool conv2d_forward_winograd(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                             const at::Tensor& bias, at::Tensor& output);
bool conv2d_input_grad_winograd(const ConvGeometry& g, const at::Tensor& grad_output,
                                const at::Tensor& weight, at::Tensor& grad_input);

bool winograd_weight_grad_applies(const ConvGeometry& g, const at::Tensor& grad_output);
bool conv2d_weight_grad_winograd(const ConvGeometry& g, const at::Tensor& grad_output,
                                 const at::Tensor& input, at::Tensor& grad_weight);

}  // namespace fastconv::cpu
