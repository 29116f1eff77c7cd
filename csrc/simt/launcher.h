// simt::launch (SIMT.md 3): converts the arguments once, validates the configuration like the
// CUDA runtime (errors carry the CUDA error name), then runs the blocks one at a time in the
// policy's block order, under a global launch mutex. Also dynamic shared memory and the
// per-kernel opt-in above 48 KiB.
#pragma once
#include <cxxabi.h>
#include <dlfcn.h>

#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <tuple>
#include <type_traits>

#include "scheduler.h"

namespace simt {

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

// The OS thread running the current launch (set under the mutex).
inline std::thread::id& launch_owner() {
  static std::thread::id id;
  return id;
}

// cudaFuncAttributeMaxDynamicSharedMemorySize, recorded per kernel.
inline std::map<const void*, size_t>& smem_optin() {
  static std::map<const void*, size_t> m;
  return m;
}

template <typename... P>
const void* kernel_key(void (*kernel)(P...)) {
  return reinterpret_cast<const void*>(kernel);
}

// The shim for cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
template <typename... P>
void set_max_dynamic_shared_memory(void (*kernel)(P...), size_t bytes) {
  const Target& t = *config().target;
  if (bytes > t.smem_optin)
    throw Error("cudaErrorInvalidValue: simt: cudaFuncAttributeMaxDynamicSharedMemorySize " +
                std::to_string(bytes) + " above the " + t.name + " maximum of " +
                std::to_string(t.smem_optin) + " bytes");
  smem_optin()[kernel_key(kernel)] = bytes;
}

// A readable kernel name (demangled symbol), or its address if it has no dynamic symbol.
inline std::string kernel_name(const void* kernel) {
  Dl_info info{};
  if (dladdr(kernel, &info) && info.dli_sname) {
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> d(
        abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status), std::free);
    return status == 0 && d ? d.get() : info.dli_sname;
  }
  char s[32];
  std::snprintf(s, sizeof s, "<kernel %p>", kernel);
  return s;
}

inline void validate_launch(const void* kernel, dim3 grid, dim3 block, size_t smem) {
  const auto config_error = [&](const std::string& why) {
    throw Error("cudaErrorInvalidConfiguration: simt: invalid launch of " + kernel_name(kernel) +
                " with grid " + dim_str(uint3{grid.x, grid.y, grid.z}) + ", block " +
                dim_str(uint3{block.x, block.y, block.z}) + ": " + why);
  };
  if (!grid.x || !grid.y || !grid.z || !block.x || !block.y || !block.z)
    config_error("a zero dimension");
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads > 1024) config_error(std::to_string(threads) + " threads per block (max 1024)");
  if (block.x > 1024 || block.y > 1024 || block.z > 64)
    config_error("block dimensions above (1024, 1024, 64)");
  if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    config_error("grid dimensions above (2^31-1, 65535, 65535)");
  const Target& t = *config().target;
  if (smem > t.smem_default) {
    const auto it = smem_optin().find(kernel);
    const size_t allowed = it == smem_optin().end() ? t.smem_default : it->second;
    if (smem > t.smem_optin || smem > allowed)
      throw Error("cudaErrorInvalidValue: simt: " + kernel_name(kernel) + " launched with " +
                  std::to_string(smem) + " bytes of dynamic shared memory; " + t.name +
                  " allows " + std::to_string(t.smem_default) + " without opt-in, up to " +
                  std::to_string(t.smem_optin) + " with cudaFuncSetAttribute (opt-in here: " +
                  std::to_string(allowed) + ")");
  }
}

// The dynamic shared memory of the running block (FC_DYNAMIC_SHARED).
template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(block_or_die("dynamic_shared").dynamic_shared);
}

// The kernel with one converted copy of its arguments; each thread calls it by value.
template <typename... P>
struct KernelCall {
  void (*kernel)(P...);
  std::tuple<std::decay_t<P>...> args;
  static void invoke(const void* self) {
    const auto* c = static_cast<const KernelCall*>(self);
    std::apply(c->kernel, c->args);
  }
};

