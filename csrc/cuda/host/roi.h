// Host side of the ROI family's CUDA launchers, shared by the nvcc build (cuda/roi_ops.cu)
// and the emulated one (simt/roi_ops.cpp): validation (checks/roi.h, plus the box values found
// by a kernel), layouts, allocation, dtype dispatch and launches. The HostLaunch (device
// properties, stream, allocator) is cuda/host/launch.h's.
//
// Layouts: the input (forward) is made contiguous in its suggested memory format, which the
// outputs keep; in the backward, grad_input takes the forward input's format (the
// channels_last argument) and grad_output and argmax are made contiguous in it (autograd
// hands over grad_output in the forward output's format, so this is normally no copy).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <limits>
#include <tuple>
#include <utility>

#include "checks/roi.h"
#include "cuda/host/launch.h"
#include "cuda/launch/roi.h"

namespace fastconv {
namespace FC_KERNEL_NS {
namespace host {

inline RoiShape roi_shape(const RoiGeometry& g, int64_t pooled_h, int64_t pooled_w,
                          int64_t sampling_ratio, bool aligned) {
  return {g.n.expect_int(), g.c.expect_int(), g.h.expect_int(), g.w.expect_int(),
          g.k.expect_int(), pooled_h, pooled_w, sampling_ratio, aligned};
}

// Runs the validation kernel on contiguous rois and raises, with the host's message for the
// first bad box, if it found one (reading the slot back synchronizes: the error must be raised
// here, before any kernel reads out of bounds).
inline void check_roi_values_on_device(const HostLaunch& launch, const at::Tensor& rois,
                                       int64_t n, const char* op) {
  const int64_t k = rois.size(0);
  if (k == 0) return;
  at::Tensor slot = at::full({1}, -1, rois.options().dtype(at::kLong));  // all bits set: none
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rois.scalar_type(),
                                  "fastconv::roi_validate", [&] {
    kernels::launch_roi_validate<scalar_t, at::opmath_type<scalar_t>>(
        rois.const_data_ptr<scalar_t>(), k, n,
        reinterpret_cast<unsigned long long*>(slot.mutable_data_ptr<int64_t>()), launch.device,
        launch.stream);
  });
  const int64_t bad = slot.item<int64_t>();
  if (bad == -1) return;
  const at::Tensor box = rois[bad].to(at::kCPU, at::kDouble).contiguous();
  check_roi_box_values(box.const_data_ptr<double>(), bad, n, op);
  TORCH_INTERNAL_ASSERT(false, "fastconv::", op, ": box ", bad, " failed on the device only");
}

// The boxes of each image in box order, for the gathers: order (K,) and begin (N + 1,) int64.
inline std::pair<at::Tensor, at::Tensor> boxes_by_image(const at::Tensor& rois, int64_t n) {
  const at::Tensor batch = rois.select(1, 0).to(at::kLong);
  auto [sorted, order] = batch.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor images = at::arange(n + 1, batch.options());
  at::Tensor begin = at::searchsorted(sorted, images);  // first box of each image (and the end)
  return {order.contiguous(), begin.contiguous()};
}

// What both backward gathers take once their arguments are validated: contiguous rois (values
// checked on the device), grad_input (when empty, nothing else is set), grad_output in
// grad_input's memory format, and the boxes of each image.
struct RoiBackwardOperands {
  at::Tensor rois, grad_input, grad_output, order, begin;
};

inline RoiBackwardOperands roi_backward_operands(const HostLaunch& launch,
                                                 const at::Tensor& grad_output,
                                                 const at::Tensor& rois, const RoiShape& s,
                                                 bool channels_last, const char* op) {
  RoiBackwardOperands b;
  b.rois = rois.contiguous();
  check_roi_values_on_device(launch, b.rois, s.n, op);
  const auto fmt = roi_memory_format(channels_last);
  b.grad_input = launch.empty({s.n, s.c, s.h, s.w}, grad_output.options().memory_format(fmt));
  if (b.grad_input.numel() == 0) return b;
  b.grad_output = grad_output.contiguous(fmt);
  std::tie(b.order, b.begin) = boxes_by_image(b.rois, s.n);
  return b;
}

inline at::Tensor roi_align(const HostLaunch& launch, const at::Tensor& input,
                            const at::Tensor& rois, double spatial_scale, int64_t pooled_h,
                            int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
  const RoiGeometry g =
      check_roi_align(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio);
  const RoiShape s = roi_shape(g, pooled_h, pooled_w, sampling_ratio, aligned);
  const at::Tensor r = rois.contiguous();
  check_roi_values_on_device(launch, r, s.n, "roi_align");
  const auto fmt = input.suggest_memory_format();
  at::Tensor output = launch.empty({s.k, s.c, pooled_h, pooled_w},
                                   input.options().memory_format(fmt));
  if (output.numel() == 0) return output;
  const at::Tensor x = input.contiguous(fmt);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "roi_align", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    kernels::launch_roi_align_forward<scalar_t, acc_t>(
        s, fmt == at::MemoryFormat::ChannelsLast, x.const_data_ptr<scalar_t>(),
        r.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(),
        static_cast<acc_t>(spatial_scale), launch.device, launch.stream);
  });
  return output;
}

