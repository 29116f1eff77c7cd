// The central scheduler (SIMT.md 3 and 4): runs the blocks of a launch one at a time, each CUDA
// thread on its own fiber. A pass resumes every runnable fiber once, in the policy's order;
// a fiber runs until a scheduling point (block barrier, warp collective, __nanosleep) or exit.
// After each pass the scheduler completes the warp collectives whose lanes have all arrived,
// then the block barrier once every non-exited thread is at it; if nothing ran and nothing
// completed, it reports a deadlock. Errors found here or thrown inside a fiber abandon the
// block (suspended fibers are discarded without unwinding) and are rethrown by launch().
#pragma once
#include <algorithm>
#include <exception>
#include <numeric>
#include <sstream>
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

// ---- warp collectives ---------------------------------------------------------------------
// PTX shfl.sync source lane: bval = b[4:0], segmask = 32 - width, and the source is the
// caller's own lane where PTX's pval is false.
inline unsigned shuffle_source(WarpOp op, unsigned lane, unsigned arg, int width) {
  const int b = static_cast<int>(arg & 31u);
  const int seg_lo = static_cast<int>(lane) & ~(width - 1), seg_hi = seg_lo + width - 1;
  int j = static_cast<int>(lane);
  switch (op) {
    case WarpOp::ShflIdx: j = seg_lo | (b & (width - 1)); break;
    case WarpOp::ShflUp: j = static_cast<int>(lane) - b; if (j < seg_lo) j = lane; break;
    case WarpOp::ShflDown: j = static_cast<int>(lane) + b; if (j > seg_hi) j = lane; break;
    case WarpOp::ShflXor: j = static_cast<int>(lane) ^ b; if (j > seg_hi) j = lane; break;
    default: break;
  }
  return static_cast<unsigned>(j);
}

inline uint64_t size_mask(int size) { return size >= 8 ? ~0ull : (1ull << (8 * size)) - 1; }

inline int64_t as_signed(uint64_t v, int size) {
  const int bits = 8 * size;
  return bits >= 64 ? int64_t(v) : int64_t(v << (64 - bits)) >> (64 - bits);
}

// Completes the collective of `group` (all arrived, agreeing on op, mask and width).
inline void complete_group(BlockRun& b, unsigned w, unsigned group) {
  Thread* lanes = &b.threads[w * 32];
  const Thread& first = lanes[__builtin_ctz(group)];
  const WarpOp op = first.op;
  if (op == WarpOp::Custom) custom_of(first).complete(b, w, group);
  unsigned ballot = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((group >> l & 1) && lanes[l].payload != 0) ballot |= 1u << l;
  uint64_t reduced = op == WarpOp::ReduceAnd ? ~0ull : 0;
  bool first_value = true;
  for (unsigned l = 0; l < 32; ++l) {
    if (!(group >> l & 1)) continue;
    const uint64_t v = lanes[l].payload;
    switch (op) {
      case WarpOp::ReduceAdd: reduced += v; break;
      case WarpOp::ReduceAnd: reduced &= v; break;
      case WarpOp::ReduceOr: reduced |= v; break;
      case WarpOp::ReduceXor: reduced ^= v; break;
      case WarpOp::ReduceMinS: case WarpOp::ReduceMaxS: {
        const int64_t s = as_signed(v, first.size), r = as_signed(reduced, first.size);
        if (first_value || (op == WarpOp::ReduceMinS ? s < r : s > r)) reduced = v;
        break;
      }
      case WarpOp::ReduceMinU: case WarpOp::ReduceMaxU:
        if (first_value || (op == WarpOp::ReduceMinU ? v < reduced : v > reduced)) reduced = v;
        break;
      default: break;
    }
    first_value = false;
  }
  for (unsigned l = 0; l < 32; ++l) {
    if (!(group >> l & 1)) continue;
    Thread& t = lanes[l];
    switch (op) {
      case WarpOp::ShflIdx: case WarpOp::ShflUp: case WarpOp::ShflDown: case WarpOp::ShflXor: {
        const unsigned src = shuffle_source(op, l, t.arg, t.width);
        if (src == l || (group >> src & 1)) {
          t.result = lanes[src].payload;
        } else {
          const std::string msg = std::string(warp_op_name(op)) + " at " + site_str(t.site) +
                                  ": lane " + std::to_string(l) + " of warp " +
                                  std::to_string(w) + " reads lane " + std::to_string(src) +
                                  ", which does not take part (outside mask " + hex(t.mask) +
                                  ", exited, or missing in a partial warp)";
          if (config().strict) throw Error("simt: " + msg);
          warn(msg + "; returning poison (all bits set)");
          t.result = ~0ull;
        }
        break;
      }
      case WarpOp::Ballot: t.result = ballot; break;
      case WarpOp::Any: t.result = ballot != 0; break;
      case WarpOp::All: t.result = ballot == group; break;
      case WarpOp::MatchAny: case WarpOp::MatchAll: {
        unsigned same = 0;
        for (unsigned k = 0; k < 32; ++k)
          if ((group >> k & 1) && ((lanes[k].payload ^ t.payload) & size_mask(t.size)) == 0)
            same |= 1u << k;
        if (op == WarpOp::MatchAny) {
          t.result = same;
        } else {
          t.result_pred = same == group;
          t.result = same == group ? group : 0;
        }
        break;
      }
      case WarpOp::Sync: case WarpOp::Custom: break;
      default: t.result = reduced; break;
    }
    t.state = State::Runnable;
  }
  b.warp_waiting[w] -= __builtin_popcount(group);
}

