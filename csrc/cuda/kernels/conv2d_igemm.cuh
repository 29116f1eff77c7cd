// Implicit-GEMM convolution, SIMT core (fp32, fp64): the three passes of conv2d_problems.cuh
// on one register-blocked, double-buffered shared-memory GEMM. Device code only (SIMT.md).
//
// Block tile BM x BN, reduction step BK; each of the (BM/TM)*(BN/TN) threads owns a TM x TN
// block of C in registers. Per step, the threads gather the next A and B panels (BM x BK,
// BN x BK) from global memory into registers while they multiply the current panels from
// shared memory, then store the registers into the other shared buffer: one barrier per step.
// Grid: x over M tiles, y over N tiles, z = groups * splits (splits > 1: weight gradient).
#pragma once
#include <cuda_pipeline_primitives.h>  // cp.async (the emulated build: csrc/simt's shadow)

#include <type_traits>

#include "cuda/kernels/conv2d_problems.cuh"

namespace fastconv {
namespace FC_KERNEL_NS {

// One operand panel (kMN rows x kBK reduction columns) gathered by kThreads threads, V
// elements per access. Each thread's panel positions are fixed for the whole reduction, so
// their Row contexts (pixel decodes) and shared-memory offsets are computed once.
template <class P, bool kIsA, int kMN, int kBK, int kThreads, int V>
struct ConvPanel {
  using T = typename P::scalar_t;
  using Row = std::conditional_t<kIsA, typename P::ARow, typename P::BRow>;
  static constexpr int kVecs = kMN * kBK / V;
  static constexpr int kIters = (kVecs + kThreads - 1) / kThreads;
  static constexpr bool kFull = kVecs % kThreads == 0;
  static_assert(kBK % V == 0 && kMN % V == 0, "a vector must stay inside one panel row/column");

  // Row contexts are kept in registers when a thread has few accesses; otherwise (the scalar
  // panels of the wmma core: 8 accesses) they are decoded again at every step, which costs
  // integer work but keeps the kernel free of spills.
  static constexpr bool kCacheRows = kIters <= 2;
  Row row[kCacheRows ? kIters : 1];
  int mn_off[kIters];    // panel row of access i
  int64_t mn0, grp;
  int kk_off[kIters];    // reduction offset inside the panel
  int smem_off[kIters];  // shared-memory offset of the first element
  int step;              // shared-memory distance between the V elements of one access
  int tid;
  T regs[kIters][V];

  FC_DEV bool active(int i) const { return kFull || tid + i * kThreads < kVecs; }

  // ld_mn, ld_k: shared-memory strides of the panel's row and reduction indices.
  FC_DEV void init(const P& p, int thread, int64_t first_row, int64_t group, bool cl, int ld_mn,
                   int ld_k) {
    tid = thread;
    mn0 = first_row;
    grp = group;
    // the direction in which consecutive threads (and a vector's elements) are adjacent in
    // global memory: coalesced loads
    const bool along_k = kIsA ? P::a_along_k(cl) : P::b_along_k(cl);
    step = along_k ? ld_k : ld_mn;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int v = active(i) ? tid + i * kThreads : 0;
      const int mn = along_k ? v / (kBK / V) : (v % (kMN / V)) * V;
      const int kk = along_k ? (v % (kBK / V)) * V : v / (kMN / V);
      kk_off[i] = kk;
      mn_off[i] = mn;
      smem_off[i] = mn * ld_mn + kk * ld_k;
      if constexpr (kCacheRows) row[i] = make_row(p, i);
    }
  }

  FC_DEV Row make_row(const P& p, int i) const {
    if constexpr (kIsA) {
      return p.a_row(mn0 + mn_off[i], grp);
    } else {
      return p.b_row(mn0 + mn_off[i], grp);
    }
  }

  // Address of access i at reduction step k0 (null: zeros).
  FC_DEV const T* src(const P& p, int i, int64_t k0, int64_t kend) const {
    Row r;
    if constexpr (kCacheRows) {
      r = row[i];
    } else {
      r = make_row(p, i);
    }
    if constexpr (kIsA) {
      return p.a_src(r, k0 + kk_off[i], kend);
    } else {
      return p.b_src(r, k0 + kk_off[i], kend);
    }
  }

  // Gathers the panel of reduction columns [k0, k0 + kBK) (zero at and past kend).
  FC_DEV void fetch(const P& p, int64_t k0, int64_t kend) {
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      if (!active(i)) continue;
      conv_fetch<T, V>(src(p, i, k0, kend), regs[i]);
    }
  }

  // The same accesses as asynchronous copies straight into shared memory (the wmma core's
  // vector panels, whose layout makes the V elements contiguous: step == 1); zeros (padding,
  // past the panel) are stored directly.
  FC_DEV void fetch_async(const P& p, int64_t k0, int64_t kend, T* smem) const {
    static_assert(V * sizeof(T) == 16, "cp.async moves 16-byte vectors here");
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      if (!active(i)) continue;
      const T* s = src(p, i, k0, kend);
      T* d = smem + smem_off[i];
      if (s != nullptr) {
        __pipeline_memcpy_async(d, s, 16);
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j) conv_zero(&d[j]);
      }
    }
  }

  template <typename S>
  FC_DEV void store(S* smem) const {
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      if (!active(i)) continue;
#pragma unroll
      for (int j = 0; j < V; ++j) smem[smem_off[i] + j * step] = regs[i][j];
    }
  }
};

