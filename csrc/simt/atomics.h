// CUDA device atomics (SIMT.md 6) with GCC __atomic builtins, relaxed like CUDA's; each returns
// the old value. Float and 16-bit float additions are CAS loops on the bit pattern. Fibers are
// never preempted, so these are atomic with respect to other emulated threads by construction;
// the builtins keep them correct for tools (TSan) and document intent.
#pragma once
#include <cstring>
#include <type_traits>

namespace simt {
template <typename T, typename Bits, typename F>
T cas_loop(T* address, F update) {
  static_assert(sizeof(T) == sizeof(Bits), "simt: CAS payload size");
  Bits* p = reinterpret_cast<Bits*>(address);
  Bits old_bits = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (true) {
    T old_value;
    std::memcpy(static_cast<void*>(&old_value), &old_bits, sizeof(T));
    const T new_value = update(old_value);
    Bits new_bits;
    std::memcpy(&new_bits, static_cast<const void*>(&new_value), sizeof(T));
    if (__atomic_compare_exchange_n(p, &old_bits, new_bits, false, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED))
      return old_value;
  }
}
}  // namespace simt

#define SIMT_ATOMIC_INT(T)                                                                    \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }       \
  inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }       \
  inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }     \
  inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }       \
  inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }         \
  inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }       \
  inline T atomicCAS(T* p, T compare, T v) {                                                  \
    __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);   \
    return compare;                                                                           \
  }                                                                                           \
  inline T atomicMin(T* p, T v) {                                                             \
    return ::simt::cas_loop<T, T>(p, [v](T old) { return v < old ? v : old; });              \
  }                                                                                           \
  inline T atomicMax(T* p, T v) {                                                             \
    return ::simt::cas_loop<T, T>(p, [v](T old) { return v > old ? v : old; });              \
  }
SIMT_ATOMIC_INT(int)
SIMT_ATOMIC_INT(unsigned int)
SIMT_ATOMIC_INT(unsigned long long)
SIMT_ATOMIC_INT(long long)
#undef SIMT_ATOMIC_INT

inline unsigned short atomicCAS(unsigned short* p, unsigned short compare, unsigned short v) {
  __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;
}

// ((old >= limit) ? 0 : old + 1) and ((old == 0 || old > limit) ? limit : old - 1)
inline unsigned atomicInc(unsigned* p, unsigned limit) {
  return ::simt::cas_loop<unsigned, unsigned>(
      p, [limit](unsigned old) { return old >= limit ? 0u : old + 1; });
}
inline unsigned atomicDec(unsigned* p, unsigned limit) {
  return ::simt::cas_loop<unsigned, unsigned>(
      p, [limit](unsigned old) { return (old == 0 || old > limit) ? limit : old - 1; });
}

inline float atomicAdd(float* p, float v) {
  return ::simt::cas_loop<float, uint32_t>(p, [v](float old) { return old + v; });
}
inline double atomicAdd(double* p, double v) {
  return ::simt::cas_loop<double, uint64_t>(p, [v](double old) { return old + v; });
}
inline float atomicExch(float* p, float v) {
  return ::simt::cas_loop<float, uint32_t>(p, [v](float) { return v; });
}
inline __half atomicAdd(__half* p, __half v) {
  return ::simt::cas_loop<__half, uint16_t>(
      p, [v](__half old) { return __float2half_rn(__half2float(old) + __half2float(v)); });
}
inline __half2 atomicAdd(__half2* p, __half2 v) {
  return ::simt::cas_loop<__half2, uint32_t>(p, [v](__half2 old) {
    return __halves2half2(__float2half_rn(__low2float(old) + __low2float(v)),
                          __float2half_rn(__high2float(old) + __high2float(v)));
  });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
  return ::simt::cas_loop<__nv_bfloat16, uint16_t>(p, [v](__nv_bfloat16 old) {
    return __float2bfloat16_rn(__bfloat162float(old) + __bfloat162float(v));
  });
}

// Scope variants are aliases: one emulated device, blocks run serially.
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicSub_block atomicSub
#define atomicExch_block atomicExch
#define atomicCAS_block atomicCAS
#define atomicCAS_system atomicCAS
#define atomicMin_block atomicMin
#define atomicMax_block atomicMax
#define atomicAnd_block atomicAnd
#define atomicOr_block atomicOr
#define atomicXor_block atomicXor
