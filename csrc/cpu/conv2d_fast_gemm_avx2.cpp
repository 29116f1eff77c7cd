// The AVX2 + FMA pieces of the 1x1-convolution GEMM (cpu/conv2d_fast_gemm.h): a 6 x 16
// register tile (12 ymm accumulators, two vectors of B loaded and one element of A broadcast
// per step: 15 of the 16 ymm registers) and the packing of A and B into micro-panels, with
// fast paths for a unit stride along either side (copies, or 8 x 8 register transposes).
#include <immintrin.h>

#include "cpu/conv2d_fast_gemm.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

#include "cpu/avx2_transpose8.h"

namespace fastconv::cpu::gemm {
namespace {

constexpr int MR = 6, NR = 16;

// Lanes [0, n) set (n clamped to [0, 8]).
inline __m256i first_lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

using ::fastconv::cpu::avx2::transpose8;

void micro_6x16(int64_t kc, const float* a, const float* b, float* c, int64_t rs, int64_t cs, int m,
                int n, bool accumulate, const float* bias, bool bias_per_row) {
  alignas(32) __m256 acc[MR][2];
  if (bias != nullptr && bias_per_row) {
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_set1_ps(i < m ? bias[i] : 0.0f);
  } else if (bias != nullptr) {
    const __m256 b0 = _mm256_maskload_ps(bias, first_lanes(n));
    const __m256 b1 = _mm256_maskload_ps(bias + 8, first_lanes(n - 8));
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      acc[i][0] = b0;
      acc[i][1] = b1;
    }
  } else {
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  }
  // The k loop in assembly: with intrinsics GCC rotates the 12 accumulators through other
  // registers across steps and spills some to the stack (15 of the 16 ymm registers are
  // live). Accumulators in ymm0-11 (loaded from and stored back to acc), B in ymm12-13, the
  // broadcast of A in ymm15. One step: two vectors of B, six broadcasts, twelve FMAs; the B
  // panel 8 steps (512 bytes) ahead is prefetched.
  if (kc > 0) {
    int64_t k = kc;
    asm volatile(
        "vmovaps 0(%[acc]), %%ymm0\n\t"
        "vmovaps 32(%[acc]), %%ymm1\n\t"
        "vmovaps 64(%[acc]), %%ymm2\n\t"
        "vmovaps 96(%[acc]), %%ymm3\n\t"
        "vmovaps 128(%[acc]), %%ymm4\n\t"
        "vmovaps 160(%[acc]), %%ymm5\n\t"
        "vmovaps 192(%[acc]), %%ymm6\n\t"
        "vmovaps 224(%[acc]), %%ymm7\n\t"
        "vmovaps 256(%[acc]), %%ymm8\n\t"
        "vmovaps 288(%[acc]), %%ymm9\n\t"
        "vmovaps 320(%[acc]), %%ymm10\n\t"
        "vmovaps 352(%[acc]), %%ymm11\n\t"
        "1:\n\t"
        "prefetcht0 512(%[b])\n\t"
        "vmovups (%[b]), %%ymm12\n\t"
        "vmovups 32(%[b]), %%ymm13\n\t"
        "vbroadcastss 0(%[a]), %%ymm15\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %%ymm0\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %%ymm1\n\t"
        "vbroadcastss 4(%[a]), %%ymm15\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %%ymm2\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %%ymm3\n\t"
        "vbroadcastss 8(%[a]), %%ymm15\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %%ymm4\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %%ymm5\n\t"
        "vbroadcastss 12(%[a]), %%ymm15\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %%ymm6\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %%ymm7\n\t"
        "vbroadcastss 16(%[a]), %%ymm15\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %%ymm8\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %%ymm9\n\t"
        "vbroadcastss 20(%[a]), %%ymm15\n\t"
        "vfmadd231ps %%ymm12, %%ymm15, %%ymm10\n\t"
        "vfmadd231ps %%ymm13, %%ymm15, %%ymm11\n\t"
        "add $24, %[a]\n\t"
        "add $64, %[b]\n\t"
        "dec %[k]\n\t"
        "jnz 1b\n\t"
        "vmovaps %%ymm0, 0(%[acc])\n\t"
        "vmovaps %%ymm1, 32(%[acc])\n\t"
        "vmovaps %%ymm2, 64(%[acc])\n\t"
        "vmovaps %%ymm3, 96(%[acc])\n\t"
        "vmovaps %%ymm4, 128(%[acc])\n\t"
        "vmovaps %%ymm5, 160(%[acc])\n\t"
        "vmovaps %%ymm6, 192(%[acc])\n\t"
        "vmovaps %%ymm7, 224(%[acc])\n\t"
        "vmovaps %%ymm8, 256(%[acc])\n\t"
        "vmovaps %%ymm9, 288(%[acc])\n\t"
        "vmovaps %%ymm10, 320(%[acc])\n\t"
        "vmovaps %%ymm11, 352(%[acc])\n\t"
        : [a] "+r"(a), [b] "+r"(b), [k] "+r"(k)
        : [acc] "r"(&acc[0][0])
        : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
          "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
  }
  if (cs == 1 && n == NR) {
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      if (i >= m) break;
      float* ci = c + i * rs;
      if (accumulate) {
        acc[i][0] = _mm256_add_ps(_mm256_loadu_ps(ci), acc[i][0]);
        acc[i][1] = _mm256_add_ps(_mm256_loadu_ps(ci + 8), acc[i][1]);
      }
      _mm256_storeu_ps(ci, acc[i][0]);
      _mm256_storeu_ps(ci + 8, acc[i][1]);
    }
  } else if (cs == 1) {
    // (the masks are made here, not before the k loop, where they would take two of the 16
    // registers and spill accumulators)
    const __m256i lo = first_lanes(n), hi = first_lanes(n - 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      if (i >= m) break;
      float* ci = c + i * rs;
      if (accumulate) {
        acc[i][0] = _mm256_add_ps(_mm256_maskload_ps(ci, lo), acc[i][0]);
        acc[i][1] = _mm256_add_ps(_mm256_maskload_ps(ci + 8, hi), acc[i][1]);
      }
      _mm256_maskstore_ps(ci, lo, acc[i][0]);
      _mm256_maskstore_ps(ci + 8, hi, acc[i][1]);
    }
  } else {  // strided columns: through a small buffer
    alignas(32) float t[MR][NR];
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      _mm256_store_ps(t[i], acc[i][0]);
      _mm256_store_ps(t[i] + 8, acc[i][1]);
    }
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < n; ++j) {
        float& e = c[i * rs + j * cs];
        e = accumulate ? e + t[i][j] : t[i][j];
      }
    }
  }
}

