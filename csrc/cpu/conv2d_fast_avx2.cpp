// The fast-convolution micro-kernels (conv2d_fast_ukernels.h) for AVX2 + FMA: 8 floats per
// ymm register, tiles of 6 pixels x 16 channels (12 accumulators + 2 weight vectors + 1
// broadcast of the 16 ymm registers).
#include <immintrin.h>

#include <algorithm>

#include "cpu/conv2d_fast_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

#include "cpu/avx2_transpose8.h"

namespace fastconv::cpu::fastk {
namespace {

struct VecAvx2 {
  using reg = __m256;
  using mask = __m256i;
  static constexpr int W = 8;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static reg bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  // Lanes [0, n) set.
  static mask first(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  // Masked-off lanes are neither read nor written (no fault past the end of an array).
  static reg load_masked(const float* p, mask m) { return _mm256_maskload_ps(p, m); }
  static void store_masked(float* p, mask m, reg v) { _mm256_maskstore_ps(p, m, v); }
};

}  // namespace
}  // namespace fastconv::cpu::fastk

#define FC_UK_NS avx2
#include "cpu/conv2d_fast_ukernels.h"

namespace fastconv::cpu::fastk {

namespace {

using ::fastconv::cpu::avx2::transpose8;

// Fewer than 8 rows into a dense destination (dst_stride == rows: the NHWC staging of an NCHW
// input with C < 8, the first layers): 8 columns at a time, the rows loaded into an 8 x 8 block
// whose other rows are zero, transposed, and its 8 rows stored as whole vectors `rows` floats
// apart, each overwriting the zeros its predecessor left past its `rows` values. The last store
// of a group spills 8 - rows zeros into the next group's place, so this stops 16 columns before
// the end and the scalar loop writes the rest after it. (ResNet-50 conv1 and AlexNet conv1 at
// batch 1 staged their 3 x 224 x 224 input one float at a time: a tenth of the NCHW forward.)
// Returns the columns done.
int64_t transpose_few_rows_dense(const float* src, int64_t src_stride, float* dst, int64_t rows,
                                 int64_t cols) {
  int64_t j0 = 0;
  for (; j0 + 16 <= cols; j0 += 8) {
    __m256 r[8];
    for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm256_loadu_ps(src + i * src_stride + j0) : _mm256_setzero_ps();
    transpose8(r);
    for (int j = 0; j < 8; ++j) _mm256_storeu_ps(dst + (j0 + j) * rows, r[j]);
  }
  return j0;
}

}  // namespace

void transpose_avx2(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                    int64_t rows, int64_t cols) {
  if (rows > 0 && rows < 8 && dst_stride == rows) {
    const int64_t done = transpose_few_rows_dense(src, src_stride, dst, rows, cols);
    for (int64_t j = done; j < cols; ++j) {
      for (int64_t i = 0; i < rows; ++i) dst[j * rows + i] = src[i * src_stride + j];
    }
    return;
  }
  const int64_t rows8 = rows - rows % 8, cols8 = cols - cols % 8;
  // Columns in chunks whose destination rows (chunk x rows floats, 16 KiB) stay in L1 while
  // every group of 8 source rows fills its part: each destination line is then written whole
  // from L1 instead of once per group of 8 rows, and each source line is read in one go. Packing
  // a block of 32 output channels of NCHW weights (32 rows of 9 x 28 floats per piece) went from
  // 4 sweeps over 32 KiB of destination to one: ResNet-50 res5b_branch2b NCHW at batch 1, where
  // packing is a quarter of the time, 2.46 -> 1.98 ms (2 threads, best of 50, interleaved).
  // The source lines of the next chunk are prefetched while this one is transposed: the
  // rows are far apart (a weight's output channels), which the hardware prefetcher does not
  // follow (res5b_branch2b channels_last at batch 1, forward: 1.56 -> 1.43 ms and 1.58 ->
  // 1.48 ms in two runs, 2 threads, best of 10 interleaved).
  const int64_t chunk = std::max<int64_t>(8, ((16 << 10) / (4 * std::max<int64_t>(rows, 1))) & ~int64_t{7});
  for (int64_t c0 = 0; c0 < cols8; c0 += chunk) {
    const int64_t c1 = std::min(cols8, c0 + chunk);
    for (int64_t i0 = 0; i0 < rows8; i0 += 8) {
      for (int64_t j0 = c0; j0 < c1; j0 += 8) {
        if ((j0 & 15) == 0 && j0 + chunk < cols8) {  // one prefetch per line, a chunk ahead
          for (int i = 0; i < 8; ++i) __builtin_prefetch(src + (i0 + i) * src_stride + j0 + chunk);
        }
        __m256 r[8];
        for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + (i0 + i) * src_stride + j0);
        transpose8(r);
        for (int j = 0; j < 8; ++j) _mm256_storeu_ps(dst + (j0 + j) * dst_stride + i0, r[j]);
      }
    }
  }
  for (int64_t i0 = 0; i0 < rows8; i0 += 8) {
    for (int64_t j = cols8; j < cols; ++j) {  // column tail
      for (int64_t i = i0; i < i0 + 8; ++i) dst[j * dst_stride + i] = src[i * src_stride + j];
    }
  }
  for (int64_t i = rows8; i < rows; ++i) {  // row tail
    for (int64_t j = 0; j < cols; ++j) dst[j * dst_stride + i] = src[i * src_stride + j];
  }
}

const Kernels& avx2_kernels() {
  static const Kernels k{"avx2", 16, 6, &avx2::conv_row<VecAvx2, 6>, &avx2::wgrad_tile<VecAvx2, 6>,
                         &avx2::depthwise_row<VecAvx2, 4>, &avx2::pix_row<VecAvx2, 6>,
                         &transpose_avx2};
  return k;
}

}  // namespace fastconv::cpu::fastk

#pragma GCC pop_options
