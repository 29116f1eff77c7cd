// Launch plans of the ROI family, shared by the nvcc launcher (cuda/roi_ops.cu) and the
// emulated one (simt/roi_ops.cpp). ATen-free; callers pass validated sizes and raw pointers to
// tensors contiguous in the stated layouts, and skip empty problems.
//
// Every kernel is one thread per element with a grid-stride loop: 256-thread blocks, a 1-D grid
// covering the work, capped at a few waves of resident blocks.
#pragma once
#include <algorithm>
#include <cstdint>

#include "cuda/kernels/roi.cuh"
#include "cuda/launch/launch.h"

namespace fastconv {
namespace FC_KERNEL_NS {

inline dim3 roi_grid(int64_t work, const LaunchDevice& dev) {
  return grid_stride_grid(work, kRoiThreads, dev);
}

template <typename scalar_t, typename acc_t>
void launch_roi_validate(const scalar_t* rois, int64_t k, int64_t n,
                         unsigned long long* first_bad, const LaunchDevice& dev,
                         fc_stream_t stream) {
  FC_LAUNCH(FC_KERNEL(roi_validate<scalar_t, acc_t>), roi_grid(k, dev), dim3(kRoiThreads), 0,
            stream, rois, k, n, first_bad);
}

template <typename scalar_t, typename acc_t>
void launch_roi_align_forward(const RoiShape& s, bool channels_last, const scalar_t* input,
                              const scalar_t* rois, scalar_t* output, acc_t spatial_scale,
                              const LaunchDevice& dev, fc_stream_t stream) {
  const int64_t total = s.k * s.c * s.pooled_h * s.pooled_w;
  if (channels_last) {
    FC_LAUNCH(FC_KERNEL(roi_align_forward<scalar_t, acc_t, true>), roi_grid(total, dev),
              dim3(kRoiThreads), 0, stream, input, rois, output, s, spatial_scale, total);
  } else {
    FC_LAUNCH(FC_KERNEL(roi_align_forward<scalar_t, acc_t, false>), roi_grid(total, dev),
              dim3(kRoiThreads), 0, stream, input, rois, output, s, spatial_scale, total);
  }
}

// order/begin: the boxes of image n are order[begin[n] .. begin[n + 1]); grad_output (and
// argmax) in grad_input's layout.
template <typename scalar_t, typename acc_t>
void launch_roi_align_backward(const RoiShape& s, bool channels_last,
                               const scalar_t* grad_output, const scalar_t* rois,
                               const int64_t* order, const int64_t* begin,
                               scalar_t* grad_input, acc_t spatial_scale,
                               const LaunchDevice& dev, fc_stream_t stream) {
  const int64_t total = s.n * s.c * s.h * s.w;
  if (channels_last) {
    FC_LAUNCH(FC_KERNEL(roi_align_backward_gather<scalar_t, acc_t, true>), roi_grid(total, dev),
              dim3(kRoiThreads), 0, stream, grad_output, rois, order, begin, grad_input, s,
              spatial_scale, total);
  } else {
    FC_LAUNCH(FC_KERNEL(roi_align_backward_gather<scalar_t, acc_t, false>),
              roi_grid(total, dev), dim3(kRoiThreads), 0, stream, grad_output, rois, order,
              begin, grad_input, s, spatial_scale, total);
  }
}

template <typename scalar_t, typename acc_t>
void launch_roi_pool_forward(const RoiShape& s, bool channels_last, const scalar_t* input,
                             const scalar_t* rois, scalar_t* output, int32_t* argmax,
                             acc_t spatial_scale, const LaunchDevice& dev, fc_stream_t stream) {
  const int64_t total = s.k * s.c * s.pooled_h * s.pooled_w;
  if (channels_last) {
    FC_LAUNCH(FC_KERNEL(roi_pool_forward<scalar_t, acc_t, true>), roi_grid(total, dev),
              dim3(kRoiThreads), 0, stream, input, rois, output, argmax, s, spatial_scale, total);
  } else {
    FC_LAUNCH(FC_KERNEL(roi_pool_forward<scalar_t, acc_t, false>), roi_grid(total, dev),
              dim3(kRoiThreads), 0, stream, input, rois, output, argmax, s, spatial_scale, total);
  }
}

template <typename scalar_t, typename acc_t>
void launch_roi_pool_backward(const RoiShape& s, bool channels_last, const scalar_t* grad_output,
                              const int32_t* argmax, const scalar_t* rois,
                              const int64_t* order, const int64_t* begin, scalar_t* grad_input,
                              acc_t spatial_scale, const LaunchDevice& dev, fc_stream_t stream) {
  const int64_t total = s.n * s.c * s.h * s.w;
  if (channels_last) {
    FC_LAUNCH(FC_KERNEL(roi_pool_backward_gather<scalar_t, acc_t, true>), roi_grid(total, dev),
              dim3(kRoiThreads), 0, stream, grad_output, argmax, rois, order, begin, grad_input,
              s, spatial_scale, total);
  } else {
    FC_LAUNCH(FC_KERNEL(roi_pool_backward_gather<scalar_t, acc_t, false>), roi_grid(total, dev),
              dim3(kRoiThreads), 0, stream, grad_output, argmax, rois, order, begin, grad_input,
              s, spatial_scale, total);
  }
}

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
