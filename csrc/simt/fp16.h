// fp16/bf16 for emulated kernels (SIMT.md 6): CUDA 13's cuda_fp16.h/cuda_bf16.h compile under
// g++ with conversions, basic arithmetic, comparisons and half2 packing usable on the host;
// the device-only functions below are supplied here, computed in float and rounded once
// (a fused __hfma can therefore differ from the GPU by double rounding: use tolerances).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

inline __half __hfma(__half a, __half b, __half c) {
  return __float2half_rn(std::fma(__half2float(a), __half2float(b), __half2float(c)));
}
inline __half __hfma_relu(__half a, __half b, __half c) {
  const float r = std::fma(__half2float(a), __half2float(b), __half2float(c));
  return __float2half_rn(r != r ? r : r < 0.0f ? 0.0f : r);
}
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  return __halves2half2(__hfma(__low2half(a), __low2half(b), __low2half(c)),
                        __hfma(__high2half(a), __high2half(b), __high2half(c)));
}
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  return __float2bfloat16_rn(
      std::fma(__bfloat162float(a), __bfloat162float(b), __bfloat162float(c)));
}
inline int __half2int_rn(__half a) { return int(std::nearbyint(__half2float(a))); }

#define SIMT_HALF_MATH(name, expr)                                                        \
  inline __half name(__half h) {                                                          \
    const float x = __half2float(h);                                                      \
    return __float2half_rn(expr);                                                         \
  }                                                                                       \
  inline __nv_bfloat16 name(__nv_bfloat16 h) {                                            \
    const float x = __bfloat162float(h);                                                  \
    return __float2bfloat16_rn(expr);                                                     \
  }                                                                                       \
  inline __half2 name(__half2 h) { return __halves2half2(name(__low2half(h)), name(__high2half(h))); }
SIMT_HALF_MATH(hexp, std::exp(x))
SIMT_HALF_MATH(hlog, std::log(x))
SIMT_HALF_MATH(hsqrt, std::sqrt(x))
SIMT_HALF_MATH(hrsqrt, 1.0f / std::sqrt(x))
SIMT_HALF_MATH(hrcp, 1.0f / x)
SIMT_HALF_MATH(hfloor, std::floor(x))
SIMT_HALF_MATH(htrunc, std::trunc(x))
SIMT_HALF_MATH(hrint, std::nearbyint(x))
#undef SIMT_HALF_MATH
