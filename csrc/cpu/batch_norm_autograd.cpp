// Autograd of the BatchNorm family's two forward ops, written in C++ (registered for every
// device under the Autograd key) so that a training step pays no Python: the forward is one op
// call (_batch_norm_forward_train, running statistics included) and the backward one op call
// (_batch_norm_backward: reduce + apply), where the Python version paid a Python
// autograd.Function around each and two to three op calls from Python in the backward.
//
// What is saved for backward: the input x (one activation-sized tensor), the per-channel mean
// and var, weight and bias, and the residual when there is one (ResNet's identity branch, which
// the block's first convolution keeps alive anyway). The ReLU mask is recomputed from x by the
// same expression the forward used (common/batch_norm.h), rather than read from the saved
// output y: x_hat cannot be recovered from y where weight == 0 (grad_weight needs it) and loses
// precision where weight is small, while x gives exact x_hat, the same minimal traffic and no
// second saved tensor.
//
// Only requested gradients are computed. Double backward: when a graph of the gradient is
// recorded (create_graph=True), the backward ops are called through their own autograd
// (fastconv/ops/batch_norm.py), which raises a clear error if that graph is differentiated.
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>

#include "checks/batch_norm.h"
#include "cpu/autograd_util.h"

namespace fastconv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensor2 = std::tuple<at::Tensor, at::Tensor>;

using autograd::given;
using autograd::records_graph;
using autograd::typed_op;

#define FC_BN_OP(fn, name, ...)                              \
  const auto& fn() {                                         \
    static const auto op = typed_op<__VA_ARGS__>(name);      \
    return op;                                               \
  }
FC_BN_OP(forward_train_op, "fastconv::_batch_norm_forward_train",
         Tensor3(const at::Tensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                 const OptTensor&, const OptTensor&, double, double, bool))
FC_BN_OP(apply_op, "fastconv::batch_norm_apply",
         at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&,
                    const OptTensor&, const OptTensor&, double, bool))
FC_BN_OP(backward_op, "fastconv::_batch_norm_backward",
         std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
             const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
             const OptTensor&, const OptTensor&, const OptTensor&, double, bool, bool, bool))
FC_BN_OP(reduce_op, "fastconv::_batch_norm_backward_reduce",
         Tensor3(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                 const OptTensor&, const OptTensor&, const OptTensor&, double, bool))
FC_BN_OP(apply_backward_op, "fastconv::_batch_norm_backward_apply",
         at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                    const OptTensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                    const OptTensor&, c10::SymInt, double, bool))
FC_BN_OP(add_relu_apply_backward_op, "fastconv::_batch_norm_add_relu_backward_apply",
         Tensor2(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                 const OptTensor&, const OptTensor&, const at::Tensor&, const OptTensor&,
                 const OptTensor&, c10::SymInt, double))
#undef FC_BN_OP

