// Macros shared by every compiler that sees csrc/common: g++ (CPU kernels, emulated CUDA)
// and nvcc (CUDA kernels). Nothing here may include ATen.
#pragma once

#if defined(__CUDACC__) || defined(SIMT_EMULATION)
#define FC_HD __host__ __device__ __forceinline__
#else
#define FC_HD inline
#endif
