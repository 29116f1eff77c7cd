// CUDA implementations of the BatchNorm family (contracts: schemas/batch_norm.cpp): the device
// guard, this device's properties and stream, around the host code shared with the emulated
// launcher (cuda/host/batch_norm.h). Only c10/cuda headers (see cuda/host/launch.h).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/host/batch_norm.h"
#include "schemas/batch_norm.h"

namespace fastconv {
namespace {

namespace host = ::fastconv::FC_KERNEL_NS::bn_host;
using ::fastconv::FC_KERNEL_NS::host::on_device;  // cuda/host/launch.h

using OptTensor = std::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor> stats_cuda(const at::Tensor& input) {
  return on_device(input, [&](const host::HostLaunch& l) { return host::stats(l, input); });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_train_cuda(
    const at::Tensor& input, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, const OptTensor& running_mean, const OptTensor& running_var,
    double momentum, double eps, bool relu) {
  return on_device(input, [&](const auto& l) {
    return host::forward_train(l, input, weight, bias, residual, running_mean, running_var,
                               momentum, eps, relu);
  });
}

void update_stats_cuda(const at::Tensor& mean, const at::Tensor& var, c10::SymInt count,
                       double momentum, const at::Tensor& running_mean,
                       const at::Tensor& running_var) {
  c10::cuda::CUDAGuard guard(mean.device());
  host::update_stats(mean, var, count, momentum, running_mean, running_var);
}

at::Tensor apply_cuda(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& var,
                      const OptTensor& weight, const OptTensor& bias, const OptTensor& residual,
                      double eps, bool relu) {
  return on_device(input, [&](const host::HostLaunch& l) {
    return host::apply(l, input, mean, var, weight, bias, residual, eps, relu);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_reduce_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, double eps, bool relu) {
  return on_device(input, [&](const host::HostLaunch& l) {
    return host::backward_reduce(l, grad_output, input, mean, var, weight, bias, residual, eps,
                                 relu);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, double eps, bool relu, bool training, bool grad_residual) {
  return on_device(input, [&](const auto& l) {
    return host::backward(l, grad_output, input, mean, var, weight, bias, residual, eps, relu,
                          training, grad_residual);
  });
}

std::tuple<at::Tensor, at::Tensor> backward_apply_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, const OptTensor& sum_dy, const OptTensor& sum_dy_xmu,
    const c10::SymInt& count, double eps, bool relu, bool grad_residual, const char* op) {
  return on_device(input, [&](const auto& l) {
    return host::backward_apply(l, grad_output, input, mean, var, weight, bias, residual, sum_dy,
                                sum_dy_xmu, count, eps, relu, grad_residual, op);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CUDA, m) { FC_IMPL_BATCH_NORM_KERNELS(m, cuda); }

}  // namespace fastconv
