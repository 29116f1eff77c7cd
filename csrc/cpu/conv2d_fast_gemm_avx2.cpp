// The AVX2 + FMA pieces of the 1x1-convolution GEMM (cpu/conv2d_fast_gemm.h): a 6 x 16
// register tile (12 ymm accumulators, two vectors of B loaded and one element of A broadcast
// per step: 15 of the 16 ymm registers) and the packing of A and B into micro-panels, with
// fast paths for a unit stride along either side (copies, or 8 x 8 register transposes).
#include <immintrin.h>

#include <algorithm>

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

// The k loop (assembly): with intrinsics GCC rotates the 12 accumulators through other
// registers across steps and spills some to the stack (15 of the 16 ymm registers are live).
// Accumulators in ymm0-11, B in ymm12-13, the broadcast of A in ymm15. One step: two vectors
// of B, six broadcasts, twelve FMAs; the B panel 8 steps (512 bytes) ahead is prefetched.
#define FC_GEMM_K_LOOP_A(A0, A1, A2, A3, A4, A5, ADVANCE_A) \
  "1:\n\t"                                         \
  "prefetcht0 512(%[b])\n\t"                       \
  "vmovups (%[b]), %%ymm12\n\t"                    \
  "vmovups 32(%[b]), %%ymm13\n\t"                  \
  "vbroadcastss " A0 ", %%ymm15\n\t"               \
  "vfmadd231ps %%ymm12, %%ymm15, %%ymm0\n\t"       \
  "vfmadd231ps %%ymm13, %%ymm15, %%ymm1\n\t"       \
  "vbroadcastss " A1 ", %%ymm15\n\t"               \
  "vfmadd231ps %%ymm12, %%ymm15, %%ymm2\n\t"       \
  "vfmadd231ps %%ymm13, %%ymm15, %%ymm3\n\t"       \
  "vbroadcastss " A2 ", %%ymm15\n\t"               \
  "vfmadd231ps %%ymm12, %%ymm15, %%ymm4\n\t"       \
  "vfmadd231ps %%ymm13, %%ymm15, %%ymm5\n\t"       \
  "vbroadcastss " A3 ", %%ymm15\n\t"               \
  "vfmadd231ps %%ymm12, %%ymm15, %%ymm6\n\t"       \
  "vfmadd231ps %%ymm13, %%ymm15, %%ymm7\n\t"       \
  "vbroadcastss " A4 ", %%ymm15\n\t"               \
  "vfmadd231ps %%ymm12, %%ymm15, %%ymm8\n\t"       \
  "vfmadd231ps %%ymm13, %%ymm15, %%ymm9\n\t"       \
  "vbroadcastss " A5 ", %%ymm15\n\t"               \
  "vfmadd231ps %%ymm12, %%ymm15, %%ymm10\n\t"      \
  "vfmadd231ps %%ymm13, %%ymm15, %%ymm11\n\t"      \
  ADVANCE_A                                        \
  "add $64, %[b]\n\t"                              \
  "dec %[k]\n\t"                                   \
  "jnz 1b\n\t"
// A packed (a panel of MR floats per step) or read in place (MR rows a_rs apart, unit stride
// along k: the rows a0 + {0, 1, 2} a_rs and a3 + {0, 1, 2} a_rs, a3 = a0 + 3 a_rs).
#define FC_GEMM_K_LOOP FC_GEMM_K_LOOP_A("0(%[a])", "4(%[a])", "8(%[a])", "12(%[a])", "16(%[a])", "20(%[a])", "add $24, %[a]\n\t")
#define FC_GEMM_K_LOOP_ROWS                                                                   \
  FC_GEMM_K_LOOP_A("(%[a])", "(%[a],%[ars],1)", "(%[a],%[ars],2)", "(%[a3])", "(%[a3],%[ars],1)", \
                   "(%[a3],%[ars],2)", "add $4, %[a]\n\t" "add $4, %[a3]\n\t")
// A read in place through one pointer per row (p0-p5), all at the same step index ix.
#define FC_GEMM_K_LOOP_PTRS                                                                   \
  FC_GEMM_K_LOOP_A("(%[p0],%[ix],4)", "(%[p1],%[ix],4)", "(%[p2],%[ix],4)", "(%[p3],%[ix],4)", \
                   "(%[p4],%[ix],4)", "(%[p5],%[ix],4)", "inc %[ix]\n\t")

