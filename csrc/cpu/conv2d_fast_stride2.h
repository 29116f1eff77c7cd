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

// Dense (one group), undilated, strided along columns, more than one tap; unless
// FASTCONV_CPU_STRIDED=0, which leaves these cases to the generic gather path (timing, tests).
inline bool stride2_input_grad_applies(const ConvGeometry& g) {
  const char* env = std::getenv("FASTCONV_CPU_STRIDED");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  return g.groups == 1 && g.stride_w > 1 && g.dil_h == 1 && g.dil_w == 1 && g.r * g.s > 1;
}

bool conv2d_input_grad_strided(const fastk::Kernels& kk, const ConvGeometry& g, const at::Tensor& grad_output,
                               const at::Tensor& weight, at::Tensor& grad_input);

}  // namespace fastconv::cpu
