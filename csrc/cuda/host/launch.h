// What a launcher hands the host code of a family (cuda/host/<family>.h), for both builds:
//   HostLaunch        the device properties the launch plans size grids for, the stream, and
//                     the allocator of outputs and workspaces the kernels fully overwrite;
//   nvcc              on_device(t, f): the device guard for t, then f(HostLaunch) with this
//                     device's properties (launch_device()), its current stream and at::empty;
//   emulated          emulated_launch(): the emulated target's properties and, where the CUDA
//                     launcher allocates with at::empty, outputs poisoned with NaN (floating
//                     types) or 0xFF bytes (integers), so that an element a kernel forgets to
//                     write shows up in tests; check_cpu() for the CPU tensors it runs on.
// Only c10/cuda headers in the nvcc build: ATen/cuda/CUDAContext.h pulls in cusparse.h,
// cublas_v2.h, ... which a bare toolkit (the nvcc-only /usr/local/cuda-13.0 here) does not
// ship. c10::cuda::getCurrentCUDAStream is the function at::cuda::getCurrentCUDAStream names.
#pragma once
#include <ATen/ATen.h>

#include <limits>

#include "checks.h"
#include "cuda/launch/launch.h"

#if !defined(SIMT_EMULATION)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace fastconv {
namespace FC_KERNEL_NS {
namespace host {

namespace kernels = ::fastconv::FC_KERNEL_NS;  // the kernels' and launch plans' namespace

struct HostLaunch {
  LaunchDevice device;
  fc_stream_t stream;
  at::Tensor (*empty)(at::IntArrayRef size, const at::TensorOptions& options);
};

#if defined(SIMT_EMULATION)
// at::empty (which honours the options' memory format, unlike at::full), poisoned.
inline at::Tensor poisoned_empty(at::IntArrayRef size, const at::TensorOptions& options) {
  at::Tensor t = at::empty(size, options);
  if (at::isFloatingType(t.scalar_type()))
    t.fill_(std::numeric_limits<double>::quiet_NaN());
  else
    t.fill_(-1);
  return t;
}

inline HostLaunch emulated_launch() { return {launch_device(), nullptr, poisoned_empty}; }

inline void check_cpu(const at::Tensor& t, const char* op, const char* name) {
  FC_CHECK(t.device().is_cpu(), op, name, " on the CPU for the emulated CUDA kernels, got ",
           t.device());
}
#else
inline at::Tensor plain_empty(at::IntArrayRef size, const at::TensorOptions& options) {
  return at::empty(size, options);
}

// Device guard first, then the shared host code with this device's properties and stream
// (launch_device() makes cheap host-side attribute lookups, unlike cudaGetDeviceProperties).
template <typename F>
auto on_device(const at::Tensor& t, F f) {
  c10::cuda::CUDAGuard guard(t.device());
  return f(HostLaunch{launch_device(), c10::cuda::getCurrentCUDAStream(), plain_empty});
}
#endif

}  // namespace host
}  // namespace FC_KERNEL_NS
}  // namespace fastconv
