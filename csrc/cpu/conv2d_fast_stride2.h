// The input gradient of strided convolutions (stride_w > 1, e.g. the 3 x 3 stride-2 layers of
// ResNet-50 and the stride-2 transposed convolutions, whose forward pass is this gradient) in
// the fast fp32 CPU convolution (contract in cpu/conv2d_fast.h). Defined in
// cpu/conv2d_fast_stride2.cpp.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdlib>
#include <cstring>

#include "common/conv.h"
#include "cpu/conv2d_fast_kernels.h"

namespace fastconv::cpu {

// Dense (one group), undilated, strided along columns, more than one tap, and input rows of
// fewer than 4 register tiles per column phase (`max_m` pixels per tile): there the per-row
// gather path runs 7 or 14 pixels per call (ResNet-50's res5a and res4a), while on wider rows
// (res3a: 28 per phase) it measured as fast as this path (it keeps a row's grad_output in L1
// across the phases). FASTCONV_CPU_STRIDED=0 turns this path off, =1 takes it at any width
// (timing, tests).
inline bool stride2_input_grad_applies(const ConvGeometry& g, int max_m) {
  const char* env = std::getenv("FASTCONV_CPU_STRIDED");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  const bool any_width = env != nullptr && std::strcmp(env, "1") == 0;
  const bool narrow = (g.w + g.stride_w - 1) / g.stride_w < 4 * max_m;
  return g.groups == 1 && g.stride_w > 1 && g.dil_h == 1 && g.dil_w == 1 && g.r * g.s > 1 &&
         (narrow || any_width);
}

bool conv2d_input_grad_strided(const fastk::Kernels& kk, const ConvGeometry& g, const at::Tensor& grad_output,
                               const at::Tensor& weight, at::Tensor& grad_input);

// The same gradient as a dense implicit GEMM per phase class on the 6 x 16 GEMM micro-kernel
// (gemm::Kernels::micro_a_ptrs, grad_output rows read in place), for channels_last results of
// dense, undilated layers: by default strided ones with >= 128 channels in and out and >= 512
// grad_output pixels (the measurements are at the definition). FASTCONV_CPU_STRIDED_GEMM=0 turns it off, =1 takes it
// wherever it can run (stride 1 included). Defined in cpu/conv2d_fast_stride2.cpp.
bool strided_input_grad_gemm_applies(const ConvGeometry& g, const at::Tensor& grad_input);
bool conv2d_input_grad_strided_gemm(const ConvGeometry& g, const at::Tensor& grad_output,
                                    const at::Tensor& weight, at::Tensor& grad_input);

}  // namespace fastconv::cpu
