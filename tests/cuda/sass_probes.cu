// Kernels compiled by tests/test_sass.py with nvcc (not part of fastconv): they show that the
// SASS checks can fail and pass. `wmma_*` kernels use tensor cores (HMMA expected), `no_wmma`
// is the control without them, `cp_async_probe` goes through cuda/launch/async_copy.h (the
// real <cuda_pipeline_primitives.h> under nvcc: LDGSTS expected), and the launch bounds give
// tests/test_sass.py the maximum block size it reads back from the cubin (EIATTR_MAX_THREADS).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include "cuda/launch/async_copy.h"

using namespace nvcuda;

template <typename T>
__global__ void __launch_bounds__(64) wmma_probe(const T* a, const T* b, float* d) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(fa, a + 256 * (threadIdx.x / 32), 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(d + 256 * (threadIdx.x / 32), acc, 16, wmma::mem_row_major);
}
template __global__ void wmma_probe<__half>(const __half*, const __half*, float*);
template __global__ void wmma_probe<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, float*);

__global__ void __launch_bounds__(128) wmma_tf32_probe(const float* a, const float* b, float* d) {
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(fa, a, 8);
  wmma::load_matrix_sync(fb, b, 16);
  for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
  for (int i = 0; i < fb.num_elements; ++i) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
}

__global__ void __launch_bounds__(256) no_wmma(const float* a, float* d) {
  d[threadIdx.x] = a[threadIdx.x] * 2.0f;
}

__global__ void __launch_bounds__(256) cp_async_probe(const float4* src, float* out) {
  __shared__ float4 tile[256];
  __pipeline_memcpy_async(&tile[threadIdx.x], &src[blockIdx.x * 256 + threadIdx.x], 16);
  __pipeline_commit();
  __pipeline_wait_prior(0);
  __syncthreads();
  const float4 v = tile[255 - threadIdx.x];
  out[blockIdx.x * 256 + threadIdx.x] = v.x + v.y + v.z + v.w;
}
