// Large CPU outputs (BatchNorm's y, grad_input and grad_residual; ROI outputs, argmax and
// grad_input; the channels_last copies of ROI feature maps) from a small cache of huge-page
// blocks.
//
// Why: a training step allocates the same large outputs every iteration and frees them soon
// after. glibc serves a 25 MB request from a fresh mmap or from the heap top, which it trims
// back to the kernel once more than twice its mmap threshold is free there; either way the
// next step faults the memory in again, 4 KB at a time, ~0.45 ms per MB here: 11 ms for one
// 25 MB output, against 5-10 ms for the whole fused BatchNorm forward + backward of such a
// layer, and a 62 MB FPN P2 map took longer to fault in than the whole ROI backward over it.
// Measured (1 thread, BatchNorm 8x64x112x112 channels_last, forward + backward): 6272 minor
// faults in most iterations with at::empty; 759 with at::empty + MADV_HUGEPAGE (the 2 MB pages
// inside the block, 4 KB pages at its unaligned ends, and 2 MB of zeroing per huge fault
// remain); none with this cache.
//
// The cache: blocks of at least kMinBytes are 2 MB aligned (so huge pages cover them whole)
// and advised MADV_HUGEPAGE; a freed block is kept (most recently freed last) while the cache
// holds at most FASTCONV_CPU_CACHE_BYTES (default 256 MB; 0 turns the cache off), dropping the
// oldest blocks beyond that, and a request takes the smallest kept block that fits without
// wasting more than an eighth of it. Thread-safe; smaller requests go to the default CPU
// allocator. The tensors are ordinary resizable CPU tensors.
#pragma once
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include <cstdlib>
#include <deque>
#include <mutex>
#include <unordered_map>

namespace fastconv::cpu {

class BufferCache final : public c10::Allocator {
 public:
  static constexpr size_t kMinBytes = size_t{4} << 20;
  static constexpr size_t kAlign = size_t{2} << 20;

  static BufferCache& instance() {
    static BufferCache* cache = new BufferCache();  // never destroyed: frees at exit are safe
    return *cache;
  }

  c10::DataPtr allocate(size_t n) override {
    if (n < kMinBytes) return c10::GetCPUAllocator()->allocate(n);
    const size_t capacity = (n + kAlign - 1) / kAlign * kAlign;
    void* p = take(capacity);
    if (p == nullptr) {
      p = std::aligned_alloc(kAlign, capacity);
      TORCH_CHECK_WITH(OutOfMemoryError, p != nullptr,
                       "fastconv: expected to allocate ", capacity,
                       " bytes, got out of memory");
#ifdef __linux__
      madvise(p, capacity, MADV_HUGEPAGE);  // a hint: nothing changes where THP is off
#endif
      std::lock_guard<std::mutex> lock(mutex_);
      capacity_of_[p] = capacity;
    }
    // context == data (a "simple" data pointer, as torch's own CPU allocator gives)
    return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  // Bytes of freed blocks kept for reuse (tests: torch.ops.fastconv._cpu_cache_held_bytes).
  size_t held_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return held_;
  }

 private:
  struct Block {
    void* ptr;
    size_t capacity;
  };

  BufferCache() {
    const char* env = std::getenv("FASTCONV_CPU_CACHE_BYTES");
    limit_ = env ? size_t(std::strtoull(env, nullptr, 10)) : size_t{256} << 20;
  }

  // The kept block that fits `capacity` best (at most an eighth of it unused), or null.
  void* take(size_t capacity) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      const size_t c = it->capacity;
      if (c >= capacity && c - capacity <= c / 8 &&
          (best == free_.end() || c < best->capacity)) {
        best = it;
      }
    }
    if (best == free_.end()) return nullptr;
    void* p = best->ptr;
    held_ -= best->capacity;
    free_.erase(best);
    return p;
  }

  static void release(void* p) { instance().keep(p); }

  void keep(void* p) {
    std::deque<void*> dropped;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const size_t capacity = capacity_of_.at(p);
      free_.push_back({p, capacity});
      held_ += capacity;
      while (held_ > limit_ && !free_.empty()) {
        held_ -= free_.front().capacity;
        capacity_of_.erase(free_.front().ptr);
        dropped.push_back(free_.front().ptr);
        free_.pop_front();
      }
    }
    for (void* d : dropped) std::free(d);
  }

  std::mutex mutex_;
  std::deque<Block> free_;                       // kept blocks, oldest first
  std::unordered_map<void*, size_t> capacity_of_;  // every live or kept block
  size_t held_ = 0, limit_ = 0;
};

// An uninitialized CPU tensor like at::empty(sizes, options) (memory format from options), its
// storage from BufferCache. For outputs that the caller then writes completely.
inline at::Tensor empty_cached(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::detail::empty_generic(sizes, &BufferCache::instance(),
                                   c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   options.dtype().toScalarType(),
                                   options.memory_format_opt());
}

}  // namespace fastconv::cpu
