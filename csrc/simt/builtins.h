// CUDA's synchronization built-ins on top of the scheduler (SIMT.md 6): block barriers, warp
// collectives with PTX semantics, __activemask, __nanosleep, fences, device traps.
// Every scheduling point records its call site through __builtin_FILE/__builtin_LINE default
// arguments (evaluated at the caller), for divergence and deadlock reports.
#pragma once
#include <type_traits>

#include "scheduler.h"

#define SIMT_SITE const char *simt_file = __builtin_FILE(), int simt_line = __builtin_LINE()
#define SIMT_HERE ::simt::Site{simt_file, simt_line}

// ---- block barriers --------------------------------------------------------------------------
inline void __syncthreads(SIMT_SITE) {
  ::simt::barrier_arrive(::simt::BarrierKind::Plain, 0, SIMT_HERE);
}
inline int __syncthreads_count(int pred, SIMT_SITE) {
  return ::simt::barrier_arrive(::simt::BarrierKind::Count, pred, SIMT_HERE);
}
inline int __syncthreads_and(int pred, SIMT_SITE) {
  return ::simt::barrier_arrive(::simt::BarrierKind::And, pred, SIMT_HERE);
}
inline int __syncthreads_or(int pred, SIMT_SITE) {
  return ::simt::barrier_arrive(::simt::BarrierKind::Or, pred, SIMT_HERE);
}

// ---- warp collectives -----------------------------------------------------------------------
namespace simt {
// Payloads of any type up to 8 bytes, copied through void* (__half2 is not trivially copyable).
template <typename T>
T collective(WarpOp op, unsigned mask, const T& value, unsigned arg, int width, Site site) {
  static_assert(sizeof(T) <= 8, "simt: warp collective payloads are at most 8 bytes");
  warp_arrive(op, mask, width, arg, static_cast<const void*>(&value), sizeof(T), site);
  T out = value;
  std::memcpy(static_cast<void*>(&out), &current_block()->current->result, sizeof(T));
  return out;
}
inline uint64_t collective_bits(WarpOp op, unsigned mask, uint64_t value, int size, Site site) {
  warp_arrive(op, mask, 32, 0, &value, size, site);
  return current_block()->current->result;
}
}  // namespace simt

inline void __syncwarp(unsigned mask = 0xffffffffu, SIMT_SITE) {
  ::simt::warp_arrive(::simt::WarpOp::Sync, mask, 32, 0, nullptr, 0, SIMT_HERE);
}

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, SIMT_SITE) {
  return ::simt::collective(::simt::WarpOp::ShflIdx, mask, var, unsigned(src_lane), width,
                            SIMT_HERE);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, SIMT_SITE) {
  return ::simt::collective(::simt::WarpOp::ShflUp, mask, var, delta, width, SIMT_HERE);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, SIMT_SITE) {
  return ::simt::collective(::simt::WarpOp::ShflDown, mask, var, delta, width, SIMT_HERE);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize, SIMT_SITE) {
  return ::simt::collective(::simt::WarpOp::ShflXor, mask, var, unsigned(lane_mask), width,
                            SIMT_HERE);
}

inline unsigned __ballot_sync(unsigned mask, int pred, SIMT_SITE) {
  return unsigned(::simt::collective_bits(::simt::WarpOp::Ballot, mask, pred != 0, 4, SIMT_HERE));
}
inline int __any_sync(unsigned mask, int pred, SIMT_SITE) {
  return int(::simt::collective_bits(::simt::WarpOp::Any, mask, pred != 0, 4, SIMT_HERE));
}
inline int __all_sync(unsigned mask, int pred, SIMT_SITE) {
  return int(::simt::collective_bits(::simt::WarpOp::All, mask, pred != 0, 4, SIMT_HERE));
}

// Lanes of the caller's warp that have not exited (schedule-dependent on hardware too).
inline unsigned __activemask() {
  ::simt::BlockRun& b = ::simt::block_or_die("__activemask");
  return ::simt::live_mask(b, b.current->tid / 32);
}

