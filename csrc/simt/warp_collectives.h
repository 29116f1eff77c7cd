// Warp collectives of the emulated block (SIMT.md 4): a lane arrives (warp_arrive) and waits
// until every lane of its group has; the scheduler (or, eager, the last lane) then completes
// the group: shuffles, votes, match, reduce, __syncwarp and custom collectives (nvcuda::wmma),
// after checking that the lanes agree on the op, mask and width.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "block_state.h"

namespace simt {

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

}  // namespace simt