struct SharedBytes {
  unsigned char* p = nullptr;
  explicit SharedBytes(size_t n)
      : p(static_cast<unsigned char*>(::operator new(n, std::align_val_t(256)))) {}
  ~SharedBytes() { ::operator delete(p, std::align_val_t(256)); }
};

// Runs blocks in the configured order; rethrows the first failure with its context.
inline void run_grid(const void* kernel, dim3 grid, dim3 block, size_t smem,
                     void (*invoke)(const void*), const void* call) {
  Stats& st = stats();
  ++st.launches;
  const unsigned nthreads = block.x * block.y * block.z;
  const uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  // only a random block order is materialized (a grid may have up to 2^31-1 * 65535^2 blocks)
  const Order block_order = config().block_order;
  std::vector<uint64_t> permutation;
  if (block_order == Order::Random) {
    permutation.resize(nblocks);
    std::iota(permutation.begin(), permutation.end(), uint64_t(0));
    std::shuffle(permutation.begin(), permutation.end(), config().rng);
  }
  SharedBytes shared(smem);
  BlockRun b;
  b.invoke = invoke;
  b.call = call;
  b.dynamic_shared = shared.p;
  b.nthreads = nthreads;
  b.nwarps = (nthreads + 31) / 32;
  gridDim = grid;
  blockDim = block;
  current_block() = &b;
  struct Reset {
    BlockRun& b;
    ~Reset() {
      for (Thread& t : b.threads) t.fiber.release();
      current_block() = nullptr;
    }
  } reset{b};
  for (uint64_t k = 0; k < nblocks; ++k) {
    const uint64_t linear = block_order == Order::Random    ? permutation[k]
                            : block_order == Order::Reverse ? nblocks - 1 - k
                                                            : k;
    blockIdx = uint3{unsigned(linear % grid.x), unsigned(linear / grid.x % grid.y),
                     unsigned(linear / (uint64_t(grid.x) * grid.y))};
    b.threads.assign(nthreads, Thread{});
    for (unsigned tid = 0; tid < nthreads; ++tid)
      b.threads[tid].idx = uint3{tid % block.x, tid / block.x % block.y, tid / (block.x * block.y)},
      b.threads[tid].tid = tid;
    b.warp_waiting.assign(b.nwarps, 0);
    b.exited = b.at_barrier = 0;
    b.warned_exit_barrier = false;
    std::memset(shared.p, 0xFF, smem);
    ++st.blocks;
    st.threads += nthreads;
    run_block(b);
    if (b.error) {
      std::string where = "simt: kernel " + kernel_name(kernel) + " failed in block " +
                          dim_str(blockIdx);
      if (b.error_thread) where += " " + thread_str(*b.error_thread);
      where += " " + policy_string() + ": ";
      try {
        std::rethrow_exception(b.error);
      } catch (const std::exception& e) {
        std::string what = e.what();
        if (what.rfind("simt: ", 0) == 0) what = what.substr(6);
        // keep a CUDA error name first, so callers can match on it
        if (what.rfind("cuda", 0) == 0) {
          const size_t colon = what.find(": ");
          throw Error(what.substr(0, colon) + ": " + where + what.substr(colon + 2));
        }
        throw Error(where + what);
      } catch (...) {
        throw Error(where + "unknown exception");
      }
    }
  }
}

// FC_LAUNCH in the emulated build. Synchronous.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "simt::launch: wrong number of kernel arguments");
  std::thread::id& owner = launch_owner();
  if (current_block() && owner == std::this_thread::get_id())
    throw Error("simt: kernel launches from device code are not emulated");
  std::lock_guard<std::mutex> lock(launch_mutex());
  owner = std::this_thread::get_id();
  validate_launch(kernel_key(kernel), grid, block, smem);
  const KernelCall<P...> call{kernel, {static_cast<std::decay_t<P>>(std::forward<A>(args))...}};
  run_grid(kernel_key(kernel), grid, block, smem, &KernelCall<P...>::invoke, &call);
}

}  // namespace simt