#define FC_GEMM_CLOBBERS                                                                        \
  "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", \
      "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

// Row r of the C tile: r < 3 from c0, else from c3 = c0 + 3 rows (x86 addressing scales the
// row stride by 1 or 2 only).
#define FC_ROW0 "(%[c0])"
#define FC_ROW1 "(%[c0],%[rs],1)"
#define FC_ROW2 "(%[c0],%[rs],2)"
#define FC_ROW3 "(%[c3])"
#define FC_ROW4 "(%[c3],%[rs],1)"
#define FC_ROW5 "(%[c3],%[rs],2)"
// The C tile's 12 cache lines (at most) asked for in writable state before the k loop, so
// the write-back at its end does not wait for them.
#define FC_PREFETCH_ROW(r) "prefetchw " r "\n\t" "prefetchw 60" r "\n\t"
#define FC_PREFETCH_C                                                                  \
  FC_PREFETCH_ROW(FC_ROW0) FC_PREFETCH_ROW(FC_ROW1) FC_PREFETCH_ROW(FC_ROW2)          \
  FC_PREFETCH_ROW(FC_ROW3) FC_PREFETCH_ROW(FC_ROW4) FC_PREFETCH_ROW(FC_ROW5)
#define FC_ZERO_ACC                                                                         \
  "vxorps %%ymm0, %%ymm0, %%ymm0\n\t" "vxorps %%ymm1, %%ymm1, %%ymm1\n\t"                  \
  "vxorps %%ymm2, %%ymm2, %%ymm2\n\t" "vxorps %%ymm3, %%ymm3, %%ymm3\n\t"                  \
  "vxorps %%ymm4, %%ymm4, %%ymm4\n\t" "vxorps %%ymm5, %%ymm5, %%ymm5\n\t"                  \
  "vxorps %%ymm6, %%ymm6, %%ymm6\n\t" "vxorps %%ymm7, %%ymm7, %%ymm7\n\t"                  \
  "vxorps %%ymm8, %%ymm8, %%ymm8\n\t" "vxorps %%ymm9, %%ymm9, %%ymm9\n\t"                  \
  "vxorps %%ymm10, %%ymm10, %%ymm10\n\t" "vxorps %%ymm11, %%ymm11, %%ymm11\n\t"
// c = acc (store) or c = c + acc (add, the same order of the sum as the C++ paths below).
#define FC_STORE_ROW(r, lo, hi)                                                        \
  "vmovups %%ymm" #lo ", " r "\n\t" "vmovups %%ymm" #hi ", 32" r "\n\t"
#define FC_ADD_ROW(r, lo, hi)                                                          \
  "vaddps " r ", %%ymm" #lo ", %%ymm" #lo "\n\t" "vaddps 32" r ", %%ymm" #hi ", %%ymm" #hi "\n\t" \
  FC_STORE_ROW(r, lo, hi)
#define FC_STORE_C                                                                     \
  FC_STORE_ROW(FC_ROW0, 0, 1) FC_STORE_ROW(FC_ROW1, 2, 3) FC_STORE_ROW(FC_ROW2, 4, 5)  \
  FC_STORE_ROW(FC_ROW3, 6, 7) FC_STORE_ROW(FC_ROW4, 8, 9) FC_STORE_ROW(FC_ROW5, 10, 11)
#define FC_ADD_C                                                                       \
  FC_ADD_ROW(FC_ROW0, 0, 1) FC_ADD_ROW(FC_ROW1, 2, 3) FC_ADD_ROW(FC_ROW2, 4, 5)        \
  FC_ADD_ROW(FC_ROW3, 6, 7) FC_ADD_ROW(FC_ROW4, 8, 9) FC_ADD_ROW(FC_ROW5, 10, 11)

// Accumulators: ymm0-11 hold rows 0-5 (two vectors each) during the k loop; outside the
// assembly they are an MR x 2 array.
using Acc = __m256[MR][2];

// Where the k loop reads A: packed panels, rows a_rs apart, or one pointer per row (a_rows),
// the last two in place (unit stride along k).
enum class AFrom { kPanel, kRows, kRowPointers };

