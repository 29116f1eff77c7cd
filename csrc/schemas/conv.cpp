// Schemas and contracts of the convolution family; kernels in cpu/, cuda/, meta/ and simt/
// conv2d*.cpp, autograd in cpu/conv2d_autograd.cpp. Three ops serve conv2d and conv_transpose2d:
// the transposed convolution's forward is _conv2d_input_grad, its input gradient is conv2d,
// and its weight gradient is _conv2d_weight_grad with the roles of input and grad_output
// swapped. Each op's derivatives are the other ops, so double backward needs no new kernels.
#include <torch/library.h>

#include "schemas/conv.h"

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  // conv2d: input (N, C, H, W) or unbatched (C, H, W); weight (K, C / groups, R, S); bias (K)
  // or None; stride, dilation >= 1 and padding >= 0 as (h, w) pairs (symmetric padding; the
  // Python layer turns 'same'/'valid' into pairs and pre-pads the extra row/column of an even
  // kernel under 'same', as PyTorch does). groups >= 1 divides C and K. Output (N, K, P, Q)
  // with P = (H + 2 pad_h - dil_h (R - 1) - 1) / stride_h + 1 (floor), which must be >= 1.
  // Floating point input, weight and bias of one dtype and device. The output keeps the
  // input's memory format (PyTorch's suggest_memory_format of input or weight), and is
  // deterministic: every output element is one thread's sum in a fixed order.
  m.def(FC_SCHEMA_CONV2D);
  // _conv2d_input_grad: the gradient of conv2d with respect to its input (and the forward of
  // conv_transpose2d). grad_output (N, K, P, Q) or (K, P, Q); weight (K, C / groups, R, S);
  // input_size is the forward input's shape (3 or 4 values); P and Q must be the forward's
  // output size for it (input sizes that differ by less than the stride map to the same P, Q;
  // that is conv_transpose2d's output_padding). Output of shape input_size, channels_last if
  // grad_output or the weight is (torch's rule, conv_memory_format in checks/conv.h), else
  // contiguous. Deterministic (a gather, no atomics).
  m.def(FC_SCHEMA_CONV2D_INPUT_GRAD);
  // _conv2d_weight_grad: the gradient of conv2d with respect to its weight: grad_output
  // (N, K, P, Q), input (N, C, H, W) (or both 3-D), weight_size = (K, C / groups, R, S). Output of
  // shape weight_size, channels_last when the activations are (as torch's; contiguous where both
  // orders are the same memory, conv_weight_grad_format in checks/conv.h), else contiguous,
  // fp32-accumulated for reduced precision. The sum over N, P, Q runs in a fixed order (a
  // split reduction is reduced without atomics), so it is deterministic.
  m.def(FC_SCHEMA_CONV2D_WEIGHT_GRAD);
}
