// Emulated CUDA launchers of the convolution family: the host code of the nvcc launcher
// (cuda/host/conv2d.h: validation, layouts, dtype dispatch, launch plans) on CPU tensors, with
// the device properties of the emulated target, run by csrc/simt. Outputs and workspaces start
// as NaN, so an element a kernel forgets to write shows up in tests.
//
// Test hooks, private to the tests (tests/test_conv2d_cuda.py):
//   _conv2d_plan_options(tile, splits, scalar)  overrides of the launch plan: tile 0 (auto),
//       1 (SIMT large), 2 (SIMT small); splits 0 (auto) or the weight gradient's split count;
//       scalar 1 turns the channels_last vector loads off. All zero restores the plan's choice.
//   _conv2d_last_plan() -> str  the plan of the last pass launched, e.g. "wgrad:wmma-v8 splits=2".
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>

#include "simt/simt.h"  // after torch, before anything that includes common/ (SIMT.md 2)
#include "schemas/conv.h"
#include "cuda/host/conv2d.h"
#include "cuda/launch/conv2d_passes.h"  // the kernels of all passes

namespace fastconv {
namespace {

namespace host = ::fastconv::FC_KERNEL_NS::host;
static_assert(std::is_same_v<host::kernels::ConvOptions, ::fastconv::simt::ConvOptions>,
              "the emulated build compiles kernels into fastconv::simt");

using host::check_cpu;  // cuda/host/launch.h
using host::emulated_launch;

at::Tensor conv2d_simt(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_cpu(input, "conv2d", "input");
  return host::conv2d(emulated_launch(), input, weight, bias, stride, padding, dilation,
                      groups);
}

at::Tensor conv2d_input_grad_simt(const at::Tensor& grad_output, const at::Tensor& weight,
                                  c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups) {
  check_cpu(grad_output, "_conv2d_input_grad", "grad_output");
  return host::conv2d_input_grad(emulated_launch(), grad_output, weight, input_size,
                                 stride, padding, dilation, groups);
}

at::Tensor conv2d_weight_grad_simt(const at::Tensor& grad_output, const at::Tensor& input,
                                   c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation,
                                   int64_t groups) {
  check_cpu(grad_output, "_conv2d_weight_grad", "grad_output");
  return host::conv2d_weight_grad(emulated_launch(), grad_output, input, weight_size,
                                  stride, padding, dilation, groups);
}

void conv2d_plan_options(int64_t tile, int64_t splits, int64_t scalar) {
  FC_CHECK(tile >= 0 && tile <= 2 && splits >= 0 && (scalar == 0 || scalar == 1),
           "_conv2d_plan_options", "tile in {0, 1, 2}, splits >= 0 and scalar in {0, 1}, got ",
           tile, ", ", splits, ", ", scalar);
  auto& o = host::conv_plan_overrides();
  o.force_tile = int(tile);
  o.force_splits = splits;
  o.force_scalar = int(scalar);
}

std::string conv2d_last_plan() { return host::conv_last_plan(); }

}  // namespace

// Same schemas as in the fastconv namespace (contracts in schemas/conv.cpp), plus the hooks.
TORCH_LIBRARY_FRAGMENT(fastconv_simt, m) {
  m.def(FC_SCHEMA_CONV2D);
  m.def(FC_SCHEMA_CONV2D_INPUT_GRAD);
  m.def(FC_SCHEMA_CONV2D_WEIGHT_GRAD);
  m.def("_conv2d_plan_options(int tile, int splits, int scalar) -> ()", &conv2d_plan_options);
  m.def("_conv2d_last_plan() -> str", &conv2d_last_plan);
}

TORCH_LIBRARY_IMPL(fastconv_simt, CPU, m) {
  m.impl("conv2d", conv2d_simt);
  m.impl("_conv2d_input_grad", conv2d_input_grad_simt);
  m.impl("_conv2d_weight_grad", conv2d_weight_grad_simt);
}

}  // namespace fastconv
