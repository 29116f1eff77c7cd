// The kernels of the Winograd weight gradient (cpu/conv2d_fast_winograd_wgrad_kernels.h) for
// AVX-512F, fp32 (16 per zmm register) and fp64 (8); the code is
// conv2d_fast_winograd_wgrad_impl.inc. Nothing but <immintrin.h> is included under the target
// pragma (see conv2d_fast_winograd_avx2.cpp).
#include <immintrin.h>

#include "cpu/conv2d_fast_winograd_wgrad_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")

namespace fastconv::cpu::wino {
namespace {

// The vector operations per element type (see the .inc).
struct F32 {
  using T = float;
  using V = __m512;
  static constexpr int W = 16;
  static constexpr bool kWide = true;
  static V load(const T* p) { return _mm512_loadu_ps(p); }
  static void store(T* p, V v) { _mm512_storeu_ps(p, v); }
  static V bcast(const T* p) { return _mm512_set1_ps(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V zero() { return _mm512_setzero_ps(); }
};

struct F64 {
  using T = double;
  using V = __m512d;
  static constexpr int W = 8;
  static constexpr bool kWide = true;
  static V load(const T* p) { return _mm512_loadu_pd(p); }
  static void store(T* p, V v) { _mm512_storeu_pd(p, v); }
  static V bcast(const T* p) { return _mm512_set1_pd(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V zero() { return _mm512_setzero_pd(); }
};

#include "cpu/conv2d_fast_winograd_wgrad_impl.inc"

}  // namespace

const WgradKernels<float>& avx512_wgrad_kernels_f32(int m, int stride) { return kernels_for<F32>(m, stride); }
const WgradKernels<double>& avx512_wgrad_kernels_f64(int m, int stride) { return kernels_for<F64>(m, stride); }

}  // namespace fastconv::cpu::wino

#pragma GCC pop_options
