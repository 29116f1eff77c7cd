// The state of the emulated block the scheduler runs (scheduler.h, SIMT.md 3): one Thread per
// CUDA thread (its fiber, what it waits at), the BlockRun of the block being run, and the
// fiber entry that runs the kernel and records the first error. Warp collectives:
// warp_collectives.h; barriers and the passes over the threads: scheduler.h.
#pragma once
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "config.h"
#include "fiber.h"

namespace simt {

enum class State : uint8_t { NotStarted, Runnable, AtBarrier, AtWarp, Exited };
enum class BarrierKind : uint8_t { Plain, Count, And, Or };
enum class WarpOp : uint8_t {
  Sync, ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All, MatchAny, MatchAll,
  ReduceAdd, ReduceMinS, ReduceMinU, ReduceMaxS, ReduceMaxU, ReduceAnd, ReduceOr, ReduceXor,
  Custom,  // completed by a CustomCollective (nvcuda::wmma): the payload points at it
};

inline const char* warp_op_name(WarpOp op) {
  static const char* names[] = {
      "__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
      "__ballot_sync", "__any_sync", "__all_sync", "__match_any_sync", "__match_all_sync",
      "__reduce_add_sync", "__reduce_min_sync", "__reduce_min_sync", "__reduce_max_sync",
      "__reduce_max_sync", "__reduce_and_sync", "__reduce_or_sync", "__reduce_xor_sync",
      "a custom warp collective"};
  return names[static_cast<int>(op)];
}

// A call site, file:line (g++ 12 has no __builtin_COLUMN: two barriers on one line are one
// site for the divergence check).
struct Site {
  const char* file;
  int line;
};

inline std::string site_str(Site s) {
  return std::string(s.file ? s.file : "?") + ":" + std::to_string(s.line);
}
inline bool same_site(Site a, Site b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}
inline std::string hex(unsigned v) {
  char s[16];
  std::snprintf(s, sizeof s, "0x%08x", v);
  return s;
}
inline std::string dim_str(uint3 d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

// A cp.async copy issued by __pipeline_memcpy_async and not yet completed by a wait
// (csrc/simt/async_copy.h): group is the number of __pipeline_commit calls before it.
struct AsyncCopy {
  void* dst;
  const void* src;
  uint32_t size, zfill, group;
  Site site;
};

// One emulated CUDA thread.
struct Thread {
  Fiber fiber;
  uint3 idx;
  unsigned tid;  // x + y*Dx + z*Dx*Dy: warp = tid / 32, lane = tid % 32
  State state = State::NotStarted;
  Site site{nullptr, 0};  // call site of the barrier or collective it waits at
  // block barrier
  BarrierKind barrier_kind = BarrierKind::Plain;
  int pred = 0;
  int barrier_result = 0;
  // warp collective
  WarpOp op = WarpOp::Sync;
  unsigned mask = 0;
  int width = 32;
  unsigned arg = 0;          // source lane, delta or xor mask
  uint64_t payload = 0;      // value bits (size bytes)
  int size = 0;
  uint64_t result = 0;
  int result_pred = 0;
  // cp.async: copies not yet waited for, groups committed so far, groups completed by waits
  std::vector<AsyncCopy> async_copies;
  uint32_t async_committed = 0, async_completed = 0;
};

inline std::string thread_str(const Thread& t) {
  return "thread " + dim_str(t.idx) + " (warp " + std::to_string(t.tid / 32) + " lane " +
         std::to_string(t.tid % 32) + ")";
}

struct BlockRun;

// A warp collective completed by code outside the scheduler (csrc/simt/mma.h). Each lane
// arrives with op Custom and a payload pointing at its own CustomCollective, which lives on the
// lane's fiber stack while it waits; once the whole group has arrived, `complete` runs once
// with the first lane's, and may read and write every lane's (the stacks stay mapped). It
// checks that the lanes agree and throws Error otherwise.
struct CustomCollective {
  const char* name;  // for diagnostics, e.g. "nvcuda::wmma::mma_sync"
  void (*complete)(BlockRun& b, unsigned warp, unsigned group);
};

inline const CustomCollective& custom_of(const Thread& t) {
  return *reinterpret_cast<const CustomCollective*>(static_cast<uintptr_t>(t.payload));
}

inline const char* collective_name(const Thread& t) {
  return t.op == WarpOp::Custom ? custom_of(t).name : warp_op_name(t.op);
}

// The block being run; a global (fibers get no arguments, and nothing is thread_local).
struct BlockRun {
  std::vector<Thread> threads;
  std::vector<unsigned> warp_waiting;  // lanes waiting at a collective, per warp
  unsigned nthreads = 0, nwarps = 0, exited = 0, at_barrier = 0;
  void (*invoke)(const void*) = nullptr;  // runs the kernel with a copy of the arguments
  const void* call = nullptr;
  unsigned char* dynamic_shared = nullptr;
  Thread* current = nullptr;
  FiberContext scheduler;
  std::exception_ptr error;  // first failure; the block is abandoned
  const Thread* error_thread = nullptr;
  bool warned_exit_barrier = false;
};

inline BlockRun*& current_block() {
  static BlockRun* b = nullptr;
  return b;
}

inline BlockRun& block_or_die(const char* what) {
  BlockRun* b = current_block();
  if (!b) throw Error(std::string("simt: ") + what + " called outside an emulated kernel");
  return *b;
}

// Back to the scheduler; returns when the scheduler resumes this fiber.
inline void switch_to_scheduler() {
  BlockRun& b = *current_block();
  fiber_swap(b.current->fiber.ctx, b.scheduler);
}

inline void check_async_at_exit(const Thread& t);  // defined in async_copy.h (simt.h includes it)

inline void fiber_entry() {
  fiber_started();
  BlockRun& b = *current_block();
  Thread* t = b.current;
  try {
    b.invoke(b.call);
    if (!t->async_copies.empty()) check_async_at_exit(*t);
  } catch (...) {
    if (!b.error) {
      b.error = std::current_exception();
      b.error_thread = t;
    }
  }
  t->state = State::Exited;
  switch_to_scheduler();
  std::abort();  // an exited fiber is never resumed
}

// Mask of the lanes of warp w that exist and have not exited.
inline unsigned live_mask(const BlockRun& b, unsigned w) {
  unsigned m = 0;
  const unsigned first = w * 32, last = std::min(first + 32, b.nthreads);
  for (unsigned t = first; t < last; ++t)
    if (b.threads[t].state != State::Exited) m |= 1u << (t - first);
  return m;
}

}  // namespace simt
