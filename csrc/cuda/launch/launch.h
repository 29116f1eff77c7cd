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
#pragma once
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
};

}  // namespace fastconv
