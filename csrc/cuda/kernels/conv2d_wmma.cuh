// Implicit-GEMM convolution on tensor cores through nvcuda::wmma: fp16 and bf16 (m16n16k16)
// and fp32 as TF32 (m16n16k8), fp32 accumulation, the same problems and panel gathers as the
// SIMT core (conv2d_problems.cuh, ConvPanel in conv2d_igemm.cuh). Device code only (SIMT.md).
//
// Block tile 64x64 with BK = 16, four warps in 2x2, each warp 32x32 = 2x2 accumulator
// fragments. Both panels are stored [row][k] with a padded leading dimension (A row-major,
// B column-major for wmma), double-buffered like the SIMT core: the next panels are gathered
// into registers while the tensor cores consume the current ones, one barrier per step. The
// accumulators go through shared memory (fp32, row-major) to the problem's epilogue, so each
// output element is written by one thread with coalesced channels_last stores.
#pragma once
// Emulated build before the emulator has nvcuda::wmma: the tensor-core core is left out
// (the plan then refuses fp16/bf16/TF32).
#if defined(SIMT_EMULATION) && !__has_include("simt/mma.h")
#define FC_CONV_NO_WMMA 1
#else
#include <mma.h>
#endif

#include <cstdint>

#include "cuda/kernels/conv2d_igemm.cuh"

namespace fastconv {
namespace FC_KERNEL_NS {

#ifndef FC_CONV_NO_WMMA
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
#endif

struct WmmaTile {
  static constexpr int BM = 64, BN = 64, BK = 16, kThreads = 128;
  // Leading dimensions: multiples of 8 elements (16-bit) and of 4 (32-bit) as wmma requires,
  // and rows 16 apart stay 32-byte aligned; the padding spreads the panel stores over banks.
  static constexpr int kLd = BK + 8;
  static constexpr int kLdC = BN + 4;
  template <typename T>
  static constexpr int smem_bytes() {
    const int panels = 2 * (BM + BN) * kLd * int(sizeof(T));
    const int staging = BM * kLdC * int(sizeof(float));
    return (panels > staging ? panels : staging) + 32;  // + 32: the 256-bit alignment below
  }
};

#ifndef FC_CONV_NO_WMMA
template <class P, int VA, int VB>
__global__ void __launch_bounds__(WmmaTile::kThreads)
    conv_igemm_wmma(P p, int64_t splits, int64_t k_chunk) {
  namespace wmma = nvcuda::wmma;
  using T = typename P::scalar_t;
  using F = WmmaFrag<T>;
  constexpr int BM = WmmaTile::BM, BN = WmmaTile::BN, BK = WmmaTile::BK;
  constexpr int kLd = WmmaTile::kLd, kLdC = WmmaTile::kLdC, kThreads = WmmaTile::kThreads;
  FC_DYNAMIC_SHARED(unsigned char, raw);
  // wmma loads and stores need 256-bit aligned pointers
  unsigned char* base = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(raw) + 31) & ~uintptr_t(31));
  T* const a_smem = reinterpret_cast<T*>(base);  // [2][BM][kLd]
  T* const b_smem = a_smem + 2 * BM * kLd;       // [2][BN][kLd]
  float* const c_smem = reinterpret_cast<float*>(base);  // [BM][kLdC], after the main loop

  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = warp / 2, wn = warp % 2;  // this warp's 32x32 quadrant
  const ConvSplit sp = conv_split(p, splits, k_chunk);
  const int64_t m0 = int64_t(blockIdx.x) * BM, n0 = int64_t(blockIdx.y) * BN;

  ConvPanel<P, true, BM, BK, kThreads, VA> a;
  ConvPanel<P, false, BN, BK, kThreads, VB> b;
  a.init(p, tid, m0, sp.grp, p.cl, kLd, 1);
  b.init(p, tid, n0, sp.grp, p.cl, kLd, 1);

  wmma::fragment<wmma::accumulator, 16, 16, F::K, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  const int64_t steps = sp.kend > sp.kbeg ? (sp.kend - sp.kbeg + BK - 1) / BK : 0;
  if (steps > 0) {  // uniform over the block
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
      const T* as = a_smem + cur * BM * kLd + wm * 32 * kLd;
      const T* bs = b_smem + cur * BN * kLd + wn * 32 * kLd;
#pragma unroll
      for (int kf = 0; kf < BK; kf += F::K) {
        wmma::fragment<wmma::matrix_a, 16, 16, F::K, typename F::type, wmma::row_major> fa[2];
        wmma::fragment<wmma::matrix_b, 16, 16, F::K, typename F::type, wmma::col_major> fb[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          wmma::load_matrix_sync(fa[i], as + i * 16 * kLd + kf, kLd);
          wmma::load_matrix_sync(fb[i], bs + i * 16 * kLd + kf, kLd);
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
      if (t + 1 < steps) {
        a.store(a_smem + (cur ^ 1) * BM * kLd);
        b.store(b_smem + (cur ^ 1) * BN * kLd);
      }
      __syncthreads();  // also: the panels are dead before c_smem reuses their memory
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
    if (m < M && n < N) p.store(m, n, sp.grp, sp.split, c_smem[(e / BN) * kLdC + e % BN]);
  }
}
#endif  // FC_CONV_NO_WMMA

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
