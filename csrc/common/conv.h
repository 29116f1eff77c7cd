// Convolution geometry and index rules, written once for every backend (CPU kernels, CUDA
// kernels and their host launchers, the emulator). Nothing here includes ATen.
//
// One conv2d, always described batched and in logical NCHW terms:
//   input (n, c, h, w), weight (k, c / groups, r, s), output (n, k, p, q) with
//   p = floor((h + 2 pad_h - dil_h (r - 1) - 1) / stride_h) + 1   (PyTorch's formula)
// conv_transpose2d and the two gradients reuse the same geometry (the forward conv's).
#pragma once
#include <cstdint>

#include "common/macros.h"

namespace fastconv {

struct ConvGeometry {
  int64_t n, c, h, w;        // input
  int64_t k, r, s;           // output channels, kernel height and width
  int64_t p, q;              // output height and width
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dil_h, dil_w;
  int64_t groups;

  FC_HD int64_t c_per_group() const { return c / groups; }
  FC_HD int64_t k_per_group() const { return k / groups; }
  // Depthwise: one input channel per group (each output channel reads only its own plane).
  FC_HD bool depthwise() const { return groups == c && groups > 1; }
  FC_HD bool pointwise() const {
    return r == 1 && s == 1 && pad_h == 0 && pad_w == 0 && stride_h == 1 && stride_w == 1;
  }
  // Useful multiply-adds of the forward pass (also of each gradient).
  FC_HD int64_t macs() const { return n * k * p * q * c_per_group() * r * s; }
};

// Output size along one dimension; templated so the Meta kernels can pass c10::SymInt.
// The caller checks the result is >= 1 (a negative numerator floors toward -infinity).
template <typename T>
inline T conv_output_size(T in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  T num = in + 2 * pad - dilation * (kernel - 1) - 1;
  return (num >= 0) ? num / stride + 1 : T(0) - ((T(0) - num) + (stride - 1)) / stride + 1;
}

// Input coordinate read by output coordinate `o` through kernel tap `t` (may be outside
// [0, in): that is padding, read as zero).
FC_HD int64_t conv_input_coord(int64_t o, int64_t t, int64_t stride, int64_t pad,
                               int64_t dilation) {
  return o * stride - pad + t * dilation;
}

// For the gather form of the input gradient: the output coordinate that reads input
// coordinate `i` through tap `t`, or -1 if there is none. In any integer type I: the CUDA
// kernels use int (spatial sizes are checked < 2^31; a 64-bit division costs a GPU far more).
template <typename I>
FC_HD I conv_output_for_tap_as(I i, I t, I out_size, I stride, I pad, I dilation) {
  I u = i + pad - t * dilation;
  if (u < 0 || u % stride != 0) return -1;
  I o = u / stride;
  return o < out_size ? o : -1;
}
FC_HD int64_t conv_output_for_tap(int64_t i, int64_t t, int64_t out_size, int64_t stride,
                                  int64_t pad, int64_t dilation) {
  return conv_output_for_tap_as<int64_t>(i, t, out_size, stride, pad, dilation);
}

// The output coordinates [begin, end) whose tap `t` reads inside the input (0 <= o * stride -
// pad + t * dilation < in_size): the loop bounds that skip padding without a test per element.
struct ConvRange {
  int64_t begin, end;
};
FC_HD ConvRange conv_outputs_reading_inside(int64_t t, int64_t in_size, int64_t out_size,
                                            int64_t stride, int64_t pad, int64_t dilation) {
  const int64_t offset = t * dilation - pad;  // input coordinate of output 0
  int64_t begin = offset >= 0 ? 0 : (stride - 1 - offset) / stride;
  const int64_t last = in_size - 1 - offset;  // largest o * stride that stays inside
  int64_t end = last < 0 ? 0 : last / stride + 1;
  if (end > out_size) end = out_size;
  if (begin > end) begin = end;
  return {begin, end};
}

}  // namespace fastconv
