// The AVX-512F micro-kernel of the packed fp32 GEMM (cpu/conv2d_fast_gemm.h): a 6 x 32 register
// tile, the AVX2 6 x 16 kernel (conv2d_fast_gemm_avx2.cpp) at twice the width: 12 zmm
// accumulators, two vectors of B loaded and one element of A broadcast per step, so each step
// does 12 FMAs on 8 loads and the k loop is bound by the FMA ports. A's packing does not depend
// on the tile's width and is the AVX2 unit's (same MR); B's panels are 32 wide here.
#include <immintrin.h>

#include <algorithm>

#include "cpu/conv2d_fast_gemm.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")

#include "cpu/avx2_transpose8.h"

namespace fastconv::cpu::gemm {
namespace {

constexpr int MR = 6, NR = 32;

// Lanes [0, n) set (n clamped to [0, 16]).
inline __mmask16 first_lanes(int n) {
  return n <= 0 ? __mmask16(0) : n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u);
}

// The k loop (assembly, as in the AVX2 unit: intrinsics let GCC move accumulators around).
// Accumulators in zmm0-11, B in zmm12-13, the broadcast of A in zmm15. One step: two vectors
// of B (128 bytes), six broadcasts, twelve FMAs; B 8 steps ahead is prefetched. B is a packed
// panel (steps 128 bytes apart) or read in place (rows bs bytes apart, FC_GEMM_K_LOOP_B_ROWS).
#define FC_B_PACKED "prefetcht0 1024(%[b])\n\t" "prefetcht0 1088(%[b])\n\t", "add $128, %[b]\n\t"
#define FC_B_ROWS "prefetcht0 (%[b],%[bs8],1)\n\t" "prefetcht0 64(%[b],%[bs8],1)\n\t", "add %[bs], %[b]\n\t"
#define FC_GEMM_K_LOOP_A(A0, A1, A2, A3, A4, A5, ADVANCE_A) FC_GEMM_K_LOOP_AB(A0, A1, A2, A3, A4, A5, ADVANCE_A, FC_B_PACKED)
#define FC_GEMM_K_LOOP_AB(...) FC_GEMM_K_LOOP_AB_(__VA_ARGS__)
#define FC_GEMM_K_LOOP_AB_(A0, A1, A2, A3, A4, A5, ADVANCE_A, PREFETCH_B, ADVANCE_B) \
  "1:\n\t"                                         \
  PREFETCH_B                                       \
  "vmovups (%[b]), %%zmm12\n\t"                    \
  "vmovups 64(%[b]), %%zmm13\n\t"                  \
  "vbroadcastss " A0 ", %%zmm15\n\t"               \
  "vfmadd231ps %%zmm12, %%zmm15, %%zmm0\n\t"       \
  "vfmadd231ps %%zmm13, %%zmm15, %%zmm1\n\t"       \
  "vbroadcastss " A1 ", %%zmm15\n\t"               \
  "vfmadd231ps %%zmm12, %%zmm15, %%zmm2\n\t"       \
  "vfmadd231ps %%zmm13, %%zmm15, %%zmm3\n\t"       \
  "vbroadcastss " A2 ", %%zmm15\n\t"               \
  "vfmadd231ps %%zmm12, %%zmm15, %%zmm4\n\t"       \
  "vfmadd231ps %%zmm13, %%zmm15, %%zmm5\n\t"       \
  "vbroadcastss " A3 ", %%zmm15\n\t"               \
  "vfmadd231ps %%zmm12, %%zmm15, %%zmm6\n\t"       \
  "vfmadd231ps %%zmm13, %%zmm15, %%zmm7\n\t"       \
  "vbroadcastss " A4 ", %%zmm15\n\t"               \
  "vfmadd231ps %%zmm12, %%zmm15, %%zmm8\n\t"       \
  "vfmadd231ps %%zmm13, %%zmm15, %%zmm9\n\t"       \
  "vbroadcastss " A5 ", %%zmm15\n\t"               \
  "vfmadd231ps %%zmm12, %%zmm15, %%zmm10\n\t"      \
  "vfmadd231ps %%zmm13, %%zmm15, %%zmm11\n\t"      \
  ADVANCE_A                                        \
  ADVANCE_B                                        \
  "dec %[k]\n\t"                                   \
  "jnz 1b\n\t"
#define FC_GEMM_K_LOOP FC_GEMM_K_LOOP_A("0(%[a])", "4(%[a])", "8(%[a])", "12(%[a])", "16(%[a])", "20(%[a])", "add $24, %[a]\n\t")
#define FC_GEMM_K_LOOP_ROWS                                                                   \
  FC_GEMM_K_LOOP_A("(%[a])", "(%[a],%[ars],1)", "(%[a],%[ars],2)", "(%[a3])", "(%[a3],%[ars],1)", \
                   "(%[a3],%[ars],2)", "add $4, %[a]\n\t" "add $4, %[a3]\n\t")
#define FC_GEMM_K_LOOP_B_ROWS \
  FC_GEMM_K_LOOP_AB("0(%[a])", "4(%[a])", "8(%[a])", "12(%[a])", "16(%[a])", "20(%[a])", "add %[as], %[a]\n\t", FC_B_ROWS)
#define FC_GEMM_K_LOOP_PTRS                                                                   \
  FC_GEMM_K_LOOP_A("(%[p0],%[ix],4)", "(%[p1],%[ix],4)", "(%[p2],%[ix],4)", "(%[p3],%[ix],4)", \
                   "(%[p4],%[ix],4)", "(%[p5],%[ix],4)", "inc %[ix]\n\t")

#define FC_GEMM_CLOBBERS                                                                        \
  "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", \
      "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

#define FC_ROW0 "(%[c0])"
#define FC_ROW1 "(%[c0],%[rs],1)"
#define FC_ROW2 "(%[c0],%[rs],2)"
#define FC_ROW3 "(%[c3])"
#define FC_ROW4 "(%[c3],%[rs],1)"
#define FC_ROW5 "(%[c3],%[rs],2)"
// A row of the C tile is 128 bytes: up to three cache lines, asked for in writable state.
#define FC_PREFETCH_ROW(r) "prefetchw " r "\n\t" "prefetchw 64" r "\n\t" "prefetchw 124" r "\n\t"
#define FC_PREFETCH_C                                                                  \
  FC_PREFETCH_ROW(FC_ROW0) FC_PREFETCH_ROW(FC_ROW1) FC_PREFETCH_ROW(FC_ROW2)          \
  FC_PREFETCH_ROW(FC_ROW3) FC_PREFETCH_ROW(FC_ROW4) FC_PREFETCH_ROW(FC_ROW5)
#define FC_ZERO_ACC                                                                         \
  "vpxord %%zmm0, %%zmm0, %%zmm0\n\t" "vpxord %%zmm1, %%zmm1, %%zmm1\n\t"                  \
  "vpxord %%zmm2, %%zmm2, %%zmm2\n\t" "vpxord %%zmm3, %%zmm3, %%zmm3\n\t"                  \
  "vpxord %%zmm4, %%zmm4, %%zmm4\n\t" "vpxord %%zmm5, %%zmm5, %%zmm5\n\t"                  \
  "vpxord %%zmm6, %%zmm6, %%zmm6\n\t" "vpxord %%zmm7, %%zmm7, %%zmm7\n\t"                  \
  "vpxord %%zmm8, %%zmm8, %%zmm8\n\t" "vpxord %%zmm9, %%zmm9, %%zmm9\n\t"                  \
  "vpxord %%zmm10, %%zmm10, %%zmm10\n\t" "vpxord %%zmm11, %%zmm11, %%zmm11\n\t"
// c = acc (store) or c = c + acc (add: the order of the sum of the C++ paths below).
#define FC_STORE_ROW(r, lo, hi)                                                        \
  "vmovups %%zmm" #lo ", " r "\n\t" "vmovups %%zmm" #hi ", 64" r "\n\t"
#define FC_ADD_ROW(r, lo, hi)                                                          \
  "vaddps " r ", %%zmm" #lo ", %%zmm" #lo "\n\t" "vaddps 64" r ", %%zmm" #hi ", %%zmm" #hi "\n\t" \
  FC_STORE_ROW(r, lo, hi)
#define FC_STORE_C                                                                     \
  FC_STORE_ROW(FC_ROW0, 0, 1) FC_STORE_ROW(FC_ROW1, 2, 3) FC_STORE_ROW(FC_ROW2, 4, 5)  \
  FC_STORE_ROW(FC_ROW3, 6, 7) FC_STORE_ROW(FC_ROW4, 8, 9) FC_STORE_ROW(FC_ROW5, 10, 11)
#define FC_ADD_C                                                                       \
  FC_ADD_ROW(FC_ROW0, 0, 1) FC_ADD_ROW(FC_ROW1, 2, 3) FC_ADD_ROW(FC_ROW2, 4, 5)        \
  FC_ADD_ROW(FC_ROW3, 6, 7) FC_ADD_ROW(FC_ROW4, 8, 9) FC_ADD_ROW(FC_ROW5, 10, 11)

// Where the k loop reads A: packed panels, rows a_rs apart or one pointer per row (a_rows), the
// last two in place; kStepsBRows: A's MR values of step k at a + k * a_cs (a packed panel: a_cs
// = MR; in place: unit row stride) and B read in place, rows b_rs apart.
enum class AFrom { kPanel, kRows, kRowPointers, kStepsBRows };

// The full 6 x 32 tile with unit column stride and no bias, all in registers.
template <bool kAccumulate, AFrom kA>
void micro_full(int64_t kc, const float* a, int64_t a_rs, const float* const* a_rows, const float* b, float* c,
                int64_t rs, int64_t b_rs = 0, int64_t a_cs = 0) {
  int64_t k = kc;
  float* c3 = c + 3 * rs;
  const int64_t rs_bytes = rs * static_cast<int64_t>(sizeof(float));
  const int64_t bs = b_rs * static_cast<int64_t>(sizeof(float)), bs8 = 8 * bs;
  const int64_t as = a_cs * static_cast<int64_t>(sizeof(float));
  if constexpr (kA == AFrom::kStepsBRows) {
    if constexpr (kAccumulate) {
      asm volatile(FC_PREFETCH_C FC_ZERO_ACC FC_GEMM_K_LOOP_B_ROWS FC_ADD_C
                   : [a] "+r"(a), [b] "+r"(b), [k] "+r"(k)
                   : [as] "r"(as), [bs] "r"(bs), [bs8] "r"(bs8), [c0] "r"(c), [c3] "r"(c3), [rs] "r"(rs_bytes)
                   : FC_GEMM_CLOBBERS);
    } else {
      asm volatile(FC_PREFETCH_C FC_ZERO_ACC FC_GEMM_K_LOOP_B_ROWS FC_STORE_C
                   : [a] "+r"(a), [b] "+r"(b), [k] "+r"(k)
                   : [as] "r"(as), [bs] "r"(bs), [bs8] "r"(bs8), [c0] "r"(c), [c3] "r"(c3), [rs] "r"(rs_bytes)
                   : FC_GEMM_CLOBBERS);
    }
  } else if constexpr (kA == AFrom::kRowPointers) {
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

#define FC_ACC_MOVES(MOVE)                                                                 \
  MOVE(0, 0) MOVE(1, 64) MOVE(2, 128) MOVE(3, 192) MOVE(4, 256) MOVE(5, 320) MOVE(6, 384)  \
  MOVE(7, 448) MOVE(8, 512) MOVE(9, 576) MOVE(10, 640) MOVE(11, 704)
#define FC_LOAD_ONE(r, off) "vmovaps " #off "(%[acc]), %%zmm" #r "\n\t"
#define FC_SAVE_ONE(r, off) "vmovaps %%zmm" #r ", " #off "(%[acc])\n\t"
#define FC_LOAD_ACC FC_ACC_MOVES(FC_LOAD_ONE)
#define FC_SAVE_ACC FC_ACC_MOVES(FC_SAVE_ONE)

// Edge tiles, bias, strided columns: the accumulators start from and end in acc, then go to C.
template <AFrom kA>
void micro_general(int64_t kc, const float* a, int64_t a_rs, const float* const* a_rows, const float* b,
                   float* c, int64_t rs, int64_t cs, int m, int n, bool accumulate, const float* bias,
                   bool bias_per_row, int64_t b_rs = 0, int64_t a_cs = 0) {
  alignas(64) __m512 acc[MR][2];
  const __mmask16 lo = first_lanes(n), hi = first_lanes(n - 16);
  if (bias != nullptr && bias_per_row) {
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_set1_ps(i < m ? bias[i] : 0.0f);
  } else if (bias != nullptr) {
    const __m512 b0 = _mm512_maskz_loadu_ps(lo, bias), b1 = _mm512_maskz_loadu_ps(hi, bias + 16);
    for (int i = 0; i < MR; ++i) {
      acc[i][0] = b0;
      acc[i][1] = b1;
    }
  } else {
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  }
  if (kc > 0) {
    int64_t k = kc;
    if constexpr (kA == AFrom::kStepsBRows) {
      const int64_t bs = b_rs * static_cast<int64_t>(sizeof(float)), bs8 = 8 * bs;
      const int64_t as = a_cs * static_cast<int64_t>(sizeof(float));
      asm volatile(FC_LOAD_ACC FC_GEMM_K_LOOP_B_ROWS FC_SAVE_ACC
                   : [a] "+r"(a), [b] "+r"(b), [k] "+r"(k)
                   : [as] "r"(as), [bs] "r"(bs), [bs8] "r"(bs8), [acc] "r"(&acc[0][0])
                   : FC_GEMM_CLOBBERS);
    } else if constexpr (kA == AFrom::kRowPointers) {
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
  if (cs == 1) {  // masked rows (all lanes on a full tile)
    for (int i = 0; i < m; ++i) {
      float* ci = c + i * rs;
      if (accumulate) {
        acc[i][0] = _mm512_add_ps(_mm512_maskz_loadu_ps(lo, ci), acc[i][0]);
        acc[i][1] = _mm512_add_ps(_mm512_maskz_loadu_ps(hi, ci + 16), acc[i][1]);
      }
      _mm512_mask_storeu_ps(ci, lo, acc[i][0]);
      _mm512_mask_storeu_ps(ci + 16, hi, acc[i][1]);
    }
  } else {  // strided columns: through a small buffer
    alignas(64) float t[MR][NR];
    for (int i = 0; i < MR; ++i) {
      _mm512_store_ps(t[i], acc[i][0]);
      _mm512_store_ps(t[i] + 16, acc[i][1]);
    }
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < n; ++j) {
        float& e = c[i * rs + j * cs];
        e = accumulate ? e + t[i][j] : t[i][j];
      }
    }
  }
}

void micro_6x32(int64_t kc, const float* a, const float* b, float* c, int64_t rs, int64_t cs, int m,
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

void micro_6x32_rows(int64_t kc, const float* a, int64_t a_rs, const float* b, float* c, int64_t rs,
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

void micro_6x32_ptrs(int64_t kc, const float* const* a_rows, const float* b, float* c, int64_t rs,
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

// micro with B read in place: b[k * b_rs + j] for j < NR (a full panel's columns are read;
// only n are stored), and A's MR values of step k at a + k * a_cs (all MR are read).
void micro_6x32_b_rows(int64_t kc, const float* a, int64_t a_cs, const float* b, int64_t b_rs, float* c,
                       int64_t rs, int64_t cs, int m, int n, bool accumulate, const float* bias,
                       bool bias_per_row) {
  if (m == MR && n == NR && cs == 1 && bias == nullptr && kc > 0) {
    if (accumulate) {
      micro_full<true, AFrom::kStepsBRows>(kc, a, 0, nullptr, b, c, rs, b_rs, a_cs);
    } else {
      micro_full<false, AFrom::kStepsBRows>(kc, a, 0, nullptr, b, c, rs, b_rs, a_cs);
    }
    return;
  }
  micro_general<AFrom::kStepsBRows>(kc, a, 0, nullptr, b, c, rs, cs, m, n, accumulate, bias, bias_per_row,
                                    b_rs, a_cs);
}

// dst[k * NR + j] = src[k * rs + j * cs] for j < n (zero for n <= j < NR), k < kc.
void pack_b(const float* src, int64_t rs, int64_t cs, int n, int64_t kc, float* dst) {
  int64_t k = 0;
  const __mmask16 lo = first_lanes(n), hi = first_lanes(n - 16);
  if (cs == 1) {  // NR contiguous elements per step (masked: nothing past column n is read)
    for (; k < kc; ++k) {
      // the line of the panel 4 to the right, read next by the drivers (see the AVX2 unit)
      _mm_prefetch(reinterpret_cast<const char*>(src + k * rs + 4 * NR), _MM_HINT_T1);
      _mm512_storeu_ps(dst + k * NR, _mm512_maskz_loadu_ps(lo, src + k * rs));
      _mm512_storeu_ps(dst + k * NR + 16, _mm512_maskz_loadu_ps(hi, src + k * rs + 16));
    }
    return;
  }
  if (cs == 2) {  // every other element (1x1 stride 2): 2n - 1 floats read, the even kept
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __mmask16 m0 = first_lanes(2 * n - 1), m1 = first_lanes(2 * n - 17),
                    m2 = first_lanes(2 * n - 33), m3 = first_lanes(2 * n - 49);
    for (; k < kc; ++k) {
      const float* s = src + k * rs;
      const __m512 x0 = _mm512_maskz_loadu_ps(m0, s), x1 = _mm512_maskz_loadu_ps(m1, s + 16);
      const __m512 x2 = _mm512_maskz_loadu_ps(m2, s + 32), x3 = _mm512_maskz_loadu_ps(m3, s + 48);
      _mm512_storeu_ps(dst + k * NR, _mm512_permutex2var_ps(x0, even, x1));
      _mm512_storeu_ps(dst + k * NR + 16, _mm512_permutex2var_ps(x2, even, x3));
    }
    return;
  }
  if (rs == 1) {  // columns contiguous in k: 8 x 8 transposes, four per 8 steps
    for (; k + 8 <= kc; k += 8) {
      for (int h = 0; h < NR / 8; ++h) {
        __m256 r[8];
        const float* sh = src + h * 8 * cs + k;
        for (int j = 0; j < 8; ++j) r[j] = h * 8 + j < n ? _mm256_loadu_ps(sh + j * cs) : _mm256_setzero_ps();
        ::fastconv::cpu::avx2::transpose8(r);
        for (int s = 0; s < 8; ++s) _mm256_storeu_ps(dst + (k + s) * NR + h * 8, r[s]);
      }
    }
  }
  for (; k < kc; ++k) {
    for (int j = 0; j < NR; ++j) dst[k * NR + j] = j < n ? src[k * rs + j * cs] : 0.0f;
  }
}

}  // namespace

const Kernels& avx512_kernels() {
  static const Kernels k{MR,
                         NR,
                         &micro_6x32,
                         avx2_kernels().pack_a,  // A's panels: MR rows, as in the AVX2 unit
                         &pack_b,
                         &micro_6x32_rows,
                         avx2_kernels().pack_a_panels,
                         &micro_6x32_ptrs,
                         &micro_6x32_b_rows};
  return k;
}

}  // namespace fastconv::cpu::gemm

#pragma GCC pop_options
