// Emulated CUDA launchers of the max-pool family: the host code of the nvcc launcher
// (cuda/host/max_pool2d.h: validation, layouts, dtype dispatch, launch plans) on CPU tensors,
// with the device properties of the emulated target (simt::config().target), run by csrc/simt.
// Where the CUDA launcher allocates with at::empty, outputs here start as NaN (floating point)
// or all-ones bytes (integers), so an element a kernel forgets to write shows up in tests.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <limits>

#include "simt/simt.h"  // after torch, before anything that includes common/ (SIMT.md 2)
#include "checks/pool.h"
#include "schemas/pool.h"
#include "cuda/host/max_pool2d.h"

namespace fastconv {
namespace {

namespace host = ::fastconv::FC_KERNEL_NS::host;
static_assert(std::is_same_v<host::kernels::Pool2dShape, ::fastconv::simt::Pool2dShape>,
              "the emulated build compiles kernels into fastconv::simt");

using host::check_cpu;  // cuda/host/launch.h
using host::emulated_launch;

std::tuple<at::Tensor, at::Tensor> max_pool2d_with_indices_simt(
    const at::Tensor& input, at::IntArrayRef kernel, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  check_cpu(input, "max_pool2d_with_indices", "input");
  return host::max_pool2d_with_indices(emulated_launch(), input, kernel, stride, padding,
                                       dilation, ceil_mode);
}

at::Tensor max_pool2d_backward_simt(const at::Tensor& grad_output, const at::Tensor& indices,
                                    c10::SymIntArrayRef input_size, at::IntArrayRef kernel,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, bool ceil_mode) {
  check_cpu(grad_output, "_max_pool2d_backward", "grad_output");
  return host::max_pool2d_backward(emulated_launch(), grad_output, indices, input_size, kernel,
                                   stride, padding, dilation, ceil_mode);
}

at::Tensor max_unpool2d_simt(const at::Tensor& input, const at::Tensor& indices,
                             c10::SymIntArrayRef output_size) {
  check_cpu(input, "max_unpool2d", "input");
  return host::max_unpool2d(emulated_launch(), input, indices, output_size);
}

at::Tensor max_unpool2d_backward_simt(const at::Tensor& grad_output, const at::Tensor& indices) {
  check_cpu(grad_output, "_max_unpool2d_backward", "grad_output");
  return host::max_unpool2d_backward(emulated_launch(), grad_output, indices);
}

}  // namespace

// Same schemas as in the fastconv namespace (contracts in schemas/pool.cpp).
TORCH_LIBRARY_FRAGMENT(fastconv_simt, m) {
  m.def(FC_SCHEMA_MAX_POOL2D_WITH_INDICES);
  m.def(FC_SCHEMA_MAX_POOL2D_BACKWARD);
  m.def(FC_SCHEMA_MAX_UNPOOL2D);
  m.def(FC_SCHEMA_MAX_UNPOOL2D_BACKWARD);
}

TORCH_LIBRARY_IMPL(fastconv_simt, CPU, m) {
  m.impl("max_pool2d_with_indices", max_pool2d_with_indices_simt);
  m.impl("_max_pool2d_backward", max_pool2d_backward_simt);
  m.impl("max_unpool2d", max_unpool2d_simt);
  m.impl("_max_unpool2d_backward", max_unpool2d_backward_simt);
}

}  // namespace fastconv
