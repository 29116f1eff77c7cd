// Bridging macros shared by the two builds of the CUDA kernels (see shared/SIMT.md section 2):
//   nvcc            csrc/cuda/<op>.cu      real launches on the current stream
//   g++ (emulated)  csrc/simt/<op>.cpp     -DSIMT_EMULATION, kernels run by csrc/simt/simt.h
// Kernels (cuda/kernels/*.cuh) and launch plans (cuda/launch/*.h) use only these macros, so both
// builds run the same grid, block and shared-memory sizes. Nothing here includes ATen.
//
//   FC_KERNEL_NS                 namespace of kernels and plans: fastconv::cuda (nvcc) or
//                                fastconv::simt (emulated); nvcc's host launch stubs and the
//                                emulated kernels would otherwise share mangled names.
//   FC_KERNEL(...)               protects template commas: FC_KERNEL(k<float, 4>)
//   FC_LAUNCH(k, grid, block, smem, stream, args...)
//                                nvcc: k<<<...>>>(args...) then C10_CUDA_KERNEL_LAUNCH_CHECK();
//                                emulated: simt::launch(k, grid, block, smem, args...)
//   FC_DYNAMIC_SHARED(T, name)   declares `T* name` pointing at the dynamic shared memory
//   launch_device()              the LaunchDevice plans size launches for (current GPU or the
//                                emulated target)
//   allow_dynamic_smem(k, bytes) the opt-in a kernel needs before a launch with more than
//                                48 KiB of dynamic shared memory
//   grid_first(), grid_step()    a kernel's grid-stride loop, in 64 bits
//   grid_stride_grid(work, threads, dev)
//                                the 1-D grid such a loop is launched with
// Asynchronous copies: cuda/launch/async_copy.h. Tensor cores: <mma.h> (nvcuda::wmma), which
// the emulated build resolves to csrc/simt/mma.h.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "common/macros.h"

#ifndef FC_KERNEL_NS
#ifdef SIMT_EMULATION
#define FC_KERNEL_NS simt
#else
#define FC_KERNEL_NS cuda
#endif
#endif

#define FC_KERNEL(...) __VA_ARGS__

#if defined(SIMT_EMULATION)
// The emulated launcher includes simt/simt.h before any kernel header (torch, simt, kernels).
// Launches are synchronous and the stream is ignored; errors are thrown by simt::launch.
#define FC_LAUNCH(k, grid, block, smem, stream, ...) \
  ::simt::launch(k, grid, block, smem, __VA_ARGS__)
#define FC_DYNAMIC_SHARED(T, name) T* name = ::simt::dynamic_shared<T>()
namespace fastconv {
using fc_stream_t = void*;
}  // namespace fastconv

#elif defined(__CUDACC__)
#include <c10/cuda/CUDAException.h>  // C10_CUDA_KERNEL_LAUNCH_CHECK (c10 only, no ATen)
#include <cuda_runtime.h>

// The check is part of the macro so that no launch in a plan can forget it.
#define FC_LAUNCH(k, grid, block, smem, stream, ...)  \
  do {                                                \
    k<<<grid, block, smem, stream>>>(__VA_ARGS__);    \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                   \
  } while (0)
// Raw bytes: typed `extern __shared__ T name[]` in two template instantiations with different T
// is a redeclaration error in nvcc.
#define FC_DYNAMIC_SHARED(T, name)                                         \
  extern __shared__ __align__(16) unsigned char fc_dynamic_shared_bytes[]; \
  T* name = reinterpret_cast<T*>(fc_dynamic_shared_bytes)
namespace fastconv {
using fc_stream_t = cudaStream_t;
}  // namespace fastconv

#else
#error "cuda/launch/launch.h is for nvcc or the emulated build (-DSIMT_EMULATION) only"
#endif

namespace fastconv {

// The device properties a launch plan may depend on. The nvcc launcher fills it from
// cudaDeviceProp, the emulated launcher from its table of the emulated target, so plans never
// query the runtime themselves.
struct LaunchDevice {
  int sm_count;            // cudaDeviceProp::multiProcessorCount
  int max_threads_per_sm;  // cudaDeviceProp::maxThreadsPerMultiProcessor
  // cudaDevAttrMaxSharedMemoryPerBlockOptin: the most dynamic shared memory a launch may use
  // after allow_dynamic_smem (the default is CUDA's 48 KiB without opt-in, for launchers that
  // fill only the first two fields).
  size_t smem_optin = kDefaultDynamicSmem;
  static constexpr size_t kDefaultDynamicSmem = 48 * 1024;
};

#if defined(SIMT_EMULATION)
inline LaunchDevice launch_device() {
  const ::simt::Target& t = *::simt::config().target;
  return {t.sm_count, t.max_threads_per_sm, t.smem_optin};
}

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), recorded
// per kernel by the emulator, whose launch validation then allows up to `bytes`.
template <typename... P>
void allow_dynamic_smem(void (*kernel)(P...), size_t bytes) {
  if (bytes > LaunchDevice::kDefaultDynamicSmem) ::simt::set_max_dynamic_shared_memory(kernel, bytes);
}
#else
inline LaunchDevice launch_device() {
  int device = 0, sm_count = 0, threads_per_sm = 0, optin = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(
      cudaDeviceGetAttribute(&threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return {sm_count, threads_per_sm, static_cast<size_t>(optin)};
}

// Kernels launched with more than 48 KiB of dynamic shared memory must opt in first; the
// attribute is per kernel (and per device), so call it before every such launch (cheap).
template <typename... P>
void allow_dynamic_smem(void (*kernel)(P...), size_t bytes) {
  if (bytes > LaunchDevice::kDefaultDynamicSmem)
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
}
#endif

}  // namespace fastconv

namespace fastconv {
namespace FC_KERNEL_NS {

// ---- grid-stride loops -------------------------------------------------------------------------
// The elementwise kernels of every family loop as
//   for (int64_t i = grid_first(); i < total; i += grid_step())
// in 64 bits (blockIdx.x * blockDim.x alone can overflow 32 bits), over a 1-D grid that covers
// the work but is capped at kGridWaves waves of fully resident blocks: the loop does the rest,
// which keeps gridDim.x far below 2^31 - 1 for any tensor size.
__device__ __forceinline__ int64_t grid_first() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_step() { return int64_t(gridDim.x) * blockDim.x; }

constexpr int64_t kGridWaves = 4;

// Blocks of `threads` threads in kGridWaves waves of fully resident blocks on `dev`.
inline int64_t resident_blocks(const LaunchDevice& dev, int64_t threads) {
  const int64_t per_sm = std::max<int64_t>(1, dev.max_threads_per_sm / threads);
  return std::max<int64_t>(1, int64_t(dev.sm_count) * per_sm * kGridWaves);
}

inline dim3 grid_stride_grid(int64_t work, int64_t threads, const LaunchDevice& dev) {
  const int64_t blocks = (work + threads - 1) / threads;
  return dim3(static_cast<unsigned>(
      std::max<int64_t>(1, std::min(blocks, resident_blocks(dev, threads)))));
}

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
