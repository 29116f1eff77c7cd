// Meta kernels (shapes, dtypes, memory formats, and the same checks as the real kernels) of
// the BatchNorm family: what FakeTensorMode and torch.compile run.
#include <torch/library.h>

#include "checks/batch_norm.h"
#include "schemas/batch_norm.h"

namespace fastconv {
namespace {

using OptTensor = std::optional<at::Tensor>;

at::Tensor like_input(const at::Tensor& input) {
  return at::empty_symint(input.sym_sizes(),
                          input.options().memory_format(bn_memory_format(input)));
}

at::Tensor channel_vector(const at::Tensor& input, const c10::SymInt& c, at::ScalarType dtype) {
  return at::empty_symint({c}, input.options().dtype(dtype));
}

std::tuple<at::Tensor, at::Tensor> stats_meta(const at::Tensor& input) {
  const c10::SymInt c = check_bn_input(input, "_batch_norm_stats");
  const auto acc = bn_acc_dtype(input.scalar_type());
  return {channel_vector(input, c, acc), channel_vector(input, c, acc)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_train_meta(
    const at::Tensor& input, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, const OptTensor& running_mean, const OptTensor& running_var,
    double momentum, double eps, bool relu) {
  const c10::SymInt c = check_bn_forward_train(input, weight, bias, residual, running_mean,
                                               running_var, momentum, eps,
                                               "_batch_norm_forward_train");
  const auto acc = bn_acc_dtype(input.scalar_type());
  return {like_input(input), channel_vector(input, c, acc), channel_vector(input, c, acc)};
}

void update_stats_meta(const at::Tensor& mean, const at::Tensor& var, c10::SymInt count,
                       double momentum, const at::Tensor& running_mean,
                       const at::Tensor& running_var) {
  check_bn_update_stats(mean, var, count, momentum, running_mean, running_var);
}

at::Tensor apply_meta(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& var,
                      const std::optional<at::Tensor>& weight,
                      const std::optional<at::Tensor>& bias,
                      const std::optional<at::Tensor>& residual, double eps, bool relu) {
  check_bn_apply(input, mean, var, weight, bias, residual, eps, "batch_norm_apply");
  return like_input(input);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_reduce_meta(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    bool relu) {
  const char* op = "_batch_norm_backward_reduce";
  const c10::SymInt c =
      check_bn_backward(grad_output, input, mean, var, weight, bias, residual, eps, op);
  const auto acc = bn_acc_dtype(input.scalar_type());
  const auto wdt = weight.has_value() && weight->defined() ? weight->scalar_type() : acc;
  return {channel_vector(input, c, acc), channel_vector(input, c, acc),
          channel_vector(input, c, wdt)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_meta(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, double eps, bool relu, bool training, bool grad_residual) {
  const char* op = "_batch_norm_backward";
  const c10::SymInt c =
      check_bn_backward(grad_output, input, mean, var, weight, bias, residual, eps, op);
  const auto acc = bn_acc_dtype(input.scalar_type());
  auto dtype_of = [&](const OptTensor& t) { return t.has_value() && t->defined() ? t->scalar_type() : acc; };
  return {like_input(input), channel_vector(input, c, dtype_of(weight)),
          channel_vector(input, c, dtype_of(bias)),
          grad_residual ? like_input(input) : at::empty_symint({0}, input.options())};
}

std::tuple<at::Tensor, at::Tensor> backward_apply_meta(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, const OptTensor& sum_dy, const OptTensor& sum_dy_xmu,
    const c10::SymInt& count, double eps, bool relu, bool grad_residual, const char* op) {
  const c10::SymInt c =
      check_bn_backward(grad_output, input, mean, var, weight, bias, residual, eps, op);
  check_bn_backward_sums(sum_dy, sum_dy_xmu, input, c, count, op);
  return {like_input(input), grad_residual ? like_input(input) : at::Tensor()};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, Meta, m) { FC_IMPL_BATCH_NORM_KERNELS(m, meta); }

}  // namespace fastconv