// The full 6 x 16 tile with unit column stride and no bias, all in registers: accumulators
// zeroed, the k loop, then C written (or added to) straight from them.
template <bool kAccumulate, AFrom kA>
void micro_full(int64_t kc, const float* a, int64_t a_rs, const float* const* a_rows, const float* b, float* c,
                int64_t rs) {
  int64_t k = kc;
  float* c3 = c + 3 * rs;
  const int64_t rs_bytes = rs * static_cast<int64_t>(sizeof(float));
  if constexpr (kA == AFrom::kRowPointers) {
    int64_t ix = 0;
    if constexpr (kAccumulate) {
      asm volatile(FC_PREFETCH_C FC_ZERO_ACC FC_GEMM_K_LOOP_PTRS FC_ADD_C
                   : [ix] "+r"(ix), [b] "+r"(b), [k] "+r"(k)
                   : [p0] "r"(a_rows[0]), [p1] "r"(a_rows[1]), [p2] "r"(a_rows[2]), [p3] "r"(a_rows[3]),
                     [p4] "r"(a_rows[4]), [p5] "r"(a_rows[5]), [c0] "r"(c), [c3] "r"(c3), [rs] "r"(rs_bytes)
                   : FC_GEMM_CLOBBERS);
    } else {
      asm volatile(FC_PREFETCH_C FC_ZERO_ACC FC_GEMM_K_LOOP_PTRS FC_STORE_C
                   : [ix] "+r"(ix), [b] "+r"(b), [k] "+r"(k)
                   : [p0] "r"(a_rows[0]), [p1] "r"(a_rows[1]), [p2] "r"(a_rows[2]), [p3] "r"(a_rows[3]),
                     [p4] "r"(a_rows[4]), [p5] "r"(a_rows[5]), [c0] "r"(c), [c3] "r"(c3), [rs] "r"(rs_bytes)
                   : FC_GEMM_CLOBBERS);
    }
  } else if constexpr (kA == AFrom::kRows) {
    const float* a3 = a + 3 * a_rs;
    const int64_t ars_bytes = a_rs * static_cast<int64_t>(sizeof(float));
    if constexpr (kAccumulate) {
      asm volatile(FC_PREFETCH_C FC_ZERO_ACC FC_GEMM_K_LOOP_ROWS FC_ADD_C
                   : [a] "+r"(a), [a3] "+r"(a3), [b] "+r"(b), [k] "+r"(k)
                   : [ars] "r"(ars_bytes), [c0] "r"(c), [c3] "r"(c3), [rs] "r"(rs_bytes)
                   : FC_GEMM_CLOBBERS);
    } else {
      asm volatile(FC_PREFETCH_C FC_ZERO_ACC FC_GEMM_K_LOOP_ROWS FC_STORE_C
                   : [a] "+r"(a), [a3] "+r"(a3), [b] "+r"(b), [k] "+r"(k)
                   : [ars] "r"(ars_bytes), [c0] "r"(c), [c3] "r"(c3), [rs] "r"(rs_bytes)
                   : FC_GEMM_CLOBBERS);
    }
  } else if constexpr (kAccumulate) {
    asm volatile(FC_PREFETCH_C FC_ZERO_ACC FC_GEMM_K_LOOP FC_ADD_C
                 : [a] "+r"(a), [b] "+r"(b), [k] "+r"(k)
                 : [c0] "r"(c), [c3] "r"(c3), [rs] "r"(rs_bytes)
                 : FC_GEMM_CLOBBERS);
  } else {
    asm volatile(FC_PREFETCH_C FC_ZERO_ACC FC_GEMM_K_LOOP FC_STORE_C
                 : [a] "+r"(a), [b] "+r"(b), [k] "+r"(k)
                 : [c0] "r"(c), [c3] "r"(c3), [rs] "r"(rs_bytes)
                 : FC_GEMM_CLOBBERS);
  }
}

#define FC_LOAD_ACC                                                                        \
  "vmovaps 0(%[acc]), %%ymm0\n\t" "vmovaps 32(%[acc]), %%ymm1\n\t"                         \
  "vmovaps 64(%[acc]), %%ymm2\n\t" "vmovaps 96(%[acc]), %%ymm3\n\t"                        \
  "vmovaps 128(%[acc]), %%ymm4\n\t" "vmovaps 160(%[acc]), %%ymm5\n\t"                      \
  "vmovaps 192(%[acc]), %%ymm6\n\t" "vmovaps 224(%[acc]), %%ymm7\n\t"                      \
  "vmovaps 256(%[acc]), %%ymm8\n\t" "vmovaps 288(%[acc]), %%ymm9\n\t"                      \
  "vmovaps 320(%[acc]), %%ymm10\n\t" "vmovaps 352(%[acc]), %%ymm11\n\t"
