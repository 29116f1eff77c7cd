// Launch plans of the max-pool family, shared by the nvcc launcher (cuda/max_pool2d.cu) and the
// emulated one (simt/max_pool2d.cpp): which kernel variant, grid and block, from the problem
// size and the device's properties. ATen-free; callers pass validated sizes and raw pointers to
// tensors that are contiguous in the stated layout, and handle empty tensors before calling.
//
// All kernels are memory-bound elementwise loops: 256-thread blocks, a 1-D grid covering the
// work but capped at a few waves of resident blocks (grid-stride loops do the rest, which
// keeps gridDim.x far below 2^31 - 1 for any tensor size).
#pragma once
#include <algorithm>
#include <cstdint>

#include "cuda/kernels/max_pool2d.cuh"
#include "cuda/launch/launch.h"

namespace fastconv {
namespace FC_KERNEL_NS {

inline dim3 pool_grid(int64_t work, const LaunchDevice& dev) {
  return grid_stride_grid(work, kPoolThreads, dev);
}

// Channels handled per thread by the NHWC kernels: up to 16 bytes and at most 4 (float 4,
// double 2, half/bf16 4: more would not pay, since the int64 indices dominate the traffic).
template <typename scalar_t>
constexpr int pool_vector_width() {
  return 16 / int(sizeof(scalar_t)) < 4 ? 16 / int(sizeof(scalar_t)) : 4;
}

template <typename T, int V>
inline bool pack_aligned(const T* p) {
  return reinterpret_cast<std::uintptr_t>(p) % pack_align<T, V>() == 0;
}

// The vector NHWC kernels need whole packs per pixel (c % V == 0) and aligned base pointers.
template <typename scalar_t>
inline bool pool_use_vector(int64_t c, const scalar_t* a, const scalar_t* b, const int64_t* idx) {
  constexpr int V = pool_vector_width<scalar_t>();
  return V > 1 && c % V == 0 && pack_aligned<scalar_t, V>(a) && pack_aligned<scalar_t, V>(b) &&
         pack_aligned<int64_t, V>(idx);
}

// ---- max_pool2d_with_indices ----------------------------------------------------------------
template <typename scalar_t, typename acc_t, int V>
void launch_max_pool2d_forward_nhwc(const Pool2dShape& s, const scalar_t* input,
                                    scalar_t* output, int64_t* indices, const LaunchDevice& dev,
                                    fc_stream_t stream) {
  const int64_t total = s.n * s.out_h * s.out_w * (s.c / V);
  FC_LAUNCH(FC_KERNEL(max_pool2d_forward_nhwc<scalar_t, acc_t, V>), pool_grid(total, dev),
            dim3(kPoolThreads), 0, stream, input, output, indices, s, total);
}

template <typename scalar_t, typename acc_t>
void launch_max_pool2d_forward(const Pool2dShape& s, bool channels_last, const scalar_t* input,
                               scalar_t* output, int64_t* indices, const LaunchDevice& dev,
                               fc_stream_t stream) {
  if (!channels_last) {
    const int64_t total = s.n * s.c * s.out_h * s.out_w;
    FC_LAUNCH(FC_KERNEL(max_pool2d_forward_nchw<scalar_t, acc_t>), pool_grid(total, dev),
              dim3(kPoolThreads), 0, stream, input, output, indices, s, total);
  } else if (pool_use_vector(s.c, input, output, indices)) {
    launch_max_pool2d_forward_nhwc<scalar_t, acc_t, pool_vector_width<scalar_t>()>(
        s, input, output, indices, dev, stream);
  } else {
    launch_max_pool2d_forward_nhwc<scalar_t, acc_t, 1>(s, input, output, indices, dev, stream);
  }
}

// ---- _max_pool2d_backward ---------------------------------------------------------------------
template <typename scalar_t, typename acc_t, int V>
void launch_max_pool2d_backward_nhwc(const Pool2dShape& s, const scalar_t* grad_output,
                                     const int64_t* indices, scalar_t* grad_input,
                                     const LaunchDevice& dev, fc_stream_t stream) {
  const int64_t total = s.n * s.h * s.w * (s.c / V);
  FC_LAUNCH(FC_KERNEL(max_pool2d_backward_nhwc<scalar_t, acc_t, V>), pool_grid(total, dev),
            dim3(kPoolThreads), 0, stream, grad_output, indices, grad_input, s, total);
}

template <typename scalar_t, typename acc_t>
void launch_max_pool2d_backward(const Pool2dShape& s, bool channels_last,
                                const scalar_t* grad_output, const int64_t* indices,
                                scalar_t* grad_input, const LaunchDevice& dev,
                                fc_stream_t stream) {
  if (!channels_last) {
    const int64_t total = s.n * s.c * s.h * s.w;
    FC_LAUNCH(FC_KERNEL(max_pool2d_backward_nchw<scalar_t, acc_t>), pool_grid(total, dev),
              dim3(kPoolThreads), 0, stream, grad_output, indices, grad_input, s, total);
  } else if (pool_use_vector(s.c, grad_output, static_cast<const scalar_t*>(grad_input),
                             indices)) {
    launch_max_pool2d_backward_nhwc<scalar_t, acc_t, pool_vector_width<scalar_t>()>(
        s, grad_output, indices, grad_input, dev, stream);
  } else {
    launch_max_pool2d_backward_nhwc<scalar_t, acc_t, 1>(s, grad_output, indices, grad_input, dev,
                                                        stream);
  }
}

// ---- max_unpool2d ---------------------------------------------------------------------------
// `n` images of shape (s.c, in_plane) -> (s.c, out_plane). first_bad: one device slot holding
// INT64_MAX; afterwards it holds the smallest logical position of an out-of-range index, if
// any (the launcher reads it back and raises).
template <typename scalar_t>
void launch_max_unpool2d(const UnpoolShape& s, int64_t n, bool channels_last,
                         const scalar_t* input, const int64_t* indices, scalar_t* output,
                         unsigned long long* first_bad, const LaunchDevice& dev,
                         fc_stream_t stream) {
  const int64_t out_total = n * s.c * s.out_plane;
  FC_LAUNCH(FC_KERNEL(fill_zero<scalar_t>), pool_grid(out_total, dev), dim3(kPoolThreads), 0,
            stream, output, out_total);
  const int64_t total = n * s.c * s.in_plane;
  if (channels_last) {
    FC_LAUNCH(FC_KERNEL(max_unpool2d_scatter<scalar_t, true>), pool_grid(total, dev),
              dim3(kPoolThreads), 0, stream, input, indices, output, s, total, first_bad);
  } else {
    FC_LAUNCH(FC_KERNEL(max_unpool2d_scatter<scalar_t, false>), pool_grid(total, dev),
              dim3(kPoolThreads), 0, stream, input, indices, output, s, total, first_bad);
  }
}

// ---- _max_unpool2d_backward -----------------------------------------------------------------
// grad_output: n images (s.c, out_plane); indices and out: n images (s.c, in_plane).
template <typename scalar_t>
void launch_max_unpool2d_backward(const UnpoolShape& s, int64_t n, bool channels_last,
                                  const scalar_t* grad_output, const int64_t* indices,
                                  scalar_t* out, unsigned long long* first_bad,
                                  const LaunchDevice& dev, fc_stream_t stream) {
  const int64_t total = n * s.c * s.in_plane;
  if (channels_last) {
    FC_LAUNCH(FC_KERNEL(max_unpool2d_gather<scalar_t, true>), pool_grid(total, dev),
              dim3(kPoolThreads), 0, stream, grad_output, indices, out, s, total, first_bad);
  } else {
    FC_LAUNCH(FC_KERNEL(max_unpool2d_gather<scalar_t, false>), pool_grid(total, dev),
              dim3(kPoolThreads), 0, stream, grad_output, indices, out, s, total, first_bad);
  }
}

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
