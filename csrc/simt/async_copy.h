// Asynchronous copies (cp.async) for emulated kernels: the <cuda_pipeline_primitives.h> API,
// which is what fastconv's kernels use (through csrc/cuda/launch/async_copy.h; no inline PTX):
//
//   __pipeline_memcpy_async(dst_shared, src_global, size, zfill = 0)   size 4, 8 or 16 bytes,
//       both pointers aligned to size; copies size - zfill bytes and zeroes the rest
//   __pipeline_commit()             closes the group of copies issued since the last commit
//   __pipeline_wait_prior(n)        waits until at most the n most recent groups are pending
//
// Emulated as deferred copies: the destination is poisoned (0xFF bytes: NaN for float and half)
// at issue and written at the wait that covers its group, so a thread that reads it before its
// wait (or another thread that reads it before the owner's wait and a barrier) sees poison,
// as the GPU would show stale data. Per-thread bookkeeping is checked like CUDA's pairing rules
// (errors in strict mode, warnings otherwise): a wait while copies issued since the last commit
// are outside every group ("wait without commit": they are not waited for), more than
// kMaxAsyncGroups committed groups outstanding, and a thread that exits with copies it never
// committed or never waited for.
#pragma once
#include "builtins.h"

namespace simt {

// More committed-but-unwaited groups than this is reported: fastconv's pipelines are 2-4
// stages deep, and a missing wait in a loop otherwise grows without bound.
constexpr uint32_t kMaxAsyncGroups = 8;

inline void async_problem(const std::string& msg) {
  if (config().strict) throw Error("simt: cp.async: " + msg);
  warn("cp.async: " + msg);
}

// Copies issued since the last commit: the tail of async_copies (groups only grow).
inline size_t uncommitted(const Thread& t) {
  size_t n = 0;
  for (const AsyncCopy& c : t.async_copies) n += c.group == t.async_committed;
  return n;
}
inline const AsyncCopy& first_uncommitted(const Thread& t) {
  return t.async_copies[t.async_copies.size() - uncommitted(t)];
}

inline void async_issue(void* dst, const void* src, size_t size, size_t zfill, Site site) {
  Thread& t = *block_or_die("__pipeline_memcpy_async").current;
  const std::string where = "__pipeline_memcpy_async at " + site_str(site) + ": ";
  if (size != 4 && size != 8 && size != 16)
    throw Error("simt: " + where + "expected a size of 4, 8 or 16 bytes, got " +
                std::to_string(size));
  if (zfill > size)
    throw Error("simt: " + where + "expected zfill <= size (" + std::to_string(size) +
                "), got " + std::to_string(zfill));
  if (reinterpret_cast<uintptr_t>(dst) % size || reinterpret_cast<uintptr_t>(src) % size) {
    char s[96];
    std::snprintf(s, sizeof s, "dst %p, src %p", dst, src);
    throw Error("simt: " + where + "expected both pointers aligned to the size (" +
                std::to_string(size) + " bytes), got " + s);
  }
  std::memset(dst, 0xFF, size);  // poison until the wait
  t.async_copies.push_back(
      AsyncCopy{dst, src, uint32_t(size), uint32_t(zfill), t.async_committed, site});
}

inline void async_commit(Site site) {
  Thread& t = *block_or_die("__pipeline_commit").current;
  ++t.async_committed;
  if (t.async_committed - t.async_completed > kMaxAsyncGroups)
    async_problem("__pipeline_commit at " + site_str(site) + ": " +
                  std::to_string(t.async_committed - t.async_completed) +
                  " committed groups outstanding (more than " +
                  std::to_string(kMaxAsyncGroups) + "): a missing __pipeline_wait_prior?");
}

inline void async_wait_prior(size_t prior, Site site) {
  Thread& t = *block_or_die("__pipeline_wait_prior").current;
  if (const size_t n = uncommitted(t))
    async_problem("__pipeline_wait_prior at " + site_str(site) + ": " + std::to_string(n) +
                  " copies issued since the last __pipeline_commit (first at " +
                  site_str(first_uncommitted(t).site) +
                  ") belong to no group, so no wait covers them: a missing __pipeline_commit?");
  if (prior >= t.async_committed - t.async_completed) return;
  const uint32_t done = t.async_committed - uint32_t(prior);  // groups [0, done) complete
  size_t kept = 0;
  for (AsyncCopy& c : t.async_copies) {
    if (c.group >= done) {
      t.async_copies[kept++] = c;
      continue;
    }
    const size_t bytes = c.size - c.zfill;
    std::memcpy(c.dst, c.src, bytes);
    std::memset(static_cast<char*>(c.dst) + bytes, 0, c.zfill);
  }
  t.async_copies.resize(kept);
  t.async_completed = done;
}

inline void check_async_at_exit(const Thread& t) {
  const size_t open = uncommitted(t), pending = t.async_copies.size() - open;
  if (open)
    async_problem("thread exits with " + std::to_string(open) +
                  " copies never committed (first issued at " +
                  site_str(first_uncommitted(t).site) + ")");
  if (pending)
    async_problem("thread exits with " + std::to_string(pending) +
                  " committed copies never waited for with __pipeline_wait_prior (first issued "
                  "at " + site_str(t.async_copies.front().site) + ")");
}

}  // namespace simt

inline void __pipeline_memcpy_async(void* __restrict__ dst_shared,
                                    const void* __restrict__ src_global, size_t size_and_align,
                                    size_t zfill = 0, SIMT_SITE) {
  ::simt::async_issue(dst_shared, src_global, size_and_align, zfill, SIMT_HERE);
}
inline void __pipeline_commit(SIMT_SITE) { ::simt::async_commit(SIMT_HERE); }
inline void __pipeline_wait_prior(size_t prior, SIMT_SITE) {
  ::simt::async_wait_prior(prior, SIMT_HERE);
}
