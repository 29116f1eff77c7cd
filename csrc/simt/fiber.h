// Stackful fibers for emulated CUDA threads (SIMT.md 8), stacks mmap'ed with a
// PROT_NONE guard page below them (an overflow is a SIGSEGV, not silent corruption), pooled and
// reused across blocks and launches. Fibers never migrate between OS threads.
#pragma once
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <vector>

#include "config.h"

// AddressSanitizer needs to be told about every switch between stacks (else it takes the fiber
// stacks for overflows of the thread's stack), and recycled stacks must lose the poisoned
// redzones of frames abandoned on them (a block dropped after an error is not unwound).
#if defined(__SANITIZE_ADDRESS__)
#define SIMT_ASAN 1
#include <pthread.h>
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

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

// ---- context switch ---------------------------------------------------------------------
// x86-64 (default): a hand-written switch saving the callee-saved registers, MXCSR and the x87
// control word on the stack being left (SIMT.md 8: tens of ns, against ~0.2 us for
// swapcontext's signal-mask syscalls). Elsewhere, under ASan/TSan, or with
// -DSIMT_FIBER_UCONTEXT: glibc ucontext, with ASan's fiber annotations under ASan. TSan builds
// are not supported (see csrc/simt/README.md: every switch would synchronise, hiding races).
#if defined(__x86_64__) && !defined(SIMT_FIBER_UCONTEXT) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define SIMT_FIBER_ASM 1

struct FiberContext {
  void* sp = nullptr;
};

// fiber_switch(save, next): pushes the callee-saved state, stores the stack pointer in *save,
// loads `next` and pops the state saved there (or the initial frame made by Fiber::start).
extern "C" inline __attribute__((naked, noinline)) void simt_fiber_switch(void** save, void* next) {
  __asm__(
      "pushq %rbp\n\t"
      "pushq %rbx\n\t"
      "pushq %r12\n\t"
      "pushq %r13\n\t"
      "pushq %r14\n\t"
      "pushq %r15\n\t"
      "subq $16, %rsp\n\t"
      "stmxcsr 8(%rsp)\n\t"
      "fnstcw (%rsp)\n\t"
      "movq %rsp, (%rdi)\n\t"
      "movq %rsi, %rsp\n\t"
      "ldmxcsr 8(%rsp)\n\t"
      "fldcw (%rsp)\n\t"
      "addq $16, %rsp\n\t"
      "popq %r15\n\t"
      "popq %r14\n\t"
      "popq %r13\n\t"
      "popq %r12\n\t"
      "popq %rbx\n\t"
      "popq %rbp\n\t"
      "ret\n\t");
}

inline void fiber_swap(FiberContext& save, FiberContext& next) {
  simt_fiber_switch(&save.sp, next.sp);
}

// The first switch to a new stack "returns" into entry with the stack aligned as after a call;
// entry's own return address is 0, which ends backtraces (entry never returns).
inline void fiber_prepare(FiberContext& c, void* stack, size_t size, void (*entry)()) {
  auto* sp = reinterpret_cast<uint64_t*>(
      (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15));
  *--sp = 0;                                     // entry's return address
  *--sp = reinterpret_cast<uint64_t>(entry);     // popped by `ret`
  for (int i = 0; i < 6; ++i) *--sp = 0;         // rbp, rbx, r12..r15
  sp -= 2;                                       // x87 control word, MXCSR
  uint32_t mxcsr;
  uint16_t fpucw;
  __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
  __asm__ volatile("fnstcw %0" : "=m"(fpucw));
  sp[0] = fpucw;
  sp[1] = mxcsr;
  c.sp = sp;
}

inline void fiber_started() {}

#else
struct FiberContext {
  ucontext_t ctx;
#ifdef SIMT_ASAN
  const void* stack_bottom = nullptr;  // of this context's stack (found lazily for the thread's)
  size_t stack_size = 0;
  void* fake_stack = nullptr;  // ASan's fake frames of this context while it is switched out
#endif
};

#ifdef SIMT_ASAN
// The stack of the OS thread that runs the scheduler.
inline void own_thread_stack(FiberContext& c) {
  pthread_attr_t attr;
  void* addr = nullptr;
  size_t size = 0;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    pthread_attr_getstack(&attr, &addr, &size);
    pthread_attr_destroy(&attr);
  }
  c.stack_bottom = addr;
  c.stack_size = size;
}
#endif

inline void fiber_swap(FiberContext& save, FiberContext& next) {
#ifdef SIMT_ASAN
  if (!save.stack_bottom) own_thread_stack(save);  // the scheduler, before its first switch
  __sanitizer_start_switch_fiber(&save.fake_stack, next.stack_bottom, next.stack_size);
  swapcontext(&save.ctx, &next.ctx);
  __sanitizer_finish_switch_fiber(save.fake_stack, nullptr, nullptr);
#else
  swapcontext(&save.ctx, &next.ctx);
#endif
}

// First thing a new fiber runs (completes the switch that started it).
inline void fiber_started() {
#ifdef SIMT_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
}

inline void fiber_prepare(FiberContext& c, void* stack, size_t size, void (*entry)()) {
#ifdef SIMT_ASAN
  ASAN_UNPOISON_MEMORY_REGION(stack, size);  // redzones of frames abandoned on a reused stack
  c.stack_bottom = stack;
  c.stack_size = size;
#endif
  getcontext(&c.ctx);
  c.ctx.uc_stack.ss_sp = stack;
  c.ctx.uc_stack.ss_size = size;
  c.ctx.uc_link = nullptr;
  makecontext(&c.ctx, entry, 0);  // makecontext passes only ints: entry takes nothing
}
#endif

// One fiber: a context on a pooled stack. `start` prepares it to run `entry` (which must not
// return: it switches back itself).
struct Fiber {
  FiberContext ctx;
  void* stack = nullptr;
  size_t stack_size = 0;

  void start(void (*entry)(), size_t bytes) {
    stack = stack_pool().acquire(bytes, &stack_size);
    fiber_prepare(ctx, stack, stack_size, entry);
  }
  void release() {
    if (stack) stack_pool().release(stack);
    stack = nullptr;
  }
};

}  // namespace simt