#define FC_SAVE_ACC                                                                        \
  "vmovaps %%ymm0, 0(%[acc])\n\t" "vmovaps %%ymm1, 32(%[acc])\n\t"                         \
  "vmovaps %%ymm2, 64(%[acc])\n\t" "vmovaps %%ymm3, 96(%[acc])\n\t"                        \
  "vmovaps %%ymm4, 128(%[acc])\n\t" "vmovaps %%ymm5, 160(%[acc])\n\t"                      \
  "vmovaps %%ymm6, 192(%[acc])\n\t" "vmovaps %%ymm7, 224(%[acc])\n\t"                      \
  "vmovaps %%ymm8, 256(%[acc])\n\t" "vmovaps %%ymm9, 288(%[acc])\n\t"                      \
  "vmovaps %%ymm10, 320(%[acc])\n\t" "vmovaps %%ymm11, 352(%[acc])\n\t"

// Edge tiles, bias, strided columns, A through row pointers (a_rows): the accumulators start
// from and end in acc, then go to C.
template <AFrom kA>
void micro_general(int64_t kc, const float* a, int64_t a_rs, const float* const* a_rows, const float* b,
                   float* c, int64_t rs, int64_t cs, int m, int n, bool accumulate, const float* bias,
                   bool bias_per_row) {
  alignas(32) Acc acc;
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
  if (kc > 0) {
    int64_t k = kc;
    if constexpr (kA == AFrom::kRowPointers) {
      int64_t ix = 0;
      asm volatile(FC_LOAD_ACC FC_GEMM_K_LOOP_PTRS FC_SAVE_ACC
                   : [ix] "+r"(ix), [b] "+r"(b), [k] "+r"(k)
                   : [p0] "r"(a_rows[0]), [p1] "r"(a_rows[1]), [p2] "r"(a_rows[2]), [p3] "r"(a_rows[3]),
                     [p4] "r"(a_rows[4]), [p5] "r"(a_rows[5]), [acc] "r"(&acc[0][0])
                   : FC_GEMM_CLOBBERS);
    } else if constexpr (kA == AFrom::kRows) {
      const float* a3 = a + 3 * a_rs;
      const int64_t ars_bytes = a_rs * static_cast<int64_t>(sizeof(float));
      asm volatile(FC_LOAD_ACC FC_GEMM_K_LOOP_ROWS FC_SAVE_ACC
                   : [a] "+r"(a), [a3] "+r"(a3), [b] "+r"(b), [k] "+r"(k)
                   : [ars] "r"(ars_bytes), [acc] "r"(&acc[0][0])
                   : FC_GEMM_CLOBBERS);
    } else {
      asm volatile(FC_LOAD_ACC FC_GEMM_K_LOOP FC_SAVE_ACC
                   : [a] "+r"(a), [b] "+r"(b), [k] "+r"(k)
                   : [acc] "r"(&acc[0][0])
                   : FC_GEMM_CLOBBERS);
    }
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

void micro_6x16(int64_t kc, const float* a, const float* b, float* c, int64_t rs, int64_t cs, int m,
                int n, bool accumulate, const float* bias, bool bias_per_row) {
  if (m == MR && n == NR && cs == 1 && bias == nullptr && kc > 0) {
    if (accumulate) {
      micro_full<true, AFrom::kPanel>(kc, a, 0, nullptr, b, c, rs);
    } else {
      micro_full<false, AFrom::kPanel>(kc, a, 0, nullptr, b, c, rs);
    }
    return;
  }
  micro_general<AFrom::kPanel>(kc, a, 0, nullptr, b, c, rs, cs, m, n, accumulate, bias, bias_per_row);
}

void micro_6x16_rows(int64_t kc, const float* a, int64_t a_rs, const float* b, float* c, int64_t rs,
                     int64_t cs, int n, bool accumulate, const float* bias, bool bias_per_row) {
  if (n == NR && cs == 1 && bias == nullptr && kc > 0) {
    if (accumulate) {
      micro_full<true, AFrom::kRows>(kc, a, a_rs, nullptr, b, c, rs);
    } else {
      micro_full<false, AFrom::kRows>(kc, a, a_rs, nullptr, b, c, rs);
    }
    return;
  }
  micro_general<AFrom::kRows>(kc, a, a_rs, nullptr, b, c, rs, cs, MR, n, accumulate, bias, bias_per_row);
}

void micro_6x16_ptrs(int64_t kc, const float* const* a_rows, const float* b, float* c, int64_t rs,
                     int64_t cs, int m, int n, bool accumulate, const float* bias, bool bias_per_row) {
  if (m == MR && n == NR && cs == 1 && bias == nullptr && kc > 0) {
    if (accumulate) {
      micro_full<true, AFrom::kRowPointers>(kc, nullptr, 0, a_rows, b, c, rs);
    } else {
      micro_full<false, AFrom::kRowPointers>(kc, nullptr, 0, a_rows, b, c, rs);
    }
    return;
  }
  micro_general<AFrom::kRowPointers>(kc, nullptr, 0, a_rows, b, c, rs, cs, m, n, accumulate, bias,
                                     bias_per_row);
}

// The first 6 lanes of v to d[0..6) (the panels' last step: nothing may be written past it).
inline void store6(float* d, __m256 v) {
  _mm_storeu_ps(d, _mm256_castps256_ps128(v));
  _mm_storel_pi(reinterpret_cast<__m64*>(d + 4), _mm256_extractf128_ps(v, 1));
}

void pack_a(const float* src, int64_t rs, int64_t cs, int m, int64_t kc, float* dst) {
  static_assert(MR == 6, "store6 and the 8-wide copies below assume MR = 6");
  int64_t k = 0;
  if (rs == 1 && m == MR && cs >= 8 && kc > 0) {
    // MR contiguous elements per step, moved 8 at a time: the 2 extra floats read lie before
    // the next step's first element (cs >= 8), the 2 extra written are overwritten by the next
    // step; the last step moves exactly MR.
    for (; k + 1 < kc; ++k) _mm256_storeu_ps(dst + k * MR, _mm256_loadu_ps(src + k * cs));
    const float* s = src + k * cs;
    _mm_storeu_ps(dst + k * MR, _mm_loadu_ps(s));
    dst[k * MR + 4] = s[4];
    dst[k * MR + 5] = s[5];
    return;
  }
  if (rs == 1 && m < MR && kc > 0) {  // m contiguous elements per step (masked: none read past them)
    const __m256i lanes = first_lanes(m);
    for (; k + 1 < kc; ++k) _mm256_storeu_ps(dst + k * MR, _mm256_maskload_ps(src + k * cs, lanes));
    store6(dst + k * MR, _mm256_maskload_ps(src + k * cs, lanes));
    return;
  }
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
      if (m == MR) {  // (unrolled by hand: the general loop below branches per row)
        r[0] = _mm256_loadu_ps(src + k);
        r[1] = _mm256_loadu_ps(src + rs + k);
        r[2] = _mm256_loadu_ps(src + 2 * rs + k);
        r[3] = _mm256_loadu_ps(src + 3 * rs + k);
        r[4] = _mm256_loadu_ps(src + 4 * rs + k);
        r[5] = _mm256_loadu_ps(src + 5 * rs + k);
        r[6] = r[7] = _mm256_setzero_ps();
      } else {
        for (int i = 0; i < 8; ++i) r[i] = i < m ? _mm256_loadu_ps(src + i * rs + k) : _mm256_setzero_ps();
      }
      transpose8(r);
      // 8 floats per step of which MR are kept: the 2 extra are overwritten by the next step;
      // the last step stores MR (nothing past the panel: panels are packed in any order).
      for (int j = 0; j < 7; ++j) _mm256_storeu_ps(dst + (k + j) * MR, r[j]);
      store6(dst + (k + 7) * MR, r[7]);
    }
  }
  for (; k < kc; ++k) {
    for (int i = 0; i < MR; ++i) dst[k * MR + i] = i < m ? src[i * rs + k * cs] : 0.0f;
  }
}