OptTensor opt(const at::Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// Saves what the backward needs; `edges` are the autograd input indices of (input, weight,
// bias, residual) among the tensor arguments that are defined (-1: absent).
void save(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& mean,
          const at::Tensor& var, const OptTensor& weight, const OptTensor& bias,
          const OptTensor& residual, double eps, bool relu, bool training,
          std::array<int64_t, 4> edges) {
  ctx->save_for_backward({input, mean, var, weight.value_or(at::Tensor()),
                          bias.value_or(at::Tensor()), residual.value_or(at::Tensor())});
  ctx->saved_data["eps"] = eps;
  ctx->saved_data["relu"] = relu;
  ctx->saved_data["training"] = training;
  ctx->saved_data["edges"] = std::vector<int64_t>(edges.begin(), edges.end());
  ctx->set_materialize_grads(false);
}

// Gradients (input, weight, bias, residual) of [relu](bn(input) [+ residual]).
variable_list bn_backward(AutogradContext* ctx, const at::Tensor& grad_output) {
  const auto edges = ctx->saved_data["edges"].toIntVector();
  bool need[4];
  for (int i = 0; i < 4; ++i) need[i] = edges[i] >= 0 && ctx->needs_input_grad(edges[i]);
  const bool need_x = need[0], need_w = need[1], need_b = need[2], need_r = need[3];
  variable_list grads(4);
  if (!grad_output.defined()) return grads;
  const auto saved = ctx->get_saved_variables();
  const at::Tensor &input = saved[0], &mean = saved[1], &var = saved[2];
  const OptTensor weight = opt(saved[3]), bias = opt(saved[4]), residual = opt(saved[5]);
  const double eps = ctx->saved_data["eps"].toDouble();
  const bool relu = ctx->saved_data["relu"].toBool();
  const bool training = ctx->saved_data["training"].toBool();
  // Below autograd unless a graph of the gradient is recorded: then the backward ops' own
  // autograd is attached, and it raises the double-backward error if that graph is used.
  std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
  if (!at::GradMode::is_enabled()) below_autograd.emplace();
  const bool need_sums = need_w || need_b || (need_x && training);
  const bool need_masked = need_r && relu;  // grad_residual = the masked grad_output
  if (need_r && !relu) grads[3] = grad_output;  // d(bn + residual)/d residual = identity
  if (need_sums && (need_x || need_masked)) {
    auto [gx, gw, gb, gr] = backward_op().call(grad_output, input, mean, var, weight, bias,
                                               residual, eps, relu, training, need_masked);
    if (need_x) grads[0] = gx;
    if (need_w) grads[1] = gw;
    if (need_b) grads[2] = gb;
    if (need_masked) grads[3] = gr;
  } else if (need_sums) {
    auto [sum_dy, sum_dy_xmu, gw] =
        reduce_op().call(grad_output, input, mean, var, weight, bias, residual, eps, relu);
    if (need_w) grads[1] = gw;
    if (need_b) grads[2] = sum_dy.to(bias->scalar_type());
  } else if (need_masked) {  // eval form (statistics are constants), with the residual
    auto [gx, gr] = add_relu_apply_backward_op().call(grad_output, input, mean, var, weight, bias,
                                                      *residual, std::nullopt, std::nullopt,
                                                      bn_count(input), eps);
    if (need_x) grads[0] = gx;
    grads[3] = gr;
  } else if (need_x) {
    grads[0] = apply_backward_op().call(grad_output, input, mean, var, weight, bias, residual,
                                        std::nullopt, std::nullopt, bn_count(input), eps, relu);
  }
  return grads;
}

// Autograd input index of each of (input, weight, bias, residual), given which of the tensor
// arguments before them are defined.
std::array<int64_t, 4> edge_indices(std::initializer_list<bool> defined_before_weight,
                                    const OptTensor& weight, const OptTensor& bias,
                                    const OptTensor& residual) {
  int64_t next = 0;
  std::array<int64_t, 4> e{};
  e[0] = next;
  for (bool d : defined_before_weight) next += d ? 1 : 0;
  e[1] = given(weight) ? next++ : -1;
  e[2] = given(bias) ? next++ : -1;
  e[3] = given(residual) ? next++ : -1;
  return e;
}

class TrainFunction : public torch::autograd::Function<TrainFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const OptTensor& weight, const OptTensor& bias,
                               const OptTensor& residual, const OptTensor& running_mean,
                               const OptTensor& running_var, double momentum, double eps,
                               bool relu) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, mean, var] = forward_train_op().call(input, weight, bias, residual, running_mean,
                                                  running_var, momentum, eps, relu);
    save(ctx, input, mean, var, weight, bias, residual, eps, relu, true,
         edge_indices({true}, weight, bias, residual));
    ctx->mark_non_differentiable({mean, var});
    return {y, mean, var};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list g = bn_backward(ctx, grads[0]);
    g.resize(9);  // no gradient for running_mean, running_var, momentum, eps, relu
    return g;
  }
};

class ApplyFunction : public torch::autograd::Function<ApplyFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& mean, const at::Tensor& var,
                               const OptTensor& weight, const OptTensor& bias,
                               const OptTensor& residual, double eps, bool relu) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor y = apply_op().call(input, mean, var, weight, bias, residual, eps, relu);
    save(ctx, input, mean, var, weight, bias, residual, eps, relu, false,
         edge_indices({true, true, true}, weight, bias, residual));
    ctx->saved_data["stats_need_grad"] = mean.requires_grad() || var.requires_grad();
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    TORCH_CHECK(!ctx->saved_data["stats_need_grad"].toBool(),
                "fastconv::batch_norm_apply: expected mean and var that do not require grad "
                "(statistics are constants in eval mode), got a mean or var that requires grad");
    variable_list g = bn_backward(ctx, grads[0]);
    // (input, mean, var, weight, bias, residual, eps, relu)
    return {g[0], at::Tensor(), at::Tensor(), g[1], g[2], g[3], at::Tensor(), at::Tensor()};
  }
};

Tensor3 forward_train_autograd(const at::Tensor& input, const OptTensor& weight,
                               const OptTensor& bias, const OptTensor& residual,
                               const OptTensor& running_mean, const OptTensor& running_var,
                               double momentum, double eps, bool relu) {
  if (!records_graph({&input}, {&weight, &bias, &residual})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_train_op().call(input, weight, bias, residual, running_mean, running_var,
                                   momentum, eps, relu);
  }
  variable_list out = TrainFunction::apply(input, weight, bias, residual, running_mean,
                                           running_var, momentum, eps, relu);
  return {out[0], out[1], out[2]};
}

at::Tensor apply_autograd(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& var,
                          const OptTensor& weight, const OptTensor& bias,
                          const OptTensor& residual, double eps, bool relu) {
  if (!records_graph({&input, &mean, &var}, {&weight, &bias, &residual})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return apply_op().call(input, mean, var, weight, bias, residual, eps, relu);
  }
  return ApplyFunction::apply(input, mean, var, weight, bias, residual, eps, relu)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Autograd, m) {
  m.impl("_batch_norm_forward_train", forward_train_autograd);
  m.impl("batch_norm_apply", apply_autograd);
}

}  // namespace fastconv
