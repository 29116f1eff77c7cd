// Schemas and contracts of the max-pool family; kernels in cpu/, cuda/, meta/ and simt/
// max_pool2d.cpp / max_unpool2d.cpp, autograd in fastconv/ops/pool.py.
#include <torch/library.h>

#include "schemas/pool.h"

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  // max_pool2d_with_indices: input (N, C, H, W) or (C, H, W), floating point. kernel_size,
  // stride, dilation >= 1 and 0 <= padding <= kernel_size / 2, each an (h, w) pair (the Python
  // layer expands ints and defaults stride to kernel_size). Output size per dimension:
  // floor((in + 2p - d(k-1) - 1 + (ceil_mode ? s-1 : 0)) / s) + 1, reduced by one under ceil_mode
  // when the last window would start past the input and left padding. Padding acts as -inf.
  // Returns (values, indices): indices int64, the flat h * W + w of the maximum within its
  // (n, c) plane; ties pick the first in row-major window order, NaN wins. Outputs keep the
  // input's memory format (channels_last stays channels_last).
  m.def(FC_SCHEMA_MAX_POOL2D_WITH_INDICES);
  // _max_pool2d_backward: gradient of max_pool2d_with_indices with respect to its input.
  // grad_output and indices have the forward's output shape; input_size is the forward's input
  // shape; the geometry arguments are the forward's. grad_input[n, c, i] is the sum of
  // grad_output[n, c, o] over the outputs o whose index is i, added in ascending o (PyTorch's
  // order) and without atomics, so results are deterministic. Same memory format as indices.
  // An index outside [0, H*W) is an IndexError on the CPU; an index outside its own window
  // (impossible for indices from the forward) contributes nothing on CUDA, whose backward
  // is a gather over each input's windows.
  m.def(FC_SCHEMA_MAX_POOL2D_BACKWARD);
  // max_unpool2d: input and indices (int64) of one shape (N, C, H, W) or (C, H, W); returns
  // zeros of shape (N, C, output_size[0], output_size[1]) with output[n, c, indices[n, c, i]] =
  // input[n, c, i]. Every index must lie in [0, output_size[0] * output_size[1]) (an
  // IndexError otherwise). Where indices repeat, the CPU keeps the last input in row-major
  // order and CUDA keeps an unspecified one, as in PyTorch (max-pool indices repeat only with
  // equal values, so unpooling a max-pool result is deterministic). Output keeps the input's
  // memory format.
  m.def(FC_SCHEMA_MAX_UNPOOL2D);
  // _max_unpool2d_backward: the gather out[n, c, i] = grad_output[n, c, indices[n, c, i]], of
  // the shape of indices. It is max_unpool2d's input gradient and also the derivative of
  // _max_pool2d_backward with respect to grad_output (max-pool double backward).
  m.def(FC_SCHEMA_MAX_UNPOOL2D_BACKWARD);
}
