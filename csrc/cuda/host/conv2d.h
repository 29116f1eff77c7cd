// Host side of the convolution family's CUDA launchers, shared by the nvcc build
// (cuda/conv2d.cu) and the emulated one (simt/conv2d.cpp), so both validate, lay out,
// allocate, plan and launch identically; only the HostLaunch differs (device properties,
// stream, and how outputs are allocated: at::empty, or poisoned for the emulator).
// Validation comes from checks/conv.h (the messages of the CPU and Meta kernels), output
// shapes and memory formats match meta/conv2d.cpp, the plans are in cuda/launch/conv2d.h.
//
// Layout: the activations of one call are made contiguous in one memory format (NCHW or
// channels_last, conv_memory_format) and the weight in the same one, so the kernels' reduction
// order (c, r, s) or (r, s, c) walks both with unit stride; 3-D (C, H, W) tensors are viewed
// as N = 1 and the outputs returned 3-D.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <climits>
#include <string>
#include <vector>

#include "checks/conv.h"
#include "cuda/host/launch.h"
#include "cuda/launch/conv2d.h"

namespace fastconv {
namespace FC_KERNEL_NS {
namespace host {

// Test hooks (fastconv_simt::_conv2d_plan_options / _conv2d_last_plan): plan overrides, and
// the description of the plan of the last pass launched, e.g. "fwd:simt-large-v4".
inline ConvOptions& conv_plan_overrides() {
  static ConvOptions options;
  return options;
}
inline std::string& conv_last_plan() {
  static std::string plan;
  return plan;
}

template <typename T>
struct CudaStorage {
  using type = T;
};
template <>
struct CudaStorage<c10::Half> {
  using type = __half;
};
template <>
struct CudaStorage<c10::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename S>
const typename CudaStorage<S>::type* cuda_ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const typename CudaStorage<S>::type*>(t.const_data_ptr<S>())
                     : nullptr;
}
template <typename S>
typename CudaStorage<S>::type* cuda_mutable_ptr(const at::Tensor& t) {
  return reinterpret_cast<typename CudaStorage<S>::type*>(t.mutable_data_ptr<S>());
}

inline bool aligned16(const at::Tensor& t) {
  return reinterpret_cast<std::uintptr_t>(t.const_data_ptr()) % 16 == 0;
}

inline at::Tensor conv_batched(const at::Tensor& t) { return t.dim() == 3 ? t.unsqueeze(0) : t; }

// The kernels decode pixel, channel and tap indices in 32 bits.
inline void check_int_range(const ConvGeometry& g, const char* op) {
  const int64_t taps = std::max(g.c_per_group(), g.k_per_group()) * g.r * g.s;
  FC_CHECK(taps <= INT_MAX && g.n * g.h * g.w <= INT_MAX && g.n * g.p * g.q <= INT_MAX, op,
           "channels x kernel taps and batch x spatial sizes below 2^31 on CUDA, got N=", g.n,
           " C=", g.c, " K=", g.k, " R=", g.r, " S=", g.s, " H=", g.h, " W=", g.w);
}

inline ConvOptions plan_options() {
  ConvOptions o = conv_plan_overrides();
  o.tf32 = at::globalContext().allowTF32CuDNN(at::Float32Op::CONV);
  return o;
}

template <typename T>
ConvPlan make_plan(ConvPass pass, const ConvGeometry& g, bool cl, bool aligned,
                   const HostLaunch& l) {
  const ConvPlan plan = plan_conv<T>(pass, g, cl, aligned, plan_options(), l.device);
  conv_last_plan() = describe(plan);
  return plan;
}

inline at::Tensor conv2d(const HostLaunch& l, const at::Tensor& input,
                         const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         at::IntArrayRef stride, at::IntArrayRef padding,
                         at::IntArrayRef dilation, int64_t groups) {
  const char* op = "conv2d";
  const ConvGeometry g =
      check_conv2d(input, weight, bias, stride, padding, dilation, groups).to_int();
  check_int_range(g, op);
  const auto fmt = conv_memory_format(input, weight);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor x = conv_batched(input).contiguous(fmt);
  const at::Tensor w = weight.contiguous(fmt);
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  at::Tensor out = l.empty({g.n, g.k, g.p, g.q}, input.options().memory_format(fmt));
  if (out.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                    "fastconv::conv2d", [&] {
      using T = typename CudaStorage<scalar_t>::type;
      const ConvPlan plan = make_plan<T>(ConvPass::Forward, g, cl, aligned16(x) && aligned16(w), l);
      kernels::launch_conv2d_forward<T>(plan, g, cl, cuda_ptr<scalar_t>(x),
                                        cuda_ptr<scalar_t>(w), cuda_ptr<scalar_t>(b),
                                        cuda_mutable_ptr<scalar_t>(out), l.stream);
    });
  }
  return input.dim() == 3 ? out.squeeze(0) : out;
}

inline at::Tensor conv2d_input_grad(const HostLaunch& l, const at::Tensor& grad_output,
                                    const at::Tensor& weight, c10::SymIntArrayRef input_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, int64_t groups) {
  const char* op = "_conv2d_input_grad";
  const ConvGeometry g = check_conv2d_input_grad(grad_output, weight, input_size, stride,
                                                 padding, dilation, groups)
                             .to_int();
  check_int_range(g, op);
  const auto fmt = conv_memory_format(grad_output, weight);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor dy = conv_batched(grad_output).contiguous(fmt);
  const at::Tensor w = weight.contiguous(fmt);
  at::Tensor dx = l.empty({g.n, g.c, g.h, g.w}, grad_output.options().memory_format(fmt));
  if (dx.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(),
                                    "fastconv::_conv2d_input_grad", [&] {
      using T = typename CudaStorage<scalar_t>::type;
      const ConvPlan plan =
          make_plan<T>(ConvPass::InputGrad, g, cl, aligned16(dy) && aligned16(w), l);
      kernels::launch_conv2d_input_grad<T>(plan, g, cl, cuda_ptr<scalar_t>(dy),
                                           cuda_ptr<scalar_t>(w), cuda_mutable_ptr<scalar_t>(dx),
                                           l.stream);
    });
  }
  return input_size.size() == 3 ? dx.squeeze(0) : dx;
}

