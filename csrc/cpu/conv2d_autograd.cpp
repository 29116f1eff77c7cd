// Autograd of the convolution family's three ops, written in C++ (registered for every device
// under the Autograd key), as the BatchNorm family's (cpu/batch_norm_autograd.cpp): a call that
// records no graph (inference, no_grad, or the bench's direct op calls) runs the op below
// autograd with no Python at all, where torch.library's Python autograd kernel cost about 11 us
// per call (a 3x3 layer of 16 channels at 4 x 4: 23.5 -> 12.7 us per call); a call that
// records one builds a torch::autograd::Function node.
//
// Each op's derivatives are the other ops (schemas/conv.cpp):
//   conv2d(x, w, b)               dx = _conv2d_input_grad(dy, w)   dw = _conv2d_weight_grad(dy, x)
//                                 db = dy summed over batch and space
//   _conv2d_input_grad(dy, w)     d(dy) = conv2d(g, w)             dw = _conv2d_weight_grad(dy, g)
//   _conv2d_weight_grad(dy, x)    d(dy) = conv2d(x, g)             dx = _conv2d_input_grad(dy, g)
// (g is the incoming gradient.) The backward calls them through the dispatcher: with a graph
// of the gradient recorded (create_graph=True) their own autograd is attached, so double
// backward works; otherwise below autograd. Only the requested gradients are computed, and
// only the tensors they need are saved.
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>

#include "cpu/autograd_util.h"

namespace fastconv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using autograd::OptTensor;
using autograd::given;
using autograd::records_graph;
using autograd::typed_op;
using at::IntArrayRef;

using Conv2dSig = at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, IntArrayRef,
                             IntArrayRef, IntArrayRef, int64_t);
using GradSig = at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef, IntArrayRef,
                           IntArrayRef, IntArrayRef, int64_t);

const c10::TypedOperatorHandle<Conv2dSig>& conv2d_op() {
  static const auto op = typed_op<Conv2dSig>("fastconv::conv2d");
  return op;
}
const c10::TypedOperatorHandle<GradSig>& input_grad_op() {
  static const auto op = typed_op<GradSig>("fastconv::_conv2d_input_grad");
  return op;
}
const c10::TypedOperatorHandle<GradSig>& weight_grad_op() {
  static const auto op = typed_op<GradSig>("fastconv::_conv2d_weight_grad");
  return op;
}

// stride, padding, dilation, groups
struct Geometry {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;
};

void save_geometry(AutogradContext* ctx, IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
                   int64_t groups) {
  ctx->saved_data["stride"] = stride;
  ctx->saved_data["padding"] = padding;
  ctx->saved_data["dilation"] = dilation;
  ctx->saved_data["groups"] = groups;
}
Geometry saved_geometry(AutogradContext* ctx) {
  return {ctx->saved_data["stride"].toIntVector(), ctx->saved_data["padding"].toIntVector(),
          ctx->saved_data["dilation"].toIntVector(), ctx->saved_data["groups"].toInt()};
}

// The memory format torch gives a weight's gradient: the weight's own (channels_last when only
// that fits). The weight-gradient op returns the activations' format; where the two differ the
// backward copies.
at::MemoryFormat weight_format(const at::Tensor& w) {
  return w.is_contiguous(at::MemoryFormat::ChannelsLast) && !w.is_contiguous() ? at::MemoryFormat::ChannelsLast
                                                                                : at::MemoryFormat::Contiguous;
}