template <typename T>
unsigned __match_any_sync(unsigned mask, T value, SIMT_SITE) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "__match_any_sync takes 32/64-bit values");
  uint64_t bits = 0;
  std::memcpy(&bits, static_cast<const void*>(&value), sizeof(T));
  return unsigned(::simt::collective_bits(::simt::WarpOp::MatchAny, mask, bits, sizeof(T),
                                          SIMT_HERE));
}
template <typename T>
unsigned __match_all_sync(unsigned mask, T value, int* pred, SIMT_SITE) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "__match_all_sync takes 32/64-bit values");
  uint64_t bits = 0;
  std::memcpy(&bits, static_cast<const void*>(&value), sizeof(T));
  const unsigned r = unsigned(::simt::collective_bits(::simt::WarpOp::MatchAll, mask, bits,
                                                      sizeof(T), SIMT_HERE));
  *pred = ::simt::current_block()->current->result_pred;
  return r;
}

#define SIMT_REDUCE(name, op_u, op_s)                                                        \
  inline unsigned name(unsigned mask, unsigned v, SIMT_SITE) {                               \
    return unsigned(::simt::collective_bits(::simt::WarpOp::op_u, mask, v, 4, SIMT_HERE));   \
  }                                                                                          \
  inline int name(unsigned mask, int v, SIMT_SITE) {                                         \
    return int(::simt::collective_bits(::simt::WarpOp::op_s, mask, uint32_t(v), 4, SIMT_HERE)); \
  }
SIMT_REDUCE(__reduce_add_sync, ReduceAdd, ReduceAdd)
SIMT_REDUCE(__reduce_min_sync, ReduceMinU, ReduceMinS)
SIMT_REDUCE(__reduce_max_sync, ReduceMaxU, ReduceMaxS)
#undef SIMT_REDUCE
inline unsigned __reduce_and_sync(unsigned mask, unsigned v, SIMT_SITE) {
  return unsigned(::simt::collective_bits(::simt::WarpOp::ReduceAnd, mask, v, 4, SIMT_HERE));
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned v, SIMT_SITE) {
  return unsigned(::simt::collective_bits(::simt::WarpOp::ReduceOr, mask, v, 4, SIMT_HERE));
}
inline unsigned __reduce_xor_sync(unsigned mask, unsigned v, SIMT_SITE) {
  return unsigned(::simt::collective_bits(::simt::WarpOp::ReduceXor, mask, v, 4, SIMT_HERE));
}

// ---- yield points, fences, timing, traps ----------------------------------------------------
// __nanosleep lets other threads of the block run (spin-waits make progress); the fiber stays
// runnable and is resumed in the next pass.
inline void __nanosleep(unsigned) {
  if (::simt::current_block()) ::simt::switch_to_scheduler();
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

namespace simt {
inline long long& clock_counter() {
  static long long c = 0;
  return c;
}
}  // namespace simt
inline long long clock64() { return ++::simt::clock_counter(); }
// (clock() is glibc's; kernels should use clock64)

// A trap is a thrown simt::Error, rethrown by the launcher with kernel, block and thread.
[[noreturn]] inline void __trap() { throw ::simt::Error("cudaErrorLaunchFailure: __trap()"); }
[[noreturn]] inline void __brkpt() { throw ::simt::Error("cudaErrorLaunchFailure: __brkpt()"); }

namespace simt {
[[noreturn]] inline void device_assert_fail(const char* expr, const char* file, int line) {
  throw Error(std::string("cudaErrorAssert: device-side assertion `") + expr + "` failed at " +
              file + ":" + std::to_string(line));
}
}  // namespace simt
// Device asserts that throw instead of aborting the process (SIMT.md 4, pitfall 5).
#define SIMT_DEVICE_ASSERT(cond) \
  ((cond) ? void(0) : ::simt::device_assert_fail(#cond, __FILE__, __LINE__))