inline at::Tensor roi_align_backward(const HostLaunch& launch, const at::Tensor& grad_output,
                                     const at::Tensor& rois, double spatial_scale,
                                     int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                                     bool aligned, c10::SymIntArrayRef input_size,
                                     bool channels_last) {
  const char* op = "_roi_align_backward";
  const RoiGeometry g = check_roi_backward(grad_output, rois, spatial_scale, pooled_h, pooled_w,
                                           input_size, op);
  const RoiShape s = roi_shape(g, pooled_h, pooled_w, sampling_ratio, aligned);
  const RoiBackwardOperands b =
      roi_backward_operands(launch, grad_output, rois, s, channels_last, op);
  if (b.grad_input.numel() == 0) return b.grad_input;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.grad_output.scalar_type(),
                                  "fastconv::roi_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    kernels::launch_roi_align_backward<scalar_t, acc_t>(
        s, channels_last, b.grad_output.const_data_ptr<scalar_t>(),
        b.rois.const_data_ptr<scalar_t>(), b.order.const_data_ptr<int64_t>(),
        b.begin.const_data_ptr<int64_t>(), b.grad_input.mutable_data_ptr<scalar_t>(),
        static_cast<acc_t>(spatial_scale), launch.device, launch.stream);
  });
  return b.grad_input;
}

inline std::tuple<at::Tensor, at::Tensor> roi_pool(const HostLaunch& launch,
                                                   const at::Tensor& input,
                                                   const at::Tensor& rois, double spatial_scale,
                                                   int64_t pooled_h, int64_t pooled_w) {
  const RoiGeometry g = check_roi_pool(input, rois, spatial_scale, pooled_h, pooled_w);
  const RoiShape s = roi_shape(g, pooled_h, pooled_w, 0, false);
  FC_CHECK(s.h * s.w <= std::numeric_limits<int32_t>::max(), "roi_pool",
           "feature maps of fewer than 2^31 pixels, got ", s.h, "x", s.w);
  const at::Tensor r = rois.contiguous();
  check_roi_values_on_device(launch, r, s.n, "roi_pool");
  const auto fmt = input.suggest_memory_format();
  const auto options = input.options().memory_format(fmt);
  at::Tensor output = launch.empty({s.k, s.c, pooled_h, pooled_w}, options);
  at::Tensor argmax = launch.empty({s.k, s.c, pooled_h, pooled_w}, options.dtype(at::kInt));
  if (output.numel() == 0) return {output, argmax};
  const at::Tensor x = input.contiguous(fmt);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "roi_pool", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    kernels::launch_roi_pool_forward<scalar_t, acc_t>(
        s, fmt == at::MemoryFormat::ChannelsLast, x.const_data_ptr<scalar_t>(),
        r.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(),
        argmax.mutable_data_ptr<int32_t>(), static_cast<acc_t>(spatial_scale), launch.device,
        launch.stream);
  });
  return {output, argmax};
}

inline at::Tensor roi_pool_backward(const HostLaunch& launch, const at::Tensor& grad_output,
                                    const at::Tensor& rois, const at::Tensor& argmax,
                                    double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                    c10::SymIntArrayRef input_size, bool channels_last) {
  const char* op = "_roi_pool_backward";
  const RoiGeometry g = check_roi_backward(grad_output, rois, spatial_scale, pooled_h, pooled_w,
                                           input_size, op);
  check_roi_argmax(argmax, grad_output, op);
  const RoiShape s = roi_shape(g, pooled_h, pooled_w, 0, false);
  const RoiBackwardOperands b =
      roi_backward_operands(launch, grad_output, rois, s, channels_last, op);
  if (b.grad_input.numel() == 0) return b.grad_input;
  const at::Tensor am = argmax.contiguous(roi_memory_format(channels_last));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, b.grad_output.scalar_type(),
                                  "fastconv::roi_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    kernels::launch_roi_pool_backward<scalar_t, acc_t>(
        s, channels_last, b.grad_output.const_data_ptr<scalar_t>(), am.const_data_ptr<int32_t>(),
        b.rois.const_data_ptr<scalar_t>(), b.order.const_data_ptr<int64_t>(),
        b.begin.const_data_ptr<int64_t>(), b.grad_input.mutable_data_ptr<scalar_t>(),
        static_cast<acc_t>(spatial_scale), launch.device, launch.stream);
  });
  return b.grad_input;
}

}  // namespace host
}  // namespace FC_KERNEL_NS
}  // namespace fastconv
