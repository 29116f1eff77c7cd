// Implicit-GEMM convolution on tensor cores through nvcuda::wmma: fp16 and bf16 (m16n16k16)
// and fp32 as TF32 (m16n16k8), fp32 accumulation, the same problems and panel gathers as the
// SIMT core (conv2d_problems.cuh, ConvPanel in conv2d_igemm.cuh). Device code only (SIMT.md).
//
// Block tile 64x64 with BK = 16, four warps in 2x2, each warp 32x32 = 2x2 accumulator
// fragments, two shared-memory buffers per panel. Two pipelines:
// - channels_last vector panels (16-byte accesses): asynchronous copies (cp.async through the
//   <cuda_pipeline_primitives.h> API) straight into shared memory, stage t + 1 in flight while
//   the tensor cores consume stage t. A panel is stored [row][k] when its accesses run along
//   the reduction and [k][row] when they run along M or N, so every access lands as 16
//   contiguous bytes; the wmma layouts follow (A row/col-major, B col/row-major).
// - scalar gathers: stored [row][k], staged through registers like the SIMT core.
// The accumulators go through shared memory (fp32, row-major) to the problem's epilogue, so
// each output element is written by one thread with coalesced channels_last stores.
#pragma once
#include <mma.h>  // the emulated build gets csrc/simt/mma.h

#include <cstdint>

#include "cuda/kernels/conv2d_igemm.cuh"

namespace fastconv {
namespace FC_KERNEL_NS {

// Fragment element type and depth per storage type (fp32 runs as TF32).
template <typename T>
struct WmmaFrag;
template <>
struct WmmaFrag<__half> {
  using type = __half;
  static constexpr int K = 16;
};
template <>
struct WmmaFrag<__nv_bfloat16> {
  using type = __nv_bfloat16;
  static constexpr int K = 16;
};
template <>
struct WmmaFrag<float> {
  using type = nvcuda::wmma::precision::tf32;
  static constexpr int K = 8;
};

struct WmmaTile {
  static constexpr int BM = 64, BN = 64, BK = 16, kThreads = 128;
  // Leading dimensions: multiples of 8 elements (16-bit) and of 4 (32-bit) as wmma requires,
  // and rows 16 apart stay 32-byte aligned; the padding spreads the panel stores over banks.
  static constexpr int kLd = BK + 8;   // [row][k] panels
  static constexpr int kLdT = BM + 8;  // [k][row] panels
  static constexpr int kLdC = BN + 4;
  static_assert(BM == BN && BM * kLd >= BK * kLdT, "one buffer size fits both panel layouts");
  template <typename T>
  static constexpr int smem_bytes() {
    const int panels = 2 * (BM + BN) * kLd * int(sizeof(T));
    const int staging = BM * kLdC * int(sizeof(float));
    return (panels > staging ? panels : staging) + 32;  // + 32: the 256-bit alignment below
  }
};

template <class P, int VA, int VB>
__global__ void __launch_bounds__(WmmaTile::kThreads)
    conv_igemm_wmma(P p, int64_t splits, int64_t k_chunk) {
  namespace wmma = nvcuda::wmma;
  using T = typename P::scalar_t;
  using F = WmmaFrag<T>;
  constexpr int BM = WmmaTile::BM, BN = WmmaTile::BN, BK = WmmaTile::BK;
  constexpr int kLd = WmmaTile::kLd, kLdC = WmmaTile::kLdC, kThreads = WmmaTile::kThreads;
  constexpr int kLdT = WmmaTile::kLdT, kBuf = BM * kLd;  // elements per panel buffer
  // [row][k] (true) or [k][row] panels: see the file comment
  constexpr bool kAsync = VA > 1 && VB > 1;
  constexpr bool kARowK = VA == 1 || P::a_along_k(true);
  constexpr bool kBRowK = VB == 1 || P::b_along_k(true);
  using LayoutA = std::conditional_t<kARowK, wmma::row_major, wmma::col_major>;
  using LayoutB = std::conditional_t<kBRowK, wmma::col_major, wmma::row_major>;
  FC_DYNAMIC_SHARED(unsigned char, raw);
  // wmma loads and stores need 256-bit aligned pointers
  unsigned char* base = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(raw) + 31) & ~uintptr_t(31));
  T* const a_smem = reinterpret_cast<T*>(base);  // [2][kBuf]
  T* const b_smem = a_smem + 2 * kBuf;           // [2][kBuf]
  float* const c_smem = reinterpret_cast<float*>(base);  // [BM][kLdC], after the main loop

  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = warp / 2, wn = warp % 2;  // this warp's 32x32 quadrant
  const ConvSplit sp = conv_split(p, splits, k_chunk);
  const int64_t m0 = int64_t(blockIdx.x) * BM, n0 = int64_t(blockIdx.y) * BN;

