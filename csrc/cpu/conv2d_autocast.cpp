// Autocast for the convolution family (AutocastCPU and AutocastCUDA, registered here once for
// both): PyTorch puts conv2d and conv_transpose2d on its lower-precision list, so under
// torch.autocast fastconv's conv2d and _conv2d_input_grad (conv_transpose2d's forward) cast
// their floating operands to the autocast dtype of the moment and run with autocast off, as
// torch's do. The gradient ops are reached through autograd, which runs them in the dtype of
// the forward.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace fastconv {
namespace {

template <c10::DeviceType device>
at::Tensor conv2d_autocast(const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(device));
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastconv::conv2d", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                         const std::optional<at::Tensor>&, at::IntArrayRef,
                                         at::IntArrayRef, at::IntArrayRef, int64_t)>();
  const auto dtype = at::autocast::get_lower_precision_fp_from_device_type(device);
  return op.call(at::autocast::cached_cast(dtype, input, device),
                 at::autocast::cached_cast(dtype, weight, device),
                 at::autocast::cached_cast(dtype, bias, device), stride, padding, dilation,
                 groups);
}

template <c10::DeviceType device>
at::Tensor conv2d_input_grad_autocast(const at::Tensor& grad_output, const at::Tensor& weight,
                                      c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(device));
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastconv::_conv2d_input_grad", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                         c10::SymIntArrayRef, at::IntArrayRef, at::IntArrayRef,
                                         at::IntArrayRef, int64_t)>();
  const auto dtype = at::autocast::get_lower_precision_fp_from_device_type(device);
  return op.call(at::autocast::cached_cast(dtype, grad_output, device),
                 at::autocast::cached_cast(dtype, weight, device), input_size, stride, padding,
                 dilation, groups);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, AutocastCPU, m) {
  m.impl("conv2d", conv2d_autocast<c10::DeviceType::CPU>);
  m.impl("_conv2d_input_grad", conv2d_input_grad_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(fastconv, AutocastCUDA, m) {
  m.impl("conv2d", conv2d_autocast<c10::DeviceType::CUDA>);
  m.impl("_conv2d_input_grad", conv2d_input_grad_autocast<c10::DeviceType::CUDA>);
}

}  // namespace fastconv
