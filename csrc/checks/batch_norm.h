// Argument checks of the BatchNorm family (schemas/batch_norm.cpp), used by the CPU, CUDA,
// emulated and Meta kernels alike, on symbolic sizes.
#pragma once
#include "checks.h"

namespace fastconv {

// The compute dtype of an input dtype: float64 for float64, float32 otherwise.
inline at::ScalarType bn_acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// The memory format every tensor of a call is brought to, and that outputs keep: PyTorch's
// suggest_memory_format for 4-D input (channels_last stays channels_last), else contiguous.
inline at::MemoryFormat bn_memory_format(const at::Tensor& t) {
  return t.dim() == 4 ? t.suggest_memory_format() : at::MemoryFormat::Contiguous;
}

// input: (N, C) or (N, C, *), floating point. Returns C.
inline c10::SymInt check_bn_input(const at::Tensor& input, const char* op,
                                  const char* name = "input") {
  FC_CHECK(input.dim() >= 2, op, name, " of at least 2 dimensions (N, C, ...), got ",
           input.dim(), "-D ", name, " of shape ", shape_str(input.sym_sizes()));
  check_floating(input, op, name);
  return input.sym_size(1);
}

// Values per channel: numel / C (0 for an empty batch).
inline c10::SymInt bn_count(const at::Tensor& input) {
  const c10::SymInt& c = input.sym_size(1);
  return c == 0 ? c10::SymInt(0) : input.sym_numel() / c;
}

// A per-channel vector (mean, var, weight, bias, running stats): 1-D of size C, floating,
// on the input's device. `any_float`: any floating dtype (statistics are converted);
// otherwise the input's dtype or its compute dtype (weight, bias).
inline void check_bn_vector(const at::Tensor& t, const at::Tensor& input, const c10::SymInt& c,
                            const char* op, const char* name, bool any_float = true) {
  FC_CHECK(t.dim() == 1 && t.sym_size(0) == c, op, name, " of shape [", c,
           "] (one value per channel), got ", shape_str(t.sym_sizes()));
  if (any_float) {
    check_floating(t, op, name);
  } else {
    const auto in = input.scalar_type();
    FC_CHECK(t.scalar_type() == in || t.scalar_type() == bn_acc_dtype(in), op, name,
             " of dtype ", in, (in == bn_acc_dtype(in) ? "" : " or Float"), " (as the input), got ",
             t.scalar_type());
  }
  check_same_device(t, input, op, name, "input");
}

inline void check_bn_optional_vector(const std::optional<at::Tensor>& t, const at::Tensor& input,
                                     const c10::SymInt& c, const char* op, const char* name) {
  if (t.has_value() && t->defined()) check_bn_vector(*t, input, c, op, name, false);
}

// A tensor of the input's shape and dtype (residual, grad_output).
inline void check_bn_like(const at::Tensor& t, const at::Tensor& input, const char* op,
                          const char* name) {
  FC_CHECK(t.sym_sizes() == input.sym_sizes(), op, name, " of the input's shape ",
           shape_str(input.sym_sizes()), ", got ", shape_str(t.sym_sizes()));
  FC_CHECK(t.scalar_type() == input.scalar_type(), op, name, " of the input's dtype ",
           input.scalar_type(), ", got ", t.scalar_type());
  check_same_device(t, input, op, name, "input");
}

inline void check_bn_eps(double eps, const char* op) {
  FC_CHECK(eps >= 0.0, op, "eps >= 0, got ", eps);
}

// The checks of the ops that normalize with given statistics (apply, backward reduce/apply).
inline c10::SymInt check_bn_apply(const at::Tensor& input, const at::Tensor& mean,
                                  const at::Tensor& var,
                                  const std::optional<at::Tensor>& weight,
                                  const std::optional<at::Tensor>& bias,
                                  const std::optional<at::Tensor>& residual, double eps,
                                  const char* op) {
  const c10::SymInt c = check_bn_input(input, op);
  check_bn_vector(mean, input, c, op, "mean");
  check_bn_vector(var, input, c, op, "var");
  check_bn_optional_vector(weight, input, c, op, "weight");
  check_bn_optional_vector(bias, input, c, op, "bias");
  if (residual.has_value() && residual->defined()) check_bn_like(*residual, input, op, "residual");
  check_bn_eps(eps, op);
  return c;
}

// The backward ops' common arguments: those of apply, and grad_output like the input.
inline c10::SymInt check_bn_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& mean, const at::Tensor& var,
                                     const std::optional<at::Tensor>& weight,
                                     const std::optional<at::Tensor>& bias,
                                     const std::optional<at::Tensor>& residual, double eps,
                                     const char* op) {
  const c10::SymInt c = check_bn_apply(input, mean, var, weight, bias, residual, eps, op);
  check_bn_like(grad_output, input, op, "grad_output");
  return c;
}