// The reduction range of this block's split: [kbeg, kend).
struct ConvSplit {
  int64_t grp, split, kbeg, kend;
};
template <class P>
FC_DEV ConvSplit conv_split(const P& p, int64_t splits, int64_t k_chunk) {
  // 32-bit: splits * groups <= 65535 (the grid's z); a 64-bit division is a call on the GPU
  const int z = int(blockIdx.z), nsplits = int(splits);
  const int64_t grp = z / nsplits, split = z % nsplits;
  const int64_t kbeg = split * k_chunk;
  const int64_t kend = kbeg + k_chunk < p.gemm_k() ? kbeg + k_chunk : p.gemm_k();
  return {grp, split, kbeg, kend};
}

template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct SimtTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  static constexpr int kThreads = (BM / TM) * (BN / TN);
  static constexpr int kPad = 4;  // keeps rows 16-byte aligned, spreads panel stores over banks
  static constexpr int kLdA = BM + kPad, kLdB = BN + kPad;
  template <typename T>
  static constexpr int smem_bytes() {
    return 2 * BK * (kLdA + kLdB) * int(sizeof(T));
  }
};
// The launch plan's two SIMT tiles (cuda/launch/conv2d.h): 256 threads each.
using SimtTileLarge = SimtTile<128, 64, 8, 8, 4>;
using SimtTileSmall = SimtTile<64, 32, 8, 4, 2>;

// VA, VB: elements per access of the A and B panels (1, or the channels_last vector width).
template <class P, class Tile, int VA, int VB>
__global__ void __launch_bounds__(Tile::kThreads, 1)
    conv_igemm_simt(P p, int64_t splits, int64_t k_chunk) {
  using T = typename P::scalar_t;
  using acc_t = typename P::acc_t;
  static_assert(std::is_same_v<T, acc_t>, "the SIMT core multiplies fp32 or fp64 storage");
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, TM = Tile::TM, TN = Tile::TN;
  constexpr int kLdA = Tile::kLdA, kLdB = Tile::kLdB;
  FC_DYNAMIC_SHARED(T, smem);
  T* const a_smem = smem;                   // [2][BK][kLdA]: k-major, rows of A adjacent
  T* const b_smem = smem + 2 * BK * kLdA;   // [2][BK][kLdB]

  const int tid = threadIdx.x;
  const int tx = tid % (BN / TN), ty = tid / (BN / TN);
  const ConvSplit sp = conv_split(p, splits, k_chunk);
  const int64_t m0 = int64_t(blockIdx.x) * BM, n0 = int64_t(blockIdx.y) * BN;

  ConvPanel<P, true, BM, BK, Tile::kThreads, VA> a;
  ConvPanel<P, false, BN, BK, Tile::kThreads, VB> b;
  a.init(p, tid, m0, sp.grp, p.cl, 1, kLdA);
  b.init(p, tid, n0, sp.grp, p.cl, 1, kLdB);

  acc_t acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = acc_t(0);

  const int64_t steps = sp.kend > sp.kbeg ? (sp.kend - sp.kbeg + BK - 1) / BK : 0;
  if (steps > 0) {  // uniform over the block
    a.fetch(p, sp.kbeg, sp.kend);
    b.fetch(p, sp.kbeg, sp.kend);
    a.store(a_smem);
    b.store(b_smem);
    __syncthreads();
    for (int64_t t = 0; t < steps; ++t) {
      const int cur = int(t & 1);
      if (t + 1 < steps) {  // next panels into registers while this one is multiplied
        a.fetch(p, sp.kbeg + (t + 1) * BK, sp.kend);
        b.fetch(p, sp.kbeg + (t + 1) * BK, sp.kend);
      }
      const T* as = a_smem + cur * BK * kLdA + ty * TM;
      const T* bs = b_smem + cur * BK * kLdB + tx * TN;
#pragma unroll
      for (int k = 0; k < BK; ++k) {
        acc_t av[TM], bv[TN];
#pragma unroll
        for (int i = 0; i < TM; ++i) av[i] = as[k * kLdA + i];
#pragma unroll
        for (int j = 0; j < TN; ++j) bv[j] = bs[k * kLdB + j];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] += av[i] * bv[j];
      }
      if (t + 1 < steps) {
        // the other buffer was last read in step t - 1, before the previous barrier
        a.store(a_smem + (cur ^ 1) * BK * kLdA);
        b.store(b_smem + (cur ^ 1) * BK * kLdB);
      }
      __syncthreads();
    }
  }

  const int64_t M = p.gemm_m(), N = p.gemm_n();
  auto row = p.out_row(m0 + ty * TM);  // rows m0 + ty * TM + i, stepped
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    if (m0 + ty * TM + i < M) {
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const int64_t n = n0 + tx * TN + j;
        if (n < N) p.store(row, n, sp.grp, sp.split, acc[i][j]);
      }
      p.out_next(row);
    }
  }
}

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