// Throws unless every lane of `group` waits at the same kind of collective as lane t.
inline void check_group(const BlockRun& b, unsigned w, const Thread& t, unsigned group) {
  const Thread* lanes = &b.threads[w * 32];
  for (unsigned k = 0; k < 32; ++k) {
    if (!(group >> k & 1)) continue;
    const Thread& o = lanes[k];
    if (o.op != t.op || o.mask != t.mask || o.width != t.width || o.size != t.size) {
      throw Error("simt: warp collective mismatch in warp " + std::to_string(w) + ": " +
                  thread_str(t) + " at " + collective_name(t) + "(mask " + hex(t.mask) +
                  ", width " + std::to_string(t.width) + ") " + site_str(t.site) + ", " +
                  thread_str(o) + " at " + collective_name(o) + "(mask " + hex(o.mask) +
                  ", width " + std::to_string(o.width) + ") " + site_str(o.site));
    }
  }
}

// Lanes of warp w waiting at a collective.
inline unsigned waiting_mask(const BlockRun& b, unsigned w) {
  const Thread* lanes = &b.threads[w * 32];
  unsigned waiting = 0;
  for (unsigned l = 0; l < 32 && w * 32 + l < b.nthreads; ++l)
    if (lanes[l].state == State::AtWarp) waiting |= 1u << l;
  return waiting;
}

// Completes every collective whose group has fully arrived; true if any completed.
inline bool complete_warps(BlockRun& b) {
  bool any = false;
  for (unsigned w = 0; w < b.nwarps; ++w) {
    if (b.warp_waiting[w] == 0) continue;
    Thread* lanes = &b.threads[w * 32];
    const unsigned live = live_mask(b, w);
    unsigned waiting = waiting_mask(b, w);
    unsigned todo = waiting;
    while (todo) {
      const unsigned l = __builtin_ctz(todo);
      const Thread& t = lanes[l];
      const unsigned group = t.mask & live;
      todo &= ~group;
      todo &= ~(1u << l);
      if (group & ~waiting) continue;  // some lane has not arrived yet
      check_group(b, w, t, group);
      complete_group(b, w, group);
      waiting &= ~group;
      any = true;
    }
  }
  return any;
}

// Arrival at a warp collective, from a fiber; returns when the collective has completed.
// eager: the last lane to arrive completes the group at once, before any other thread of the
// block runs (else the scheduler completes it after the pass). WMMA loads are eager so that a
// tile read without the __syncthreads that should precede it sees schedule-dependent data.
inline void warp_arrive(WarpOp op, unsigned mask, int width, unsigned arg, const void* value,
                        int size, Site site, bool eager = false) {
  BlockRun& b = block_or_die(warp_op_name(op));
  Thread& t = *b.current;
  const unsigned lane = t.tid % 32;
  if (!(mask >> lane & 1))
    throw Error(std::string("simt: ") + warp_op_name(op) + " at " + site_str(site) + ": lane " +
                std::to_string(lane) + " is not in its own mask " + hex(mask));
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    throw Error(std::string("simt: ") + warp_op_name(op) + " at " + site_str(site) +
                ": width must be a power of two in [1, 32], got " + std::to_string(width));
  t.op = op;
  t.mask = mask;
  t.width = width;
  t.arg = arg;
  t.size = size;
  t.payload = 0;
  if (value) std::memcpy(&t.payload, value, size);
  t.site = site;
  t.state = State::AtWarp;
  const unsigned w = t.tid / 32;
  ++b.warp_waiting[w];
  if (eager) {
    const unsigned group = mask & live_mask(b, w);
    if (!(group & ~waiting_mask(b, w))) {
      check_group(b, w, t, group);
      complete_group(b, w, group);  // makes this thread runnable again: it just goes on
      return;
    }
  }
  switch_to_scheduler();
}

// ---- block barrier --------------------------------------------------------------------------
inline int barrier_arrive(BarrierKind kind, int pred, Site site) {
  BlockRun& b = block_or_die("__syncthreads");
  Thread& t = *b.current;
  t.barrier_kind = kind;
  t.pred = pred != 0;
  t.site = site;
  t.state = State::AtBarrier;
  ++b.at_barrier;
  switch_to_scheduler();
  return t.barrier_result;
}

inline const char* barrier_name(BarrierKind k) {
  return k == BarrierKind::Plain ? "__syncthreads" : k == BarrierKind::Count ? "__syncthreads_count"
         : k == BarrierKind::And ? "__syncthreads_and" : "__syncthreads_or";
}