// One value per channel cannot be normalized in training (torch's ValueError).
inline void check_bn_training_count(const at::Tensor& input, const char* op) {
  FC_CHECK_VALUE(bn_count(input) != 1, op,
                 "more than 1 value per channel when training, got input of shape ",
                 shape_str(input.sym_sizes()));
}

inline void check_bn_backward_sums(const std::optional<at::Tensor>& sum_dy,
                                   const std::optional<at::Tensor>& sum_dy_xmu,
                                   const at::Tensor& input, const c10::SymInt& c,
                                   const c10::SymInt& count, const char* op) {
  const bool has_dy = sum_dy.has_value() && sum_dy->defined();
  const bool has_xmu = sum_dy_xmu.has_value() && sum_dy_xmu->defined();
  FC_CHECK(has_dy == has_xmu, op, "sum_dy and sum_dy_xmu both given (training) or both None "
           "(eval), got ", has_dy ? "only sum_dy" : "only sum_dy_xmu");
  if (has_dy) {
    check_bn_vector(*sum_dy, input, c, op, "sum_dy");
    check_bn_vector(*sum_dy_xmu, input, c, op, "sum_dy_xmu");
  }
  FC_CHECK(count >= 0, op, "count >= 0, got ", count);
}

// Running buffers of C values (running_mean, running_var): 1-D of size c on `like`'s device,
// floating, of one dtype; momentum in [0, 1].
inline void check_bn_running(const at::Tensor& running_mean, const at::Tensor& running_var,
                             const at::Tensor& like, const c10::SymInt& c, double momentum,
                             const char* op) {
  check_bn_vector(running_mean, like, c, op, "running_mean");
  check_bn_vector(running_var, like, c, op, "running_var");
  FC_CHECK(running_mean.scalar_type() == running_var.scalar_type(), op,
           "running_mean and running_var of one dtype, got ", running_mean.scalar_type(), " and ",
           running_var.scalar_type());
  FC_CHECK(momentum >= 0.0 && momentum <= 1.0, op, "momentum in [0, 1], got ", momentum);
}

// _batch_norm_forward_train: input, optional affine vectors and residual, running buffers
// (both or neither), eps, count != 1.
inline c10::SymInt check_bn_forward_train(const at::Tensor& input,
                                          const std::optional<at::Tensor>& weight,
                                          const std::optional<at::Tensor>& bias,
                                          const std::optional<at::Tensor>& residual,
                                          const std::optional<at::Tensor>& running_mean,
                                          const std::optional<at::Tensor>& running_var,
                                          double momentum, double eps, const char* op) {
  const c10::SymInt c = check_bn_input(input, op);
  check_bn_optional_vector(weight, input, c, op, "weight");
  check_bn_optional_vector(bias, input, c, op, "bias");
  if (residual.has_value() && residual->defined()) check_bn_like(*residual, input, op, "residual");
  const bool has_rm = running_mean.has_value() && running_mean->defined();
  const bool has_rv = running_var.has_value() && running_var->defined();
  FC_CHECK(has_rm == has_rv, op, "running_mean and running_var both given or both None, got ",
           has_rm ? "only running_mean" : "only running_var");
  if (has_rm) check_bn_running(*running_mean, *running_var, input, c, momentum, op);
  check_bn_eps(eps, op);
  check_bn_training_count(input, op);
  return c;
}

// _batch_norm_update_stats: four per-channel vectors of one size on one device; running
// buffers float32/float64 of one dtype (or float16/bfloat16, as torch allows); momentum in
// [0, 1]; count >= 0.
inline void check_bn_update_stats(const at::Tensor& mean, const at::Tensor& var,
                                  const c10::SymInt& count, double momentum,
                                  const at::Tensor& running_mean, const at::Tensor& running_var) {
  const char* op = "_batch_norm_update_stats";
  FC_CHECK(mean.dim() == 1, op, "a 1-D mean, got shape ", shape_str(mean.sym_sizes()));
  const c10::SymInt c = mean.sym_size(0);
  check_bn_vector(mean, mean, c, op, "mean");
  check_bn_vector(var, mean, c, op, "var");
  check_bn_running(running_mean, running_var, mean, c, momentum, op);
  FC_CHECK(count >= 0, op, "count >= 0, got ", count);
}

}  // namespace fastconv
