// Argument checks of the convolution family (conv2d, _conv2d_input_grad, _conv2d_weight_grad),
// used by the CPU, CUDA, emulated and Meta kernels alike, so a bad call raises the same error
// eagerly, under FakeTensorMode and under torch.compile. They work on SymInt sizes (the Meta
// kernels see symbolic shapes); the real kernels turn the result into an int64 ConvGeometry.
#pragma once
#include <vector>

#include "checks.h"
#include "common/conv.h"

namespace fastconv {

// The validated geometry of one convolution, on possibly symbolic sizes. `batched` is false
// for 3-D (C, H, W) input (the kernels then see it as a batch of one).
struct ConvSymGeometry {
  bool batched;
  c10::SymInt n, c, h, w;  // input
  c10::SymInt k, r, s;     // weight (k, c / groups, r, s)
  c10::SymInt p, q;        // output spatial size
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;

  // The geometry the kernels use (real sizes only: not for the Meta kernels).
  ConvGeometry to_int() const {
    return {n.expect_int(), c.expect_int(), h.expect_int(), w.expect_int(), k.expect_int(),
            r.expect_int(),  s.expect_int(), p.expect_int(), q.expect_int(), stride_h,
            stride_w,        pad_h,          pad_w,          dil_h,          dil_w,
            groups};
  }
  // Batched logical (N, C, H, W) and (N, K, P, Q) shapes.
  std::vector<c10::SymInt> input_size4() const { return {n, c, h, w}; }
  std::vector<c10::SymInt> output_size4() const { return {n, k, p, q}; }
  // The forward output's shape as the caller sees it (3-D when the input was).
  std::vector<c10::SymInt> output_size() const {
    return batched ? output_size4() : std::vector<c10::SymInt>{k, p, q};
  }
  std::vector<c10::SymInt> input_size() const {
    return batched ? input_size4() : std::vector<c10::SymInt>{c, h, w};
  }
};

// Shape checks of one convolution given the input's and the weight's sizes (tensors or the
// input_size / weight_size arguments of the gradient ops; `input_name` / `weight_name` say
// which, for the messages).
inline ConvSymGeometry check_conv2d_sizes(const char* op, c10::SymIntArrayRef in,
                                          const char* input_name, c10::SymIntArrayRef wt,
                                          const char* weight_name, at::IntArrayRef stride,
                                          at::IntArrayRef padding, at::IntArrayRef dilation,
                                          int64_t groups) {
  const int64_t dim = static_cast<int64_t>(in.size());
  FC_CHECK(dim == 3 || dim == 4, op, "a 3-D (C, H, W) or 4-D (N, C, H, W) ", input_name,
           ", got ", dim, "-D ", input_name, " of shape ", shape_str(in));
  FC_CHECK(wt.size() == 4, op, "a 4-D ", weight_name, " (K, C / groups, R, S), got ", wt.size(),
           "-D ", weight_name, " of shape ", shape_str(wt));
  check_int_pair(stride, op, "stride", 1);
  check_int_pair(padding, op, "padding", 0);
  check_int_pair(dilation, op, "dilation", 1);
  FC_CHECK(groups >= 1, op, "groups >= 1, got ", groups);
  ConvSymGeometry g{dim == 4,
                    dim == 4 ? in[0] : c10::SymInt(1),
                    in[dim - 3],
                    in[dim - 2],
                    in[dim - 1],
                    wt[0],
                    wt[2],
                    wt[3],
                    0,
                    0,
                    stride[0],
                    stride[1],
                    padding[0],
                    padding[1],
                    dilation[0],
                    dilation[1],
                    groups};
  FC_CHECK(g.c != 0 && g.h != 0 && g.w != 0, op,
           "non-zero channel and spatial sizes (only the batch may be empty), got ", input_name,
           " of shape ", shape_str(in));
  FC_CHECK(g.k != 0 && wt[1] != 0 && g.r != 0 && g.s != 0, op, "a ", weight_name,
           " with non-zero sizes, got ", shape_str(wt));
  FC_CHECK(g.c % groups == 0, op, "input channels divisible by groups, got ", g.c,
           " channels and groups=", groups);
  FC_CHECK(g.k % groups == 0, op, "output channels (", weight_name,
           ".size(0)) divisible by groups, got ", g.k, " and groups=", groups);
  FC_CHECK(wt[1] * groups == g.c, op, weight_name, ".size(1) * groups equal to the ",
           input_name, "'s ", g.c, " channels (", weight_name, " of shape (K, C / groups, R, S)), got ",
           weight_name, " of shape ", shape_str(wt), " with groups=", groups);
  g.p = conv_output_size<c10::SymInt>(g.h, g.r.guard_int(__FILE__, __LINE__), g.stride_h, g.pad_h,
                                      g.dil_h);
  g.q = conv_output_size<c10::SymInt>(g.w, g.s.guard_int(__FILE__, __LINE__), g.stride_w, g.pad_w,
                                      g.dil_w);
  FC_CHECK(g.p >= 1 && g.q >= 1, op, "an output of at least 1x1, got ", g.p, "x", g.q,
           " from ", input_name, " ", g.h, "x", g.w, " with kernel ", g.r, "x", g.s,
           ", stride=", stride, ", padding=", padding, ", dilation=", dilation);
  return g;
}

// `t` is floating point and shares `ref`'s dtype and device.
inline void check_conv_operand(const at::Tensor& t, const at::Tensor& ref, const char* op,
                               const char* name, const char* ref_name) {
  FC_CHECK(t.scalar_type() == ref.scalar_type(), op, name, " of the ", ref_name, "'s dtype ",
           ref.scalar_type(), ", got ", t.scalar_type());
  check_same_device(ref, t, op, ref_name, name);
}

inline ConvSymGeometry check_conv2d(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation,
                                    int64_t groups) {
  const char* op = "conv2d";
  check_floating(input, op, "input");
  check_conv_operand(weight, input, op, "weight", "input");
  ConvSymGeometry g = check_conv2d_sizes(op, input.sym_sizes(), "input", weight.sym_sizes(),
                                         "weight", stride, padding, dilation, groups);
  if (bias.has_value() && bias->defined()) {
    check_conv_operand(*bias, input, op, "bias", "input");
    FC_CHECK(bias->dim() == 1 && bias->sym_size(0) == g.k, op, "a 1-D bias of ", g.k,
             " elements (one per output channel), got bias of shape ",
             shape_str(bias->sym_sizes()));
  }
  return g;
}

// grad_output must have the forward's output shape for geometry g.
inline void check_grad_output_shape(const at::Tensor& grad_output, const ConvSymGeometry& g,
                                    const char* op) {
  auto expected = g.output_size();
  FC_CHECK(grad_output.sym_sizes() == c10::SymIntArrayRef(expected), op, "grad_output of shape ",
           shape_str(expected), " (the forward's output shape), got ",
           shape_str(grad_output.sym_sizes()));
}

inline ConvSymGeometry check_conv2d_input_grad(const at::Tensor& grad_output,
                                               const at::Tensor& weight,
                                               c10::SymIntArrayRef input_size,
                                               at::IntArrayRef stride, at::IntArrayRef padding,
                                               at::IntArrayRef dilation, int64_t groups) {
  const char* op = "_conv2d_input_grad";
  check_floating(grad_output, op, "grad_output");
  check_conv_operand(weight, grad_output, op, "weight", "grad_output");
  ConvSymGeometry g = check_conv2d_sizes(op, input_size, "input_size", weight.sym_sizes(),
                                         "weight", stride, padding, dilation, groups);
  check_grad_output_shape(grad_output, g, op);
  return g;
}

inline ConvSymGeometry check_conv2d_weight_grad(const at::Tensor& grad_output,
                                                const at::Tensor& input,
                                                c10::SymIntArrayRef weight_size,
                                                at::IntArrayRef stride, at::IntArrayRef padding,
                                                at::IntArrayRef dilation, int64_t groups) {
  const char* op = "_conv2d_weight_grad";
  check_floating(grad_output, op, "grad_output");
  check_conv_operand(input, grad_output, op, "input", "grad_output");
  ConvSymGeometry g = check_conv2d_sizes(op, input.sym_sizes(), "input", weight_size,
                                         "weight_size", stride, padding, dilation, groups);
  check_grad_output_shape(grad_output, g, op);
  return g;
}

// Memory format of a conv output computed from activation `a` (the input, or grad_output for
// the input gradient) and the weight: PyTorch's rule, channels_last when either suggests it
// (for 3-D activations, judged on the batch-of-one view the kernels see).
inline at::MemoryFormat conv_memory_format(const at::Tensor& a, const at::Tensor& weight) {
  const auto cl = at::MemoryFormat::ChannelsLast;
  const bool a_cl = a.dim() == 4 ? a.suggest_memory_format() == cl
                                 : a.unsqueeze(0).suggest_memory_format() == cl;
  return (a_cl || weight.suggest_memory_format() == cl) ? cl : at::MemoryFormat::Contiguous;
}

// The memory format of the weight gradient (K, C / groups, R, S): the activations' format
// `fmt` (conv_memory_format(input, grad_output)), so channels_last when they are, as PyTorch
// returns it (its rule also looks at the weight, which this op does not see; the autograd
// backward converts to the weight's own format). Where both formats are the same memory order
// (one channel per group, or a 1x1 kernel) the contiguous strides, as PyTorch's. The CPU, CUDA
// and Meta kernels all allocate with this, so strides agree everywhere.
inline at::MemoryFormat conv_weight_grad_format(c10::SymIntArrayRef weight_size, at::MemoryFormat fmt) {
  const bool same_order = weight_size[1] == 1 || (weight_size[2] == 1 && weight_size[3] == 1);
  return same_order ? at::MemoryFormat::Contiguous : fmt;
}

// An uninitialized activation-shaped result: batched (N, C, H, W) `size4` in memory format
// `fmt`, returned 3-D (the batch of one dropped) when the call was unbatched. The CPU, CUDA and
// Meta kernels all allocate through this, so strides agree everywhere.
inline at::Tensor empty_conv_activation(c10::SymIntArrayRef size4, bool batched,
                                        const at::TensorOptions& options, at::MemoryFormat fmt) {
  at::Tensor t = at::empty_symint(size4, options.memory_format(fmt));
  return batched ? t : t.squeeze(0);
}

}  // namespace fastconv
