// Schema strings of the max-pool family, written once: defined in the fastconv namespace by
// schemas/pool.cpp (where each op's contract is documented) and in fastconv_simt by
// simt/max_pool2d.cpp (the emulated CUDA kernels, same signatures).
#pragma once

#define FC_SCHEMA_MAX_POOL2D_WITH_INDICES                                                  \
  "max_pool2d_with_indices(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, " \
  "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)"
#define FC_SCHEMA_MAX_POOL2D_BACKWARD                                                     \
  "_max_pool2d_backward(Tensor grad_output, Tensor indices, SymInt[] input_size, "        \
  "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) " \
  "-> Tensor"
#define FC_SCHEMA_MAX_UNPOOL2D \
  "max_unpool2d(Tensor self, Tensor indices, SymInt[2] output_size) -> Tensor"
#define FC_SCHEMA_MAX_UNPOOL2D_BACKWARD \
  "_max_unpool2d_backward(Tensor grad_output, Tensor indices) -> Tensor"
