// Large CPU buffers backed by transparent huge pages where the kernel allows it.
//
// A large tensor from at::empty is fresh memory from mmap (glibc maps requests above its
// threshold, up to 32 MB, on every call), which faults in 4 KB pages as it is first written.
// Measured here: a 62 MB map (an FPN P2 level) took longer to fault in than the whole ROI
// backward (torch.zeros of it: 150 ms; 40 ms after madvise; 20 ms to zero it again once
// faulted), and torch's NCHW->channels_last copy of it took 47 ms into a new tensor against
// 19 ms into an already faulted one. Asking for transparent huge pages before anything touches
// the memory takes 2 MB per fault instead. A hint only: where THP is off ("never") or the
// memory is already mapped, nothing changes.
#pragma once
#include <ATen/ATen.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include <cstdint>
#include <optional>

namespace fastconv::cpu {

// Ask for huge pages over the whole 2 MB pages inside t's storage (only when there are at
// least two of them: smaller buffers gain nothing).
inline void advise_huge_pages(const at::Tensor& t) {
#ifdef __linux__
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const uintptr_t p = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t begin = (p + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (p + t.nbytes()) & ~(kHugePage - 1);
  if (end >= begin + 2 * kHugePage)
    madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

// at::empty (the memory format is taken from options, as at::empty does) plus the hint above.
// For buffers that the caller then writes completely.
inline at::Tensor empty_huge_pages(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  advise_huge_pages(t);
  return t;
}

}  // namespace fastconv::cpu
