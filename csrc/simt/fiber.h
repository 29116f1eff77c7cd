// Stackful fibers for emulated CUDA threads (SIMT.md 8): glibc ucontext, stacks mmap'ed with a
// PROT_NONE guard page below them (an overflow is a SIGSEGV, not silent corruption), pooled and
// reused across blocks and launches. Fibers never migrate between OS threads.
#pragma once
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <vector>

#include "config.h"

namespace simt {

class StackPool {
 public:
  // A stack of at least `bytes` usable bytes (the pool keeps one size; a new size drops it).
  void* acquire(size_t bytes, size_t* usable) {
    const size_t page = page_size();
    bytes = (bytes + page - 1) / page * page;
    if (bytes != size_) {
      release_all();
      size_ = bytes;
    }
    *usable = size_;
    if (!free_.empty()) {
      void* s = free_.back();
      free_.pop_back();
      return s;
    }
    void* base = mmap(nullptr, size_ + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    if (base == MAP_FAILED) throw Error("simt: mmap of a fiber stack failed");
    if (mprotect(base, page, PROT_NONE) != 0) throw Error("simt: guard page mprotect failed");
    ++mapped_;
    return static_cast<char*>(base) + page;
  }
  void release(void* stack) { free_.push_back(stack); }
  ~StackPool() { release_all(); }

 private:
  static size_t page_size() {
    static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return p;
  }
  void release_all() {
    for (void* s : free_) munmap(static_cast<char*>(s) - page_size(), size_ + page_size());
    free_.clear();
  }
  std::vector<void*> free_;
  size_t size_ = 0;
  size_t mapped_ = 0;
};

inline StackPool& stack_pool() {
  static StackPool pool;
  return pool;
}

// One fiber: a context on a pooled stack. `start` prepares it to run `entry` (which must not
// return: it switches back itself), `resume` runs it until it switches back to `from`.
struct Fiber {
  ucontext_t ctx;
  void* stack = nullptr;
  size_t stack_size = 0;

  void start(void (*entry)(), size_t bytes) {
    stack = stack_pool().acquire(bytes, &stack_size);
    getcontext(&ctx);
    ctx.uc_stack.ss_sp = stack;
    ctx.uc_stack.ss_size = stack_size;
    ctx.uc_link = nullptr;
    makecontext(&ctx, entry, 0);
  }
  void release() {
    if (stack) stack_pool().release(stack);
    stack = nullptr;
  }
};

}  // namespace simt