// pack_a for the ceil(m / MR) panels of m rows (panel q at dst + q * kc * MR). With unit row
// stride (rows = channels of a channels_last tensor) in chunks of 16 steps across all panels:
// panel by panel, each step would read MR floats of a line that the next panels read again
// long after (lines of 256 pixels x K channels do not stay in L1), while step by step across
// all panels the stores go to panels kc * MR floats apart, which share few L1 sets. A chunk's
// source lines (16 x m floats) stay in L1 while its panels are written.
void pack_a_panels(const float* src, int64_t rs, int64_t cs, int m, int64_t kc, float* dst) {
  constexpr int64_t kChunk = 16;
  const int full = m / MR;
  if (rs == 1 && full > 0 && cs >= 8 && kc > 0) {
    for (int64_t k0 = 0; k0 < kc; k0 += kChunk) {
      const int64_t k1 = std::min(kc, k0 + kChunk);
      for (int q = 0; q < full; ++q) {
        const float* s = src + q * MR;
        float* d = dst + q * kc * MR;
        // 8 floats moved per step: the 2 extra read lie before the next step's last element
        // (cs >= 2), the 2 extra written are overwritten by the next step; the panel's last
        // step moves exactly MR (nothing past the panel).
        int64_t k = k0;
        for (; k < k1 && k + 1 < kc; ++k) _mm256_storeu_ps(d + k * MR, _mm256_loadu_ps(s + k * cs));
        if (k < k1) {
          _mm_storeu_ps(d + k * MR, _mm_loadu_ps(s + k * cs));
          d[k * MR + 4] = s[k * cs + 4];
          d[k * MR + 5] = s[k * cs + 5];
        }
      }
    }
    if (full * MR < m) pack_a(src + full * MR, rs, cs, m - full * MR, kc, dst + full * kc * MR);
    return;
  }
  for (int i = 0; i < m; i += MR) pack_a(src + i * rs, rs, cs, std::min(MR, m - i), kc, dst + i * kc);
}