class Conv2dFunction : public torch::autograd::Function<Conv2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const OptTensor& bias, IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
                            int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor out = conv2d_op().call(input, weight, bias, stride, padding, dilation, groups);
    // dx needs the weight, dw the input
    ctx->save_for_backward({input.requires_grad() ? weight : at::Tensor(),
                            weight.requires_grad() ? input : at::Tensor()});
    save_geometry(ctx, stride, padding, dilation, groups);
    ctx->saved_data["input_size"] = input.sym_sizes();
    ctx->saved_data["weight_size"] = weight.sym_sizes();
    // The format the forward ran in (PyTorch's rule, checks/conv.h): like torch's
    // convolution_backward, the backward brings the gradient to it, so grad_input comes out in
    // the input's format even when the gradient is, say, the expanded gradient of a sum.
    ctx->saved_data["channels_last"] = out.dim() == 4 && out.is_contiguous(at::MemoryFormat::ChannelsLast);
    ctx->saved_data["weight_format"] = static_cast<int64_t>(weight_format(weight));
    ctx->saved_data["has_bias"] = given(bias);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Geometry geo = saved_geometry(ctx);
    at::Tensor grad = grads[0];
    if (ctx->saved_data["channels_last"].toBool()) grad = grad.contiguous(at::MemoryFormat::ChannelsLast);
    // below autograd unless the backward itself is recorded (create_graph=True)
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) below_autograd.emplace();
    at::Tensor grad_input, grad_weight, grad_bias;
    if (ctx->needs_input_grad(0)) {
      grad_input = input_grad_op().call(grad, saved[0], ctx->saved_data["input_size"].toSymIntVector(), geo.stride,
                                        geo.padding, geo.dilation, geo.groups);
    }
    if (ctx->needs_input_grad(1)) {
      grad_weight = weight_grad_op().call(grad, saved[1], ctx->saved_data["weight_size"].toSymIntVector(),
                                          geo.stride, geo.padding, geo.dilation, geo.groups);
      grad_weight = grad_weight.contiguous(static_cast<at::MemoryFormat>(ctx->saved_data["weight_format"].toInt()));
    }
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) {
      grad_bias = grad.dim() == 4 ? grad.sum({0, 2, 3}) : grad.sum({1, 2});
    }
    return {grad_input, grad_weight, grad_bias, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// _conv2d_input_grad(grad_output, weight) and _conv2d_weight_grad(grad_output, input): a bilinear
// op of two tensors whose derivatives are conv2d of the incoming gradient with the other
// operand, and the third op of the family.
template <bool kInputGrad>
class GradFunction : public torch::autograd::Function<GradFunction<kInputGrad>> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& other,
                            c10::SymIntArrayRef size, IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
                            int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const auto& op = kInputGrad ? input_grad_op() : weight_grad_op();
    at::Tensor out = op.call(grad_output, other, size, stride, padding, dilation, groups);
    // d(grad_output) needs `other`, d(other) needs grad_output
    ctx->save_for_backward({grad_output.requires_grad() ? other : at::Tensor(),
                            other.requires_grad() ? grad_output : at::Tensor()});
    save_geometry(ctx, stride, padding, dilation, groups);
    ctx->saved_data["other_size"] = other.sym_sizes();
    ctx->saved_data["other_format"] = static_cast<int64_t>(weight_format(other));
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Geometry geo = saved_geometry(ctx);
    const at::Tensor& g = grads[0];
    // below autograd unless the backward itself is recorded (create_graph=True)
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) below_autograd.emplace();
    at::Tensor grad_grad_output, grad_other;
    if (ctx->needs_input_grad(0)) {  // conv2d(g, w) or conv2d(x, g)
      grad_grad_output = kInputGrad ? conv2d_op().call(g, saved[0], std::nullopt, geo.stride, geo.padding,
                                                       geo.dilation, geo.groups)
                                    : conv2d_op().call(saved[0], g, std::nullopt, geo.stride, geo.padding,
                                                       geo.dilation, geo.groups);
    }
    if (ctx->needs_input_grad(1)) {
      const auto other_size = ctx->saved_data["other_size"].toSymIntVector();
      if (kInputGrad) {  // the weight's gradient, in the weight's format
        grad_other = weight_grad_op().call(saved[1], g, other_size, geo.stride, geo.padding, geo.dilation, geo.groups);
        grad_other = grad_other.contiguous(static_cast<at::MemoryFormat>(ctx->saved_data["other_format"].toInt()));
      } else {
        grad_other = input_grad_op().call(saved[1], g, other_size, geo.stride, geo.padding, geo.dilation, geo.groups);
      }
    }
    return {grad_grad_output, grad_other, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor conv2d_autograd(const at::Tensor& input, const at::Tensor& weight, const OptTensor& bias,
                           IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups) {
  if (!records_graph({&input, &weight}, {&bias})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return conv2d_op().call(input, weight, bias, stride, padding, dilation, groups);
  }
  return Conv2dFunction::apply(input, weight, bias, stride, padding, dilation, groups);
}

template <bool kInputGrad>
at::Tensor grad_autograd(const at::Tensor& grad_output, const at::Tensor& other, c10::SymIntArrayRef size,
                         IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups) {
  if (!records_graph({&grad_output, &other})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const auto& op = kInputGrad ? input_grad_op() : weight_grad_op();
    return op.call(grad_output, other, size, stride, padding, dilation, groups);
  }
  return GradFunction<kInputGrad>::apply(grad_output, other, size, stride, padding, dilation, groups);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Autograd, m) {
  m.impl("conv2d", conv2d_autograd);
  m.impl("_conv2d_input_grad", grad_autograd<true>);
  m.impl("_conv2d_weight_grad", grad_autograd<false>);
}

}  // namespace fastconv
