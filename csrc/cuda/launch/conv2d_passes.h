// The launches of the convolution family's passes (declared, with their arguments, in
// cuda/launch/conv2d.h): the kernel of each plan, instantiated for every storage type.
// The emulated launcher (simt/conv2d.cpp) includes this file and instantiates all passes
// implicitly; nvcc compiles each pass in its own translation unit (cuda/conv2d_forward.cu,
// conv2d_input_grad.cu, conv2d_weight_grad.cu: explicit instantiations through the
// FC_CONV2D_*_INSTANCE macros below), so that the build's jobs compile the 108 kernels side
// by side, and cuda/conv2d.cu (the ATen side) sees only the declarations.
#pragma once
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/launch/conv2d.h"

namespace fastconv {
namespace FC_KERNEL_NS {

template <class P, int V>
void launch_conv_gemm_v(const P& p, const ConvPlan& plan, fc_stream_t stream) {
  using T = typename P::scalar_t;
  if constexpr (std::is_same_v<T, typename P::acc_t>) {
    if (plan.core == ConvCore::Simt) {
      if (plan.large) {
        FC_LAUNCH(FC_KERNEL(conv_igemm_simt<P, SimtTileLarge, V, V>), plan.grid,
                  dim3(plan.threads), plan.smem, stream, p, plan.splits, plan.k_chunk);
      } else {
        FC_LAUNCH(FC_KERNEL(conv_igemm_simt<P, SimtTileSmall, V, V>), plan.grid,
                  dim3(plan.threads), plan.smem, stream, p, plan.splits, plan.k_chunk);
      }
      return;
    }
  }
  if constexpr (!std::is_same_v<T, double>) {
    if (plan.core == ConvCore::Wmma) {
      FC_LAUNCH(FC_KERNEL(conv_igemm_wmma<P, V, V>), plan.grid, dim3(plan.threads), plan.smem,
                stream, p, plan.splits, plan.k_chunk);
      return;
    }
  }
  throw std::runtime_error("fastconv::conv2d: no kernel for plan " + describe(plan));
}

template <class P>
void launch_conv_gemm(const P& p, const ConvPlan& plan, fc_stream_t stream) {
  constexpr int V = conv_vector_width<typename P::scalar_t>();
  if (plan.vec > 1) {
    launch_conv_gemm_v<P, V>(p, plan, stream);
  } else {
    launch_conv_gemm_v<P, 1>(p, plan, stream);
  }
}

template <typename T>
void launch_conv2d_forward(const ConvPlan& plan, const ConvGeometry& g, bool cl, const T* x,
                           const T* w, const T* bias, T* y, fc_stream_t stream) {
  if (plan.core == ConvCore::Depthwise) {
    FC_LAUNCH(FC_KERNEL(conv_depthwise_fwd<T>), plan.grid, dim3(plan.threads), 0, stream, x, w,
              bias, y, g, cl, int(g.n * g.k * g.p * g.q));
    return;
  }
  launch_conv_gemm(ConvFwdProblem<T>{x, w, bias, y, g, cl, int(g.c_per_group()),
                                   int(g.k_per_group())},
                   plan, stream);
}

template <typename T>
void launch_conv2d_input_grad(const ConvPlan& plan, const ConvGeometry& g, bool cl, const T* dy,
                              const T* w, T* dx, fc_stream_t stream) {
  if (plan.core == ConvCore::Depthwise) {
    FC_LAUNCH(FC_KERNEL(conv_depthwise_dgrad<T>), plan.grid, dim3(plan.threads), 0, stream, dy,
              w, dx, g, cl, int(g.n * g.c * g.h * g.w));
    return;
  }
  launch_conv_gemm(
      ConvDgradProblem<T>{dy, w, dx, g, cl, int(g.c_per_group()), int(g.k_per_group())}, plan,
      stream);
}

template <typename T>
void launch_conv2d_weight_grad(const ConvPlan& plan, const ConvGeometry& g, bool cl,
                               const T* dy, const T* x, typename ConvAcc<T>::type* ws, T* dw,
                               const LaunchDevice& dev, fc_stream_t stream) {
  using acc_t = typename ConvAcc<T>::type;
  launch_conv_gemm(
      ConvWgradProblem<T>{dy, x, ws, g, cl, int(g.c_per_group()), int(g.k_per_group())}, plan,
      stream);
  const int64_t total = g.k * g.c_per_group() * g.r * g.s;
  FC_LAUNCH(FC_KERNEL(conv_wgrad_reduce<T, acc_t>), grid_stride_grid(total, 256, dev), dim3(256),
            0, stream, ws, dw, total, plan.splits);
}

}  // namespace FC_KERNEL_NS
}  // namespace fastconv

// Explicit instantiations for storage type T, in namespace fastconv::FC_KERNEL_NS.
#define FC_CONV2D_FORWARD_INSTANCE(T)                                                       \
  template void launch_conv2d_forward<T>(const ConvPlan&, const ConvGeometry&, bool, const T*, \
                                         const T*, const T*, T*, fc_stream_t);
#define FC_CONV2D_INPUT_GRAD_INSTANCE(T)                                                   \
  template void launch_conv2d_input_grad<T>(const ConvPlan&, const ConvGeometry&, bool,      \
                                            const T*, const T*, T*, fc_stream_t);
#define FC_CONV2D_WEIGHT_GRAD_INSTANCE(T)                                                  \
  template void launch_conv2d_weight_grad<T>(const ConvPlan&, const ConvGeometry&, bool,     \
                                             const T*, const T*, typename ConvAcc<T>::type*, \
                                             T*, const LaunchDevice&, fc_stream_t);
