// Schema strings of the fused BatchNorm(+ReLU, + residual add) family, written once: defined in
// the fastconv namespace by schemas/batch_norm.cpp (where each op's contract is documented)
// and in fastconv_simt by simt/batch_norm.cpp (the emulated CUDA kernels, same signatures).
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#define FC_SCHEMA_BATCH_NORM_STATS "_batch_norm_stats(Tensor input) -> (Tensor mean, Tensor var)"
#define FC_SCHEMA_BATCH_NORM_FORWARD_TRAIN                                                 \
  "_batch_norm_forward_train(Tensor input, Tensor? weight, Tensor? bias, Tensor? residual, " \
  "Tensor(a!)? running_mean, Tensor(b!)? running_var, float momentum, float eps, bool relu) " \
  "-> (Tensor output, Tensor mean, Tensor var)"
#define FC_SCHEMA_BATCH_NORM_UPDATE_STATS                                              \
  "_batch_norm_update_stats(Tensor mean, Tensor var, SymInt count, float momentum, "    \
  "Tensor(a!) running_mean, Tensor(b!) running_var) -> ()"
#define FC_SCHEMA_BATCH_NORM_APPLY                                                      \
  "batch_norm_apply(Tensor input, Tensor mean, Tensor var, Tensor? weight, Tensor? bias, " \
  "Tensor? residual, float eps, bool relu) -> Tensor"
#define FC_SCHEMA_BATCH_NORM_BACKWARD_REDUCE                                               \
  "_batch_norm_backward_reduce(Tensor grad_output, Tensor input, Tensor mean, Tensor var, " \
  "Tensor? weight, Tensor? bias, Tensor? residual, float eps, bool relu) "                 \
  "-> (Tensor sum_dy, Tensor sum_dy_xmu, Tensor grad_weight)"
#define FC_SCHEMA_BATCH_NORM_BACKWARD                                                       \
  "_batch_norm_backward(Tensor grad_output, Tensor input, Tensor mean, Tensor var, "         \
  "Tensor? weight, Tensor? bias, Tensor? residual, float eps, bool relu, bool training, "    \
  "bool grad_residual) -> (Tensor grad_input, Tensor grad_weight, Tensor grad_bias, "        \
  "Tensor grad_residual)"
#define FC_SCHEMA_BATCH_NORM_BACKWARD_APPLY                                              \
  "_batch_norm_backward_apply(Tensor grad_output, Tensor input, Tensor mean, Tensor var, " \
  "Tensor? weight, Tensor? bias, Tensor? residual, Tensor? sum_dy, Tensor? sum_dy_xmu, "   \
  "SymInt count, float eps, bool relu) -> Tensor"
#define FC_SCHEMA_BATCH_NORM_ADD_RELU_BACKWARD_APPLY                                        \
  "_batch_norm_add_relu_backward_apply(Tensor grad_output, Tensor input, Tensor mean, "    \
  "Tensor var, Tensor? weight, Tensor? bias, Tensor residual, Tensor? sum_dy, "            \
  "Tensor? sum_dy_xmu, SymInt count, float eps) -> (Tensor grad_input, Tensor grad_residual)"

// Every schema of the family, for the two TORCH_LIBRARY_FRAGMENTs.
#define FC_DEFINE_BATCH_NORM_SCHEMAS(m)                 \
  do {                                                  \
    m.def(FC_SCHEMA_BATCH_NORM_STATS);                  \
    m.def(FC_SCHEMA_BATCH_NORM_FORWARD_TRAIN);          \
    m.def(FC_SCHEMA_BATCH_NORM_UPDATE_STATS);           \
    m.def(FC_SCHEMA_BATCH_NORM_APPLY);                  \
    m.def(FC_SCHEMA_BATCH_NORM_BACKWARD_REDUCE);        \
    m.def(FC_SCHEMA_BATCH_NORM_BACKWARD);               \
    m.def(FC_SCHEMA_BATCH_NORM_BACKWARD_APPLY);         \
    m.def(FC_SCHEMA_BATCH_NORM_ADD_RELU_BACKWARD_APPLY); \
  } while (0)

namespace fastconv {

// The entry points of _batch_norm_backward_apply and _batch_norm_add_relu_backward_apply, both
// over one backend function Impl(grad_output, input, mean, var, weight, bias, residual, sum_dy,
// sum_dy_xmu, count, eps, relu, grad_residual, op) -> (grad_input, grad_residual or undefined).
template <auto Impl>
at::Tensor bn_backward_apply_entry(const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& mean, const at::Tensor& var,
                                   const std::optional<at::Tensor>& weight,
                                   const std::optional<at::Tensor>& bias,
                                   const std::optional<at::Tensor>& residual,
                                   const std::optional<at::Tensor>& sum_dy,
                                   const std::optional<at::Tensor>& sum_dy_xmu, c10::SymInt count,
                                   double eps, bool relu) {
  return std::get<0>(Impl(grad_output, input, mean, var, weight, bias, residual, sum_dy,
                          sum_dy_xmu, count, eps, relu, false, "_batch_norm_backward_apply"));
}

template <auto Impl>
std::tuple<at::Tensor, at::Tensor> bn_add_relu_backward_apply_entry(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& residual,
    const std::optional<at::Tensor>& sum_dy, const std::optional<at::Tensor>& sum_dy_xmu,
    c10::SymInt count, double eps) {
  return Impl(grad_output, input, mean, var, weight, bias, residual, sum_dy, sum_dy_xmu, count,
              eps, true, true, "_batch_norm_add_relu_backward_apply");
}

}  // namespace fastconv

// Registers one backend's kernels of the family, named <kernel>_<S> (stats_cpu, ...), with
// backward_apply_<S> the Impl of the two entry points above.
#define FC_IMPL_BATCH_NORM_KERNELS(m, S)                                                   \
  do {                                                                                     \
    m.impl("_batch_norm_stats", stats_##S);                                                \
    m.impl("_batch_norm_forward_train", forward_train_##S);                                \
    m.impl("_batch_norm_update_stats", update_stats_##S);                                  \
    m.impl("batch_norm_apply", apply_##S);                                                 \
    m.impl("_batch_norm_backward_reduce", backward_reduce_##S);                            \
    m.impl("_batch_norm_backward", backward_##S);                                          \
    m.impl("_batch_norm_backward_apply",                                                   \
           ::fastconv::bn_backward_apply_entry<backward_apply_##S>);                       \
    m.impl("_batch_norm_add_relu_backward_apply",                                          \
           ::fastconv::bn_add_relu_backward_apply_entry<backward_apply_##S>);              \
  } while (0)
