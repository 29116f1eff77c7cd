// The 8 x 8 float transpose in AVX2 registers, shared by the AVX2 translation units
// (conv2d_fast_avx2.cpp, conv2d_fast_gemm_avx2.cpp). Include it after
// `#pragma GCC target("avx2,...")`: the intrinsics need that target enabled.
#pragma once
#include <immintrin.h>

namespace fastconv::cpu::avx2 {

// Rows r[0..8) of an 8 x 8 tile, transposed in registers. (static: each AVX2 unit gets its own
// copy, compiled for its own target.)
static inline void transpose8(__m256 (&r)[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // rows 0-3 and 4-7
    __m256* tt = t + 4 * h;
    u[4 * h + 0] = _mm256_shuffle_ps(tt[0], tt[2], 0x44);
    u[4 * h + 1] = _mm256_shuffle_ps(tt[0], tt[2], 0xEE);
    u[4 * h + 2] = _mm256_shuffle_ps(tt[1], tt[3], 0x44);
    u[4 * h + 3] = _mm256_shuffle_ps(tt[1], tt[3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
    r[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
  }
}

}  // namespace fastconv::cpu::avx2