void pack_a(const float* src, int64_t rs, int64_t cs, int m, int64_t kc, float* dst) {
  int64_t k = 0;
  if (rs == 1 && m == MR) {  // MR contiguous elements per step
    for (; k < kc; ++k) {
      const float* s = src + k * cs;
      float* d = dst + k * MR;
      _mm_storeu_ps(d, _mm_loadu_ps(s));
      d[4] = s[4];
      d[5] = s[5];
    }
    return;
  }
  if (cs == 1) {  // rows contiguous in k: 8 steps at a time through a transpose
    for (; k + 8 <= kc; k += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = i < m ? _mm256_loadu_ps(src + i * rs + k) : _mm256_setzero_ps();
      transpose8(r);
      // 8 floats per step of which MR are kept: the 2 extra are overwritten by the next step;
      // the last step stores MR (nothing past the panel: panels are packed in any order).
      for (int j = 0; j < 7; ++j) _mm256_storeu_ps(dst + (k + j) * MR, r[j]);
      _mm256_maskstore_ps(dst + (k + 7) * MR, first_lanes(MR), r[7]);
    }
  }
  for (; k < kc; ++k) {
    for (int i = 0; i < MR; ++i) dst[k * MR + i] = i < m ? src[i * rs + k * cs] : 0.0f;
  }
}

void pack_b(const float* src, int64_t rs, int64_t cs, int n, int64_t kc, float* dst) {
  int64_t k = 0;
  if (cs == 1) {  // NR contiguous elements per step
    const __m256i lo = first_lanes(n), hi = first_lanes(n - 8);
    if (n == NR) {
      for (; k < kc; ++k) {
        _mm256_storeu_ps(dst + k * NR, _mm256_loadu_ps(src + k * rs));
        _mm256_storeu_ps(dst + k * NR + 8, _mm256_loadu_ps(src + k * rs + 8));
      }
    } else {
      for (; k < kc; ++k) {
        _mm256_storeu_ps(dst + k * NR, _mm256_maskload_ps(src + k * rs, lo));
        _mm256_storeu_ps(dst + k * NR + 8, _mm256_maskload_ps(src + k * rs + 8, hi));
      }
    }
    return;
  }
  if (rs == 1) {  // columns contiguous in k: 8 x 8 transposes, two per 8 steps
    for (; k + 8 <= kc; k += 8) {
      for (int h = 0; h < 2; ++h) {
        __m256 r[8];
        for (int j = 0; j < 8; ++j) {
          r[j] = h * 8 + j < n ? _mm256_loadu_ps(src + (h * 8 + j) * cs + k) : _mm256_setzero_ps();
        }
        transpose8(r);
        for (int s = 0; s < 8; ++s) _mm256_storeu_ps(dst + (k + s) * NR + h * 8, r[s]);
      }
    }
  }
  for (; k < kc; ++k) {
    for (int j = 0; j < NR; ++j) dst[k * NR + j] = j < n ? src[k * rs + j * cs] : 0.0f;
  }
}

}  // namespace

const Kernels& avx2_kernels() {
  static const Kernels k{MR, NR, &micro_6x16, &pack_a, &pack_b};
  return k;
}

}  // namespace fastconv::cpu::gemm

#pragma GCC pop_options
