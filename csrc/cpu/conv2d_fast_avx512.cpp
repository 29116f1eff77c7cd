// The fast-convolution micro-kernels (conv2d_fast_ukernels.h) for AVX-512F: 16 floats per zmm
// register, tiles of 12 pixels x 32 channels (24 accumulators + 2 weight vectors + 1
// broadcast of the 32 zmm registers).
#include <immintrin.h>

#include "cpu/conv2d_fast_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx512f")

namespace fastconv::cpu::fastk {
namespace {

struct VecAvx512 {
  using reg = __m512;
  using mask = __mmask16;
  static constexpr int W = 16;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg bcast(const float* p) { return _mm512_set1_ps(*p); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static mask first(int n) { return static_cast<mask>((1u << n) - 1u); }
  static reg load_masked(const float* p, mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store_masked(float* p, mask m, reg v) { _mm512_mask_storeu_ps(p, m, v); }
};

}  // namespace
}  // namespace fastconv::cpu::fastk

#define FC_UK_NS avx512
#include "cpu/conv2d_fast_ukernels.h"

namespace fastconv::cpu::fastk {

const Kernels& avx512_kernels() {
  static const Kernels k{"avx512", 32, 12, &avx512::conv_row<VecAvx512, 12>,
                         &avx512::wgrad_tile<VecAvx512, 12>, &avx512::depthwise_row<VecAvx512, 8>,
                         &avx512::pix_row<VecAvx512, 12>, &transpose_avx2};
  return k;
}

}  // namespace fastconv::cpu::fastk

#pragma GCC pop_options
