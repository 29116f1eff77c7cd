// See layout_transpose.h: the transpose of 4-byte elements (float, int32). 8x8 blocks go
// through registers as three rounds of shuffles (GCC vector extensions: unpack, 64-bit pair
// shuffle, 128-bit lane swap), one clone per instruction set (GCC target_clones: AVX2 and
// portable; the running CPU picks at load time); on an AVX-512 CPU transpose_32bit moves 16x16
// blocks in zmm registers instead (ROI Align mask_p3's NCHW forward at 2 threads, best of 10
// interleaved: 8.2 -> 7.2 ms; ROI Pool's NCHW rows 0-4% faster). Edges that are not whole
// blocks are moved one element at a time. Elements are only loaded, shuffled and stored as bits (no
// arithmetic), so int32 data goes through the same code unchanged.
#include "cpu/layout_transpose.h"

#include <immintrin.h>

#include <cstdlib>
#include <cstring>

namespace fastconv::cpu {
namespace {

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
// f32x8 at any 4-byte-aligned address, for loads and stores. (std::memcpy into an f32x8 was
// inlined as two 16-byte moves through the stack in the AVX2 clone, and the 32-byte reload
// that followed stalled on store forwarding: 1/3 of the transpose's time; ROI Align mask_p3's
// NCHW forward went 12.2 -> 9.0 ms at 2 threads with these loads.)
typedef float f32x8_unaligned __attribute__((vector_size(32), aligned(4), may_alias));

__attribute__((always_inline)) inline f32x8 load8(const float* p) {
  return *reinterpret_cast<const f32x8_unaligned*>(p);
}
__attribute__((always_inline)) inline void store8(float* p, const f32x8& v) {
  *reinterpret_cast<f32x8_unaligned*>(p) = v;
}

// out[j][i] = src[i * src_ld + j] for i, j < 8: column j of the block in register j.
__attribute__((always_inline)) inline void transpose8x8_registers(const float* src,
                                                                  int64_t src_ld, f32x8 out[8]) {
  f32x8 r[8];
  for (int i = 0; i < 8; ++i) r[i] = load8(src + i * src_ld);
  // pairs of rows interleaved: t[2p] = (r0[0] r1[0] r0[1] r1[1] | r0[4] r1[4] r0[5] r1[5]) ...
  f32x8 t[8];
  for (int p = 0; p < 4; ++p) {
    t[2 * p] = __builtin_shuffle(r[2 * p], r[2 * p + 1], i32x8{0, 8, 1, 9, 4, 12, 5, 13});
    t[2 * p + 1] = __builtin_shuffle(r[2 * p], r[2 * p + 1], i32x8{2, 10, 3, 11, 6, 14, 7, 15});
  }
  // four rows of one column per 128-bit lane: u[q] holds columns q and q + 4 of rows 0-3,
  // u[4 + q] the same of rows 4-7
  f32x8 u[8];
  for (int h = 0; h < 2; ++h) {  // rows 0-3, rows 4-7
    const f32x8* s = t + 4 * h;
    u[4 * h + 0] = __builtin_shuffle(s[0], s[2], i32x8{0, 1, 8, 9, 4, 5, 12, 13});
    u[4 * h + 1] = __builtin_shuffle(s[0], s[2], i32x8{2, 3, 10, 11, 6, 7, 14, 15});
    u[4 * h + 2] = __builtin_shuffle(s[1], s[3], i32x8{0, 1, 8, 9, 4, 5, 12, 13});
    u[4 * h + 3] = __builtin_shuffle(s[1], s[3], i32x8{2, 3, 10, 11, 6, 7, 14, 15});
  }
  for (int q = 0; q < 4; ++q) {
    out[q] = __builtin_shuffle(u[q], u[4 + q], i32x8{0, 1, 2, 3, 8, 9, 10, 11});
    out[q + 4] = __builtin_shuffle(u[q], u[4 + q], i32x8{4, 5, 6, 7, 12, 13, 14, 15});
  }
}

// dst[j * dst_ld + i] = src[i * src_ld + j] for i, j < 8.
__attribute__((always_inline)) inline void transpose8x8(const float* src, int64_t src_ld,
                                                        float* dst, int64_t dst_ld) {
  f32x8 t[8];
  transpose8x8_registers(src, src_ld, t);
  for (int j = 0; j < 8; ++j) store8(dst + j * dst_ld, t[j]);
}

// Whether any of the n flags at f is set.
__attribute__((always_inline)) inline bool any_set(const uint8_t* f, int64_t n) {
  uint8_t any = 0;
  for (int64_t i = 0; i < n; ++i) any |= f[i];
  return any != 0;
}

// 32 bytes at p (16-byte aligned) with non-temporal stores (SSE: both clones have them).
__attribute__((always_inline)) inline void stream32(float* p, const f32x8& v) {
  const __m128 lo = __builtin_shufflevector(v, v, 0, 1, 2, 3);
  const __m128 hi = __builtin_shufflevector(v, v, 4, 5, 6, 7);
  _mm_stream_ps(p, lo);
  _mm_stream_ps(p + 4, hi);
}

// One element's 4 bytes, unchanged (the data may be int32 viewed through float pointers).
__attribute__((always_inline)) inline void move(const float* src, float* dst) {
  std::memcpy(dst, src, sizeof(float));
}


// dst[j * dst_ld + i] = src[i * src_ld + j] for i, j < 16: four rounds of shuffles (32-bit
// pairs of rows, 64-bit pairs, then two rounds of 128-bit lanes), 64 for 256 elements where
// 8x8 blocks take 96.
__attribute__((target("avx512f"), always_inline)) inline void transpose16x16(
    const float* src, int64_t src_ld, float* dst, int64_t dst_ld) {
  __m512 r[16], t[16], u[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * src_ld);
  for (int p = 0; p < 8; ++p) {  // lane L of t[2p]: r2p[4L], r2p+1[4L], r2p[4L+1], r2p+1[4L+1]
    t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
    t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
  }
  for (int q = 0; q < 4; ++q) {  // lane L of u[4q + m]: column 4L + m of rows 4q .. 4q + 3
    u[4 * q + 0] = _mm512_shuffle_ps(t[4 * q], t[4 * q + 2], 0x44);
    u[4 * q + 1] = _mm512_shuffle_ps(t[4 * q], t[4 * q + 2], 0xEE);
    u[4 * q + 2] = _mm512_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0x44);
    u[4 * q + 3] = _mm512_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0xEE);
  }
  for (int m = 0; m < 4; ++m) {
    // lanes of a0: columns m, 8 + m of rows 0-3, then of rows 4-7 (a1: 4 + m, 12 + m); b: 8-15
    const __m512 a0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88);
    const __m512 a1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xDD);
    const __m512 b0 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);
    const __m512 b1 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xDD);
    _mm512_storeu_ps(dst + m * dst_ld, _mm512_shuffle_f32x4(a0, b0, 0x88));
    _mm512_storeu_ps(dst + (8 + m) * dst_ld, _mm512_shuffle_f32x4(a0, b0, 0xDD));
    _mm512_storeu_ps(dst + (4 + m) * dst_ld, _mm512_shuffle_f32x4(a1, b1, 0x88));
    _mm512_storeu_ps(dst + (12 + m) * dst_ld, _mm512_shuffle_f32x4(a1, b1, 0xDD));
  }
}

