// Schema strings of the convolution family, written once: defined in the fastconv namespace by
// schemas/conv.cpp (where each op's contract is documented) and in fastconv_simt by
// simt/conv2d.cpp (the emulated CUDA kernels, same signatures).
#pragma once

#define FC_SCHEMA_CONV2D                                                                  \
  "conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "    \
  "int[2] dilation, int groups) -> Tensor"
#define FC_SCHEMA_CONV2D_INPUT_GRAD                                                       \
  "_conv2d_input_grad(Tensor grad_output, Tensor weight, SymInt[] input_size, "          \
  "int[2] stride, int[2] padding, int[2] dilation, int groups) -> Tensor"
#define FC_SCHEMA_CONV2D_WEIGHT_GRAD                                                      \
  "_conv2d_weight_grad(Tensor grad_output, Tensor input, SymInt[] weight_size, "         \
  "int[2] stride, int[2] padding, int[2] dilation, int groups) -> Tensor"