inline at::Tensor conv2d_weight_grad(const HostLaunch& l, const at::Tensor& grad_output,
                                     const at::Tensor& input, c10::SymIntArrayRef weight_size,
                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups) {
  const char* op = "_conv2d_weight_grad";
  const ConvGeometry g = check_conv2d_weight_grad(grad_output, input, weight_size, stride,
                                                  padding, dilation, groups)
                             .to_int();
  check_int_range(g, op);
  const auto fmt = conv_memory_format(input, grad_output);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor dy = conv_batched(grad_output).contiguous(fmt);
  const at::Tensor x = conv_batched(input).contiguous(fmt);
  at::Tensor dw = l.empty({g.k, g.c_per_group(), g.r, g.s},
                          input.options().memory_format(conv_weight_grad_format(weight_size, fmt)));
  if (dw.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                    "fastconv::_conv2d_weight_grad", [&] {
      using T = typename CudaStorage<scalar_t>::type;
      using acc_t = typename ConvAcc<T>::type;
      const ConvPlan plan =
          make_plan<T>(ConvPass::WeightGrad, g, cl, aligned16(dy) && aligned16(x), l);
      const at::Tensor ws = l.empty({plan.splits * dw.numel()},
                                    input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
      kernels::launch_conv2d_weight_grad<T>(plan, g, cl, cuda_ptr<scalar_t>(dy),
                                            cuda_ptr<scalar_t>(x), ws.mutable_data_ptr<acc_t>(),
                                            cuda_mutable_ptr<scalar_t>(dw), l.device, l.stream);
    });
  }
  return dw;
}

}  // namespace host
}  // namespace FC_KERNEL_NS
}  // namespace fastconv