// transpose_32bit in 8x8 blocks (AVX2 and portable clones).
__attribute__((target_clones("avx2", "default"))) void transpose_blocks8(
    const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows, int64_t cols) {
  for (int64_t J = 0; J < cols; J += kTransposePanelColumns) {
    for (int64_t I = 0; I < rows; I += kTransposePanelRows) {
      const int64_t i1 = std::min(rows, I + kTransposePanelRows);
      const int64_t i8 = I + (i1 - I) / 8 * 8;
      const int64_t J1 = std::min(cols, J + kTransposePanelColumns);
      for (int64_t j0 = J; j0 < J1; j0 += kTransposeColumns) {
        const int64_t j1 = std::min(cols, j0 + kTransposeColumns);
        const int64_t j8 = j0 + (j1 - j0) / 8 * 8;
        for (int64_t i = I; i < i8; i += 8) {
          for (int64_t j = j0; j < j8; j += 8)
            transpose8x8(src + i * src_ld + j, src_ld, dst + j * dst_ld + i, dst_ld);
          for (int64_t ii = i; ii < i + 8; ++ii)  // columns past the last whole block
            for (int64_t j = j8; j < j1; ++j) move(src + ii * src_ld + j, dst + j * dst_ld + ii);
        }
        for (int64_t i = i8; i < i1; ++i)  // rows past the last whole block
          for (int64_t j = j0; j < j1; ++j) move(src + i * src_ld + j, dst + j * dst_ld + i);
      }
    }
  }
}

// transpose_32bit in 16x16 blocks, in the same panels (16 rows x 512 columns); the rows and
// columns past the last whole block go through transpose_blocks8.
__attribute__((target("avx512f"))) void transpose_blocks16(
    const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows, int64_t cols) {
  const int64_t rows16 = rows / 16 * 16, cols16 = cols / 16 * 16;
  for (int64_t J = 0; J < cols16; J += kTransposePanelColumns) {
    const int64_t J1 = std::min(cols16, J + kTransposePanelColumns);
    for (int64_t i = 0; i < rows16; i += 16)
      for (int64_t j = J; j < J1; j += 16)
        transpose16x16(src + i * src_ld + j, src_ld, dst + j * dst_ld + i, dst_ld);
  }
  transpose_blocks8(src + cols16, src_ld, dst + cols16 * dst_ld, dst_ld, rows16, cols - cols16);
  transpose_blocks8(src + rows16 * src_ld, src_ld, dst + rows16, dst_ld, rows - rows16, cols);
}

