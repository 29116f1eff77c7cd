// Host side of the BatchNorm family's CUDA launchers, shared by the nvcc build
// (cuda/batch_norm.cu) and the emulated one (simt/batch_norm.cpp): validation (checks.h, same
// messages as CPU and Meta), layouts, allocation, dtype dispatch and launches through the plans
// of cuda/launch/batch_norm.h. Only the HostLaunch differs (device properties, stream, and how
// outputs are allocated: plain at::empty, or poisoned for the emulator).
//
// Layout: every activation-sized tensor is made contiguous in the input's memory format
// (bn_memory_format) and seen as (outer, C, inner); per-channel vectors are converted to
// contiguous compute-dtype tensors (C values: negligible next to the activations).
// _batch_norm_update_stats touches C values only and is written with ATen ops on the
// device (no kernel of its own).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "checks/batch_norm.h"
#include "cuda/host/launch.h"
#include "cuda/launch/batch_norm.h"

namespace fastconv {
namespace FC_KERNEL_NS {
namespace bn_host {

namespace kernels = ::fastconv::FC_KERNEL_NS;

using host::HostLaunch;  // cuda/host/launch.h

inline kernels::BnShape shape_of(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t inner = (n == 0 || c == 0) ? 1 : x.numel() / (n * c);
  if (x.dim() == 4 && x.suggest_memory_format() == at::MemoryFormat::ChannelsLast) {
    return {n * inner, c, 1};
  }
  return {n, c, inner};
}

// A per-channel vector as a contiguous compute-dtype tensor, or undefined.
inline at::Tensor channel_vector(const std::optional<at::Tensor>& t, at::ScalarType acc) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  return t->to(acc).contiguous();
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

inline void check_grid(const kernels::BnShape& s, const char* op) {
  FC_CHECK(s.inner == 1 || s.c <= kernels::kBnMaxGridY, op,
           "at most 65535 channels for NCHW input on CUDA, got ", s.c);
}

struct Activations {
  at::Tensor x, residual;
  at::MemoryFormat fmt;
  kernels::BnShape shape;
};

inline Activations activations(const at::Tensor& input, const std::optional<at::Tensor>& residual,
                               const char* op) {
  const auto fmt = bn_memory_format(input);
  Activations a{input.contiguous(fmt), at::Tensor(), fmt, {}};
  if (residual.has_value() && residual->defined()) a.residual = residual->contiguous(fmt);
  a.shape = shape_of(a.x);
  check_grid(a.shape, op);
  return a;
}

template <typename acc_t>
at::Tensor partials(const HostLaunch& l, const kernels::BnShape& s, const at::Tensor& like) {
  const int64_t n = kernels::bn_partials_size(s, l.device) * int64_t(sizeof(kernels::BnAcc<acc_t>));
  return l.empty({n}, like.options().dtype(at::kByte));
}

template <typename acc_t>
kernels::BnAcc<acc_t>* partials_ptr(at::Tensor& t) {
  return reinterpret_cast<kernels::BnAcc<acc_t>*>(t.mutable_data_ptr<uint8_t>());
}

#define FC_BN_CUDA_DISPATCH(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

// mean and var of a (non-empty) activation set, into fresh compute-dtype tensors.
inline std::tuple<at::Tensor, at::Tensor> batch_stats(const HostLaunch& l, const Activations& a) {
  const auto acc = bn_acc_dtype(a.x.scalar_type());
  at::Tensor mean = l.empty({a.shape.c}, a.x.options().dtype(acc));
  at::Tensor var = l.empty({a.shape.c}, a.x.options().dtype(acc));
  if (a.x.numel() == 0) {
    mean.zero_();
    var.zero_();
    return {mean, var};
  }
  FC_BN_CUDA_DISPATCH(a.x.scalar_type(), "fastconv::_batch_norm_stats", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor work = partials<acc_t>(l, a.shape, a.x);
    kernels::launch_bn_stats<scalar_t, acc_t>(
        a.shape, a.x.const_data_ptr<scalar_t>(), partials_ptr<acc_t>(work),
        mean.mutable_data_ptr<acc_t>(), var.mutable_data_ptr<acc_t>(), l.device, l.stream);
  });
  return {mean, var};
}

// [relu](bn(x) [+ residual]) with the given (compute-dtype) mean and var.
inline at::Tensor normalize(const HostLaunch& l, const Activations& a, const at::Tensor& mean,
                            const at::Tensor& var, const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& bias, double eps, bool relu) {
  at::Tensor y = l.empty(a.x.sizes(), a.x.options().memory_format(a.fmt));
  if (y.numel() == 0) return y;
  const auto acc = bn_acc_dtype(a.x.scalar_type());
  const at::Tensor m = mean.to(acc).contiguous(), v = var.to(acc).contiguous();
  const at::Tensor w = channel_vector(weight, acc), b = channel_vector(bias, acc);
  FC_BN_CUDA_DISPATCH(a.x.scalar_type(), "fastconv::batch_norm_apply", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor coef = l.empty({2 * a.shape.c}, a.x.options().dtype(acc));
    kernels::launch_bn_coefficients<acc_t>(
        m.const_data_ptr<acc_t>(), v.const_data_ptr<acc_t>(), ptr_or_null<acc_t>(w),
        ptr_or_null<acc_t>(b), nullptr, nullptr, 0, eps, a.shape.c, false,
        coef.mutable_data_ptr<acc_t>(), l.device, l.stream);
    kernels::launch_bn_apply<scalar_t, acc_t>(
        a.shape, a.x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(a.residual),
        y.mutable_data_ptr<scalar_t>(), coef.const_data_ptr<acc_t>(), relu, l.device, l.stream);
  });
  return y;
}

inline std::tuple<at::Tensor, at::Tensor> stats(const HostLaunch& l, const at::Tensor& input) {
  const char* op = "_batch_norm_stats";
  check_bn_input(input, op);
  return batch_stats(l, activations(input, std::nullopt, op));
}

// Running statistics: C values, ATen arithmetic in float64 on the buffers' device.
inline void update_running(const at::Tensor& mean, const at::Tensor& var, int64_t count,
                           double momentum, const at::Tensor& running_mean,
                           const at::Tensor& running_var) {
  if (count == 0) return;
  const double unbias = count > 1 ? double(count) / double(count - 1) : 1.0;
  const at::Tensor rm = running_mean.to(at::kDouble) * (1.0 - momentum) + mean.to(at::kDouble) * momentum;
  const at::Tensor rv = running_var.to(at::kDouble) * (1.0 - momentum) +
                        var.to(at::kDouble) * (unbias * momentum);
  running_mean.copy_(rm);
  running_var.copy_(rv);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_train(
    const HostLaunch& l, const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
    const std::optional<at::Tensor>& running_mean, const std::optional<at::Tensor>& running_var,
    double momentum, double eps, bool relu) {
  const char* op = "_batch_norm_forward_train";
  check_bn_forward_train(input, weight, bias, residual, running_mean, running_var, momentum, eps,
                         op);
  const Activations a = activations(input, residual, op);
  auto [mean, var] = batch_stats(l, a);
  if (running_mean.has_value() && running_mean->defined()) {
    update_running(mean, var, a.shape.outer * a.shape.inner, momentum, *running_mean,
                   *running_var);
  }
  return {normalize(l, a, mean, var, weight, bias, eps, relu), mean, var};
}

inline at::Tensor apply(const HostLaunch& l, const at::Tensor& input, const at::Tensor& mean,
                        const at::Tensor& var, const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& bias,
                        const std::optional<at::Tensor>& residual, double eps, bool relu) {
  const char* op = "batch_norm_apply";
  check_bn_apply(input, mean, var, weight, bias, residual, eps, op);
  return normalize(l, activations(input, residual, op), mean, var, weight, bias, eps, relu);
}

inline void update_stats(const at::Tensor& mean, const at::Tensor& var, const c10::SymInt& count_sym,
                         double momentum, const at::Tensor& running_mean,
                         const at::Tensor& running_var) {
  check_bn_update_stats(mean, var, count_sym, momentum, running_mean, running_var);
  update_running(mean, var, count_sym.expect_int(), momentum, running_mean, running_var);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_reduce(
    const HostLaunch& l, const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& mean, const at::Tensor& var, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    bool relu) {
  const char* op = "_batch_norm_backward_reduce";
  check_bn_apply(input, mean, var, weight, bias, residual, eps, op);
  check_bn_like(grad_output, input, op, "grad_output");
  const Activations a = activations(input, residual, op);
  const at::Tensor dy = grad_output.contiguous(a.fmt);
  const auto acc = bn_acc_dtype(input.scalar_type());
  const int64_t c = a.shape.c;
  const auto opts = input.options().dtype(acc);
  at::Tensor sum_dy = l.empty({c}, opts), sum_dy_xmu = l.empty({c}, opts);
  at::Tensor grad_weight = l.empty({c}, opts);
  const auto wdt = weight.has_value() && weight->defined() ? weight->scalar_type() : acc;
  if (a.x.numel() == 0) {
    sum_dy.zero_();
    sum_dy_xmu.zero_();
    return {sum_dy, sum_dy_xmu, grad_weight.zero_().to(wdt)};
  }
  const at::Tensor m = mean.to(acc).contiguous(), v = var.to(acc).contiguous();
  const at::Tensor w = channel_vector(weight, acc), b = channel_vector(bias, acc);
  FC_BN_CUDA_DISPATCH(input.scalar_type(), "fastconv::_batch_norm_backward_reduce", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor coef = l.empty({2 * c}, opts);
    kernels::launch_bn_coefficients<acc_t>(
        m.const_data_ptr<acc_t>(), v.const_data_ptr<acc_t>(), ptr_or_null<acc_t>(w),
        ptr_or_null<acc_t>(b), nullptr, nullptr, 0, eps, c, false, coef.mutable_data_ptr<acc_t>(),
        l.device, l.stream);
    at::Tensor work = partials<acc_t>(l, a.shape, a.x);
    kernels::launch_bn_backward_reduce<scalar_t, acc_t>(
        a.shape, dy.const_data_ptr<scalar_t>(), a.x.const_data_ptr<scalar_t>(),
        ptr_or_null<scalar_t>(a.residual), coef.const_data_ptr<acc_t>(), m.const_data_ptr<acc_t>(),
        v.const_data_ptr<acc_t>(), eps, relu, partials_ptr<acc_t>(work),
        sum_dy.mutable_data_ptr<acc_t>(), sum_dy_xmu.mutable_data_ptr<acc_t>(),
        grad_weight.mutable_data_ptr<acc_t>(), l.device, l.stream);
  });
  return {sum_dy, sum_dy_xmu, grad_weight.to(wdt)};
}

// grad_input and, with `grad_residual`, the residual's gradient (the masked grad_output).
inline std::tuple<at::Tensor, at::Tensor> backward_apply(
    const HostLaunch& l, const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& mean, const at::Tensor& var, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
    const std::optional<at::Tensor>& sum_dy, const std::optional<at::Tensor>& sum_dy_xmu,
    const c10::SymInt& count, double eps, bool relu, bool grad_residual, const char* op) {
  const c10::SymInt c_sym = check_bn_apply(input, mean, var, weight, bias, residual, eps, op);
  check_bn_like(grad_output, input, op, "grad_output");
  check_bn_backward_sums(sum_dy, sum_dy_xmu, input, c_sym, count, op);
  const Activations a = activations(input, residual, op);
  const at::Tensor dy = grad_output.contiguous(a.fmt);
  at::Tensor dx = l.empty(a.x.sizes(), a.x.options().memory_format(a.fmt));
  at::Tensor dres = grad_residual ? l.empty(a.x.sizes(), a.x.options().memory_format(a.fmt))
                                  : at::Tensor();
  if (dx.numel() == 0) return {dx, dres};
  const auto acc = bn_acc_dtype(input.scalar_type());
  const int64_t c = a.shape.c;
  const at::Tensor m = mean.to(acc).contiguous(), v = var.to(acc).contiguous();
  const at::Tensor w = channel_vector(weight, acc), b = channel_vector(bias, acc);
  const at::Tensor sd = channel_vector(sum_dy, acc), sx = channel_vector(sum_dy_xmu, acc);
  FC_BN_CUDA_DISPATCH(input.scalar_type(), "fastconv::_batch_norm_backward_apply", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor coef = l.empty({5 * c}, input.options().dtype(acc));
    kernels::launch_bn_coefficients<acc_t>(
        m.const_data_ptr<acc_t>(), v.const_data_ptr<acc_t>(), ptr_or_null<acc_t>(w),
        ptr_or_null<acc_t>(b), ptr_or_null<acc_t>(sd), ptr_or_null<acc_t>(sx), count.expect_int(),
        eps, c, true, coef.mutable_data_ptr<acc_t>(), l.device, l.stream);
    kernels::launch_bn_backward_apply<scalar_t, acc_t>(
        a.shape, dy.const_data_ptr<scalar_t>(), a.x.const_data_ptr<scalar_t>(),
        ptr_or_null<scalar_t>(a.residual), dx.mutable_data_ptr<scalar_t>(),
        grad_residual ? dres.mutable_data_ptr<scalar_t>() : nullptr, coef.const_data_ptr<acc_t>(),
        relu, l.device, l.stream);
  });
  return {dx, dres};
}

// The whole local backward (_batch_norm_backward): the reduce and the apply above, with
// count = numel / C.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const HostLaunch& l, const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& mean, const at::Tensor& var, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    bool relu, bool training, bool grad_residual) {
  const char* op = "_batch_norm_backward";
  check_bn_apply(input, mean, var, weight, bias, residual, eps, op);
  check_bn_like(grad_output, input, op, "grad_output");
  auto [sum_dy, sum_dy_xmu, grad_weight] =
      backward_reduce(l, grad_output, input, mean, var, weight, bias, residual, eps, relu);
  const std::optional<at::Tensor> sd = training ? std::optional<at::Tensor>(sum_dy) : std::nullopt;
  const std::optional<at::Tensor> sx =
      training ? std::optional<at::Tensor>(sum_dy_xmu) : std::nullopt;
  auto [grad_input, grad_res] = backward_apply(l, grad_output, input, mean, var, weight, bias,
                                               residual, sd, sx, bn_count(input), eps, relu,
                                               grad_residual, op);
  const auto bias_dtype =
      bias.has_value() && bias->defined() ? bias->scalar_type() : sum_dy.scalar_type();
  return {grad_input, grad_weight, sum_dy.to(bias_dtype),
          grad_residual ? grad_res : at::empty({0}, input.options())};
}

}  // namespace bn_host
}  // namespace FC_KERNEL_NS
}  // namespace fastconv