// Releases the block barrier once every non-exited thread is at it; true if it did.
inline bool complete_barrier(BlockRun& b) {
  if (b.at_barrier == 0 || b.at_barrier + b.exited != b.nthreads) return false;
  const Thread* first = nullptr;
  int count = 0;
  for (const Thread& t : b.threads) {
    if (t.state != State::AtBarrier) continue;
    if (!first) first = &t;
    if (!same_site(t.site, first->site) || t.barrier_kind != first->barrier_kind)
      throw Error("simt: divergent barrier: " + thread_str(*first) + " waits at " +
                  barrier_name(first->barrier_kind) + " " + site_str(first->site) + ", " +
                  thread_str(t) + " at " + barrier_name(t.barrier_kind) + " " +
                  site_str(t.site));
    count += t.pred;
  }
  if (b.exited > 0) {
    const Thread* gone = nullptr;
    for (const Thread& t : b.threads)
      if (t.state == State::Exited) { gone = &t; break; }
    const std::string msg = std::string(barrier_name(first->barrier_kind)) + " " +
                            site_str(first->site) + " reached after " +
                            std::to_string(b.exited) + " thread(s) of the block exited (e.g. " +
                            thread_str(*gone) + "); undefined behaviour on a GPU";
    if (config().strict) throw Error("simt: " + msg);
    if (!b.warned_exit_barrier) warn(msg + "; exited threads count as arrived");
    b.warned_exit_barrier = true;
  }
  const int arrived = static_cast<int>(b.at_barrier);
  int result = 0;
  switch (first->barrier_kind) {
    case BarrierKind::Plain: break;
    case BarrierKind::Count: result = count; break;
    case BarrierKind::And: result = count == arrived; break;
    case BarrierKind::Or: result = count > 0; break;
  }
  for (Thread& t : b.threads) {
    if (t.state != State::AtBarrier) continue;
    t.barrier_result = result;
    t.state = State::Runnable;
  }
  b.at_barrier = 0;
  return true;
}

[[noreturn]] inline void report_deadlock(const BlockRun& b) {
  std::ostringstream s;
  s << "deadlock: no thread can run and no barrier or warp collective can complete; "
    << (b.nthreads - b.exited) << " of " << b.nthreads << " threads wait:";
  // consecutive threads waiting at the same point are listed as one range
  std::string prev;
  unsigned first = 0, lines = 0;
  const auto flush = [&](unsigned last) {
    if (prev.empty() || ++lines > 32) return;
    s << "\n  thread " << dim_str(b.threads[first].idx);
    if (last != first) s << " .. " << dim_str(b.threads[last].idx);
    s << " (tid " << first;
    if (last != first) s << ".." << last;
    s << "): " << prev;
  };
  for (unsigned i = 0; i <= b.nthreads; ++i) {
    std::string d;
    if (i < b.nthreads) {
      const Thread& t = b.threads[i];
      if (t.state == State::AtBarrier)
        d = std::string(barrier_name(t.barrier_kind)) + " " + site_str(t.site);
      else if (t.state == State::AtWarp)
        d = std::string(collective_name(t)) + "(mask " + hex(t.mask) + ") " + site_str(t.site);
    }
    if (d != prev) {
      if (i > 0) flush(i - 1);
      prev = d;
      first = i;
    }
  }
  if (lines > 32) s << "\n  ... " << (lines - 32) << " more ranges";
  throw Error("simt: " + s.str());
}

// ---- one block ------------------------------------------------------------------------------
inline void resume(BlockRun& b, Thread& t) {
  b.current = &t;
  threadIdx = t.idx;
  if (t.state == State::NotStarted) {
    t.fiber.start(&fiber_entry, config().stack_bytes);
    t.state = State::Runnable;
  }
  fiber_swap(b.scheduler, t.fiber.ctx);
  stats().switches += 2;
  if (t.state == State::Exited) {
    t.fiber.release();  // barrier-free kernels reuse one stack for every thread
    ++b.exited;
  }
}

inline void make_order(std::vector<unsigned>& order, Order policy) {
  std::iota(order.begin(), order.end(), 0u);
  if (policy == Order::Reverse) std::reverse(order.begin(), order.end());
  if (policy == Order::Random) std::shuffle(order.begin(), order.end(), config().rng);
}

// Runs every thread of the current block to completion (or the first error).
inline void run_block(BlockRun& b) {
  std::vector<unsigned> order(b.nthreads);
  const Order policy = config().order;
  make_order(order, policy);
  while (true) {
    bool ran = false;
    for (unsigned i : order) {
      Thread& t = b.threads[i];
      if (t.state != State::NotStarted && t.state != State::Runnable) continue;
      resume(b, t);
      ran = true;
      if (b.error) return;
    }
    if (b.exited == b.nthreads) return;
    try {
      bool completed = complete_warps(b);
      completed |= complete_barrier(b);
      if (!ran && !completed) report_deadlock(b);
    } catch (...) {
      b.error = std::current_exception();
      b.error_thread = nullptr;
      return;
    }
    if (policy == Order::Random) make_order(order, policy);  // fresh permutation per pass
  }
}

}  // namespace simt