// AVX-512 where the CPU has it, unless FASTCONV_CPU_KERNELS asks for avx2 or generic code (as
// for the conv and ROI kernels); read once.
bool blocks16() {
  static const bool use = [] {
    const char* env = std::getenv("FASTCONV_CPU_KERNELS");
    const bool narrower = env != nullptr && (std::strcmp(env, "avx2") == 0 || std::strcmp(env, "generic") == 0);
    return __builtin_cpu_supports("avx512f") && !narrower;
  }();
  return use;
}

}  // namespace

void transpose_32bit(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows,
                     int64_t cols) {
  if (blocks16()) {
    transpose_blocks16(src, src_ld, dst, dst_ld, rows, cols);
  } else {
    transpose_blocks8(src, src_ld, dst, dst_ld, rows, cols);
  }
}

}  // namespace fastconv::cpu

namespace fastconv::cpu {

__attribute__((target_clones("avx2", "default"))) void transpose_32bit_streaming(
    const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows, int64_t cols,
    const uint8_t* nonzero) {
  constexpr int64_t kLine = 16;  // floats per 64-byte line
  if (dst_ld % kLine != 0 || reinterpret_cast<uintptr_t>(dst) % sizeof(float) != 0) {
    transpose_32bit(src, src_ld, dst, dst_ld, rows, cols);  // rows would not share alignment
    return;
  }
  const f32x8 zero = {};
  // elements before the first whole line of every destination row, and the whole lines
  const int64_t head = std::min<int64_t>(
      rows, (kLine - reinterpret_cast<uintptr_t>(dst) / sizeof(float) % kLine) % kLine);
  const int64_t body = head + (rows - head) / kLine * kLine;
  const int64_t cols8 = cols / 8 * 8;
  for (int64_t j = 0; j < cols8; j += 8) {
    for (int64_t i = head; i < body; i += kLine) {
      if (nonzero != nullptr && !any_set(nonzero + i, kLine)) {
        for (int q = 0; q < 8; ++q) {
          float* line = dst + (j + q) * dst_ld + i;
          stream32(line, zero);
          stream32(line + 8, zero);
        }
        continue;
      }
      f32x8 a[8], b[8];  // rows i .. i + 7 and i + 8 .. i + 15 of source columns j .. j + 7
      transpose8x8_registers(src + i * src_ld + j, src_ld, a);
      transpose8x8_registers(src + (i + 8) * src_ld + j, src_ld, b);
      for (int q = 0; q < 8; ++q) {  // one destination line after the other, written whole
        float* line = dst + (j + q) * dst_ld + i;
        stream32(line, a[q]);
        stream32(line + 8, b[q]);
      }
    }
  }
  // the edges: rows before and after the whole lines, columns past the last 8
  transpose_32bit(src, src_ld, dst, dst_ld, head, cols8);
  transpose_32bit(src + body * src_ld, src_ld, dst + body, dst_ld, rows - body, cols8);
  transpose_32bit(src + cols8, src_ld, dst + cols8 * dst_ld, dst_ld, rows, cols - cols8);
  _mm_sfence();  // the streamed lines reach memory before other threads read them
}

}  // namespace fastconv::cpu

namespace fastconv::cpu {

__attribute__((target_clones("avx2", "default"))) void transpose_32bit_dense_streaming(
    const float* src, int64_t src_ld, float* dst, int64_t rows, int64_t cols) {
  constexpr int64_t kGroup = 16;     // columns per group: rows whole lines of the destination
  constexpr int64_t kMaxRows = 256;  // the group's buffer: 16 KB on the stack
  if (reinterpret_cast<uintptr_t>(dst) % 64 != 0 || rows > kMaxRows) {
    transpose_32bit(src, src_ld, dst, rows, rows, cols);
    return;
  }
  alignas(64) float group[kGroup * kMaxRows];
  const int64_t cols16 = cols / kGroup * kGroup;
  for (int64_t j = 0; j < cols16; j += kGroup) {
    transpose_32bit(src + j, src_ld, group, rows, rows, kGroup);
    float* line = dst + j * rows;
    for (int64_t e = 0; e < kGroup * rows; e += 8) {
      stream32(line + e, load8(group + e));
    }
  }
  transpose_32bit(src + cols16, src_ld, dst + cols16 * rows, rows, rows, cols - cols16);
  _mm_sfence();  // the streamed lines reach memory before other threads read them
}

}  // namespace fastconv::cpu