void pack_b(const float* src, int64_t rs, int64_t cs, int n, int64_t kc, float* dst) {
  int64_t k = 0;
  if (cs == 1) {  // NR contiguous elements per step
    const __m256i lo = first_lanes(n), hi = first_lanes(n - 8);
    if (n == NR) {
      for (; k < kc; ++k) {
        // The drivers pack the panels of a block left to right, each reading one cache line
        // per step from rows rs apart (NCHW images): the line of the panel 4 to the right is
        // requested now, so those reads do not wait on memory one row at a time.
        _mm_prefetch(reinterpret_cast<const char*>(src + k * rs + 4 * NR), _MM_HINT_T1);
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
  if (cs == 2) {  // every other element (1x1 convolutions of stride 2): 2n floats read, the even kept
    // (masked loads: nothing past the panel's last column is read)
    const __m256i m0 = first_lanes(2 * n - 1), m1 = first_lanes(2 * n - 9), m2 = first_lanes(2 * n - 17),
                  m3 = first_lanes(2 * n - 25);
    for (; k < kc; ++k) {
      const float* s = src + k * rs;
      for (int h = 0; h < 2; ++h) {
        const __m256 a = _mm256_maskload_ps(s + 16 * h, h == 0 ? m0 : m2);
        const __m256 b = _mm256_maskload_ps(s + 16 * h + 8, h == 0 ? m1 : m3);
        // [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6]
        const __m256 even = _mm256_shuffle_ps(a, b, 0x88);
        _mm256_storeu_ps(dst + k * NR + 8 * h,
                         _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), 0xD8)));
      }
    }
    return;
  }
  if (rs == 1) {  // columns contiguous in k: 8 x 8 transposes, two per 8 steps
    for (; k + 8 <= kc; k += 8) {
      for (int h = 0; h < 2; ++h) {
        __m256 r[8];
        const float* sh = src + h * 8 * cs + k;
        if (n == NR) {  // (unrolled: the general loop branches per column)
#pragma GCC unroll 8
          for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(sh + j * cs);
        } else {
          for (int j = 0; j < 8; ++j) r[j] = h * 8 + j < n ? _mm256_loadu_ps(sh + j * cs) : _mm256_setzero_ps();
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
  static const Kernels k{MR, NR, &micro_6x16, &pack_a, &pack_b, &micro_6x16_rows, &pack_a_panels,
                         &micro_6x16_ptrs};
  return k;
}

}  // namespace fastconv::cpu::gemm

#pragma GCC pop_options
