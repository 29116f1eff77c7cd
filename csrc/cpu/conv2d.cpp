// CPU entry points of the convolution family: validate (checks/conv.h), bring the operands
// into one memory format (PyTorch's rule: channels_last when the activation or the weight
// is), allocate the result, then run the hand-written fp32 kernels (cpu/conv2d_fast.h) or,
// for every case they decline, the generic kernels (cpu/conv2d_generic.h).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "checks/conv.h"
#include "cpu/conv2d_fast.h"
#include "cpu/conv2d_generic.h"

namespace fastconv {
namespace {

constexpr auto kChannelsLast = at::MemoryFormat::ChannelsLast;

// The batched (N, C, H, W) view of an activation, contiguous in `fmt`.
at::Tensor batched(const at::Tensor& t, bool is_batched, at::MemoryFormat fmt) {
  return (is_batched ? t : t.unsqueeze(0)).contiguous(fmt);
}

at::Tensor conv2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const ConvSymGeometry sg = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  const ConvGeometry g = sg.to_int();
  const auto fmt = conv_memory_format(input, weight);
  const at::Tensor x = batched(input, sg.batched, fmt);
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  at::Tensor out = at::empty({g.n, g.k, g.p, g.q}, x.options().memory_format(fmt));
  // the fast kernels read the weight through its strides (packed, or in place where a
  // channels_last weight allows it): no copy of a channels_last weight
  if (out.numel() > 0 && !cpu::conv2d_forward_fast(g, x, weight, b, out)) {
    cpu::conv2d_forward_generic(g, x, weight.contiguous(), b, out, fmt == kChannelsLast);
  }
  return sg.batched ? out : out.squeeze(0);
}

at::Tensor conv2d_input_grad_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                 c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation,
                                 int64_t groups) {
  const ConvSymGeometry sg = check_conv2d_input_grad(grad_output, weight, input_size, stride,
                                                     padding, dilation, groups);
  const ConvGeometry g = sg.to_int();
  const auto fmt = conv_memory_format(grad_output, weight);
  const at::Tensor go = batched(grad_output, sg.batched, fmt);
  at::Tensor grad_input = at::empty({g.n, g.c, g.h, g.w}, go.options().memory_format(fmt));
  if (grad_input.numel() > 0 && !cpu::conv2d_input_grad_fast(g, go, weight, grad_input)) {
    cpu::conv2d_input_grad_generic(g, go, weight.contiguous(), grad_input, fmt == kChannelsLast);
  }
  return sg.batched ? grad_input : grad_input.squeeze(0);
}

at::Tensor conv2d_weight_grad_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                  c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups) {
  const ConvSymGeometry sg = check_conv2d_weight_grad(grad_output, input, weight_size, stride,
                                                      padding, dilation, groups);
  const ConvGeometry g = sg.to_int();
  // Both activations in one format: channels_last when either of them is.
  const auto fmt = conv_memory_format(input, grad_output);
  const at::Tensor x = batched(input, sg.batched, fmt);
  const at::Tensor go = batched(grad_output, sg.batched, fmt);
  // (channels_last activations give a channels_last weight gradient, as PyTorch's does)
  at::Tensor grad_weight = at::empty({g.k, g.c_per_group(), g.r, g.s},
                                     x.options().memory_format(conv_weight_grad_format(weight_size, fmt)));
  if (g.n == 0) {
    grad_weight.zero_();  // a sum over an empty batch
  } else if (!cpu::conv2d_weight_grad_fast(g, go, x, grad_weight)) {
    // the generic kernels write a contiguous (K, C / groups, R, S) tensor
    at::Tensor dw = grad_weight.is_contiguous() ? grad_weight : at::empty(grad_weight.sizes(), x.options());
    cpu::conv2d_weight_grad_generic(g, go, x, dw, fmt == kChannelsLast);
    if (!dw.is_same(grad_weight)) grad_weight.copy_(dw);
  }
  return grad_weight;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("conv2d", conv2d_cpu);
  m.impl("_conv2d_input_grad", conv2d_input_grad_cpu);
  m.impl("_conv2d_weight_grad", conv2d_weight_grad_cpu);
}

}  // namespace fastconv
