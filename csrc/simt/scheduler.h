// The central scheduler (SIMT.md 3 and 4): runs the blocks of a launch one at a time, each CUDA
// thread on its own fiber. A pass resumes every runnable fiber once, in the policy's order;
// a fiber runs until a scheduling point (block barrier, warp collective, __nanosleep) or exit.
// After each pass the scheduler completes the warp collectives whose lanes have all arrived,
// then the block barrier once every non-exited thread is at it; if nothing ran and nothing
// completed, it reports a deadlock. Errors found here or thrown inside a fiber abandon the
// block (suspended fibers are discarded without unwinding) and are rethrown by launch().
//
// Thread and block state: block_state.h; warp collectives: warp_collectives.h.
#pragma once
#include <algorithm>
#include <exception>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "block_state.h"
#include "config.h"
#include "warp_collectives.h"

namespace simt {

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
