// Max-pool geometry and argmax rules, written once for every backend (CPU, CUDA, emulated).
//
// The formulas are PyTorch's (aten/src/ATen/native/Pool.h):
//   out = floor((in + 2*pad - dilation*(kernel-1) - 1 + (ceil_mode ? stride-1 : 0)) / stride) + 1
//   and with ceil_mode the last window must start inside the input or the left padding.
// Indices are flat `h * W + w` within one (n, c) plane.
#pragma once
#include "common/macros.h"

namespace fastconv {

// Output size along one dimension. Templated so the same formula serves int64_t kernels and
// the symbolic sizes (c10::SymInt) of the Meta/fake kernels.
template <typename T>
inline T pool_output_size(T in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation,
                          bool ceil_mode) {
  T num = in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  // floor division for a positive stride, also for a negative numerator
  T out = (num >= 0) ? num / stride + 1 : T(0) - ((T(0) - num) + (stride - 1)) / stride + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) {
    out = out - 1;
  }
  return out;
}

// First input coordinate of the window of output `o` that lies inside [0, in); the window
// covers in-range coordinates `start, start + dilation, ... < end`.
struct PoolWindow {
  int64_t start;
  int64_t end;
};

FC_HD PoolWindow pool_window(int64_t o, int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                             int64_t dilation) {
  int64_t start = o * stride - pad;
  int64_t end = start + (kernel - 1) * dilation + 1;
  if (end > in) end = in;
  while (start < 0) start += dilation;
  return {start, end};
}

// PyTorch's argmax rule: a strictly greater value or any NaN replaces the running maximum, so
// among ties the first in scan order (row-major within the window) wins and NaN propagates
// (the last NaN in scan order is the one reported).
template <typename acc_t>
FC_HD bool pool_takes(acc_t candidate, acc_t best) {
  return candidate > best || candidate != candidate;
}

// For the gather form of the backward pass: the output coordinate whose window reaches input
// coordinate `i` through kernel tap `k`, or -1 if there is none.
FC_HD int64_t pool_output_for_tap(int64_t i, int64_t k, int64_t out_size, int64_t stride,
                                  int64_t pad, int64_t dilation) {
  int64_t t = i + pad - k * dilation;
  if (t < 0 || t % stride != 0) return -1;
  int64_t o = t / stride;
  return o < out_size ? o : -1;
}

}  // namespace fastconv
