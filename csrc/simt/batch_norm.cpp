// Emulated CUDA launchers of the BatchNorm family: the host code of the nvcc launcher
// (cuda/host/batch_norm.h: validation, layouts, dtype dispatch, launch plans) on CPU tensors,
// with the device properties of the emulated target, run by csrc/simt. Outputs and workspaces
// start poisoned (NaN / 0xFF bytes), so an element a kernel forgets to write shows up in tests.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <limits>

#include "simt/simt.h"  // after torch, before anything that includes common/ (SIMT.md 2)
#include "checks/batch_norm.h"
#include "schemas/batch_norm.h"
#include "cuda/host/batch_norm.h"

namespace fastconv {
namespace {

namespace host = ::fastconv::FC_KERNEL_NS::bn_host;
using OptTensor = std::optional<at::Tensor>;

using ::fastconv::FC_KERNEL_NS::host::emulated_launch;  // cuda/host/launch.h

void check_cpu(const at::Tensor& t, const char* op) {
  ::fastconv::FC_KERNEL_NS::host::check_cpu(t, op, "input");
}

std::tuple<at::Tensor, at::Tensor> stats_simt(const at::Tensor& input) {
  check_cpu(input, "_batch_norm_stats");
  return host::stats(emulated_launch(), input);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_train_simt(
    const at::Tensor& input, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, const OptTensor& running_mean, const OptTensor& running_var,
    double momentum, double eps, bool relu) {
  check_cpu(input, "_batch_norm_forward_train");
  return host::forward_train(emulated_launch(), input, weight, bias, residual, running_mean,
                             running_var, momentum, eps, relu);
}

void update_stats_simt(const at::Tensor& mean, const at::Tensor& var, c10::SymInt count,
                       double momentum, const at::Tensor& running_mean,
                       const at::Tensor& running_var) {
  check_cpu(mean, "_batch_norm_update_stats");
  host::update_stats(mean, var, count, momentum, running_mean, running_var);
}

at::Tensor apply_simt(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& var,
                      const OptTensor& weight, const OptTensor& bias, const OptTensor& residual,
                      double eps, bool relu) {
  check_cpu(input, "batch_norm_apply");
  return host::apply(emulated_launch(), input, mean, var, weight, bias, residual, eps, relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_reduce_simt(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, double eps, bool relu) {
  check_cpu(input, "_batch_norm_backward_reduce");
  return host::backward_reduce(emulated_launch(), grad_output, input, mean, var, weight, bias,
                               residual, eps, relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_simt(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, double eps, bool relu, bool training, bool grad_residual) {
  check_cpu(input, "_batch_norm_backward");
  return host::backward(emulated_launch(), grad_output, input, mean, var, weight, bias, residual,
                        eps, relu, training, grad_residual);
}

std::tuple<at::Tensor, at::Tensor> backward_apply_simt(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, const OptTensor& sum_dy, const OptTensor& sum_dy_xmu,
    const c10::SymInt& count, double eps, bool relu, bool grad_residual, const char* op) {
  check_cpu(input, op);
  return host::backward_apply(emulated_launch(), grad_output, input, mean, var, weight, bias,
                              residual, sum_dy, sum_dy_xmu, count, eps, relu, grad_residual, op);
}

}  // namespace

// Same schemas as in the fastconv namespace (contracts in schemas/batch_norm.cpp).
TORCH_LIBRARY_FRAGMENT(fastconv_simt, m) { FC_DEFINE_BATCH_NORM_SCHEMAS(m); }

TORCH_LIBRARY_IMPL(fastconv_simt, CPU, m) { FC_IMPL_BATCH_NORM_KERNELS(m, simt); }

}  // namespace fastconv
