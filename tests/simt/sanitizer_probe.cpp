// A standalone emulator program for tests/test_simt_sanitizers.py, built with g++
// -fsanitize=address,undefined (no torch: uninstrumented libraries only add noise). Mode 0 runs
// known-good kernels (barriers, shuffles, WMMA, cp.async, a trap that abandons a block and the
// reuse of its fiber stacks) and must stay silent; modes 1-3 are planted bugs the sanitizers
// must report: 1 an out-of-bounds global write, 2 a dynamic shared memory overrun, 3 signed
// overflow in index arithmetic.
#include <mma.h>

#include <cstdlib>
#include <vector>

#include "simt.h"

using namespace nvcuda;

__global__ void good(const float* x, float* out, __half* h, float* d, int n) {
  float* tile = simt::dynamic_shared<float>();
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  __pipeline_memcpy_async(&tile[threadIdx.x], &x[i < n ? i : 0], 4);
  __pipeline_commit();
  __pipeline_wait_prior(0);
  __syncthreads();
  float v = tile[(threadIdx.x + 1) % blockDim.x];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) atomicAdd(out, v);
  if (blockIdx.x == 0 && threadIdx.x < 32) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 1.0f);
    wmma::load_matrix_sync(fa, h, 16);
    wmma::load_matrix_sync(fb, h, 16);
    wmma::mma_sync(acc, fa, fb, acc);
    wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
  }
}

__global__ void trap_in_block_1() {
  __syncthreads();
  if (blockIdx.x == 1 && threadIdx.x == 3) __trap();
  __syncthreads();
}

__global__ void out_of_bounds_write(float* out, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i <= n) out[i] = 1.0f;  // planted: one past the end
}

__global__ void shared_overrun(float* out) {
  float* tile = simt::dynamic_shared<float>();  // blockDim.x floats
  tile[threadIdx.x + 1] = 1.0f;                  // planted: the last thread writes past it
  __syncthreads();
  out[threadIdx.x] = tile[threadIdx.x];
}

__global__ void index_overflow(float* out, int stride) {
  const int i = int(threadIdx.x) * stride;  // planted: overflows for large strides
  out[threadIdx.x] = float(i % 7);
}

int main(int argc, char** argv) {
  const int mode = argc > 1 ? std::atoi(argv[1]) : 0;
  const int n = 200;
  std::vector<float> x(n, 1.0f), out(n, 0.0f), d(256);
  alignas(32) static __half h[256];
  for (int i = 0; i < 256; ++i) h[i] = __float2half_rn(float(i % 3));
  simt::configure(simt::Order::Random, simt::Order::Random, 7, true, "sm_80");
  if (mode == 0) {
    for (int round = 0; round < 2; ++round) {
      out[0] = 0;
      simt::launch(good, dim3(4), dim3(64), 64 * sizeof(float), x.data(), out.data(), h,
                   d.data(), n);
      try {
        simt::launch(trap_in_block_1, dim3(3), dim3(64), 0);
        return 3;
      } catch (const simt::Error&) {
      }
    }
    std::printf("ok %g %g\n", out[0], d[0]);  // 4 blocks x 64 threads x 2 rounds?: see test
  } else if (mode == 1) {
    simt::launch(out_of_bounds_write, dim3(4), dim3(64), 0, out.data(), n);
  } else if (mode == 2) {
    simt::launch(shared_overrun, dim3(1), dim3(64), 64 * sizeof(float), out.data());
  } else if (mode == 3) {
    simt::launch(index_overflow, dim3(1), dim3(64), 0, out.data(), 0x7fffffff / 8);
  }
  std::printf("finished mode %d\n", mode);
  return 0;
}