  ConvPanel<P, true, BM, BK, kThreads, VA> a;
  ConvPanel<P, false, BN, BK, kThreads, VB> b;
  a.init(p, tid, m0, sp.grp, p.cl, kARowK ? kLd : 1, kARowK ? 1 : kLdT);
  b.init(p, tid, n0, sp.grp, p.cl, kBRowK ? kLd : 1, kBRowK ? 1 : kLdT);

  wmma::fragment<wmma::accumulator, 16, 16, F::K, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  // The tensor-core work of one stage: this warp's 2x2 fragments over BK.
  auto multiply = [&](const T* as, const T* bs) {
#pragma unroll
    for (int kf = 0; kf < BK; kf += F::K) {
      wmma::fragment<wmma::matrix_a, 16, 16, F::K, typename F::type, LayoutA> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, F::K, typename F::type, LayoutB> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int m = wm * 32 + i * 16, n = wn * 32 + i * 16;
        if constexpr (kARowK) {
          wmma::load_matrix_sync(fa[i], as + m * kLd + kf, kLd);
        } else {
          wmma::load_matrix_sync(fa[i], as + kf * kLdT + m, kLdT);
        }
        if constexpr (kBRowK) {
          wmma::load_matrix_sync(fb[i], bs + n * kLd + kf, kLd);
        } else {
          wmma::load_matrix_sync(fb[i], bs + kf * kLdT + n, kLdT);
        }
        if constexpr (std::is_same_v<T, float>) {  // fp32 -> TF32, as cuDNN rounds
#pragma unroll
          for (int e = 0; e < fa[i].num_elements; ++e)
            fa[i].x[e] = wmma::__float_to_tf32(fa[i].x[e]);
#pragma unroll
          for (int e = 0; e < fb[i].num_elements; ++e)
            fb[i].x[e] = wmma::__float_to_tf32(fb[i].x[e]);
        }
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
  };

  const int64_t steps = sp.kend > sp.kbeg ? (sp.kend - sp.kbeg + BK - 1) / BK : 0;
  if (steps > 0) {  // uniform over the block
    if constexpr (kAsync) {
      a.fetch_async(p, sp.kbeg, sp.kend, a_smem);
      b.fetch_async(p, sp.kbeg, sp.kend, b_smem);
      __pipeline_commit();
      for (int64_t t = 0; t < steps; ++t) {
        const int cur = int(t & 1);
        if (t + 1 < steps) {  // stage t + 1 into the other buffers (free since the last barrier)
          a.fetch_async(p, sp.kbeg + (t + 1) * BK, sp.kend, a_smem + (cur ^ 1) * kBuf);
          b.fetch_async(p, sp.kbeg + (t + 1) * BK, sp.kend, b_smem + (cur ^ 1) * kBuf);
          __pipeline_commit();
          __pipeline_wait_prior(1);  // this thread's copies of stage t have landed
        } else {
          __pipeline_wait_prior(0);
        }
        __syncthreads();  // ... and everyone's
        multiply(a_smem + cur * kBuf, b_smem + cur * kBuf);
        __syncthreads();  // stage t consumed: step t + 1 may refill its buffers
      }
    } else {
      a.fetch(p, sp.kbeg, sp.kend);
      b.fetch(p, sp.kbeg, sp.kend);
      a.store(a_smem);
      b.store(b_smem);
      __syncthreads();
      for (int64_t t = 0; t < steps; ++t) {
        const int cur = int(t & 1);
        if (t + 1 < steps) {
          a.fetch(p, sp.kbeg + (t + 1) * BK, sp.kend);
          b.fetch(p, sp.kbeg + (t + 1) * BK, sp.kend);
        }
        multiply(a_smem + cur * kBuf, b_smem + cur * kBuf);
        if (t + 1 < steps) {
          a.store(a_smem + (cur ^ 1) * kBuf);
          b.store(b_smem + (cur ^ 1) * kBuf);
        }
        __syncthreads();  // also: the panels are dead before c_smem reuses their memory
      }
    }
  }

#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(c_smem + (wm * 32 + i * 16) * kLdC + wn * 32 + j * 16, acc[i][j],
                              kLdC, wmma::mem_row_major);
  __syncthreads();
  const int64_t M = p.gemm_m(), N = p.gemm_n();
  for (int e = tid; e < BM * BN; e += kThreads) {
    const int64_t m = m0 + e / BN, n = n0 + e % BN;
    if (m < M && n < N)
      p.store(p.out_row(m), n, sp.grp, sp.split, c_smem[(e / BN) * kLdC + e % BN]);
  }
}

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
