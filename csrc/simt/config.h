// simt configuration: CUDA qualifiers and built-in variables for g++, the scheduling policy,
// the emulated target's properties, and the error type. See shared/SIMT.md sections 3, 4, 6.
#pragma once
#ifndef SIMT_EMULATION
#error "csrc/simt is the emulated build only (-DSIMT_EMULATION)"
#endif
#if defined(__CUDACC__) || defined(__CUDA_ARCH__) || defined(__NVCC__)
#error "never define __CUDACC__/__CUDA_ARCH__/__NVCC__ in the emulated build (SIMT.md 2)"
#endif

#include <vector_types.h>  // uint3, dim3, float4, ... from the CUDA toolkit (host-usable)

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>

// ---- qualifiers (SIMT.md 6, pitfalls 1 and 3) -------------------------------------------------
// CUDA's host_defines.h gives some of these attribute meanings for host compilers; the emulator
// wants them empty. __shared__ is static: blocks run one at a time on one OS thread.
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __constant__
#undef __managed__
#undef __launch_bounds__
#undef __noinline__
#undef __restrict__
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __constant__
#define __managed__
#define __launch_bounds__(...)
#define __noinline__
#define __restrict__

// ---- built-in variables: real globals, set by the scheduler before every resume ------------
inline uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;
constexpr int warpSize = 32;

namespace simt {

// Errors of the emulator and of emulated kernels. The message starts with the CUDA error name
// where there is one (cudaErrorInvalidConfiguration, ...), so tests and users can match on it.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The properties of the emulated GPU (launch validation and the launchers' LaunchDevice).
struct Target {
  const char* name;
  int sm_count;
  int max_threads_per_sm;
  size_t smem_default;  // dynamic shared memory per block without opt-in
  size_t smem_optin;    // cudaDevAttrMaxSharedMemoryPerBlockOptin
  int regs_per_sm;
};

inline const Target kTargets[] = {
    {"sm_80", 108, 2048, 48 * 1024, 163 * 1024, 65536},
    {"sm_90", 132, 2048, 48 * 1024, 227 * 1024, 65536},
};

enum class Order { Forward, Reverse, Random };

inline const char* order_name(Order o) {
  return o == Order::Forward ? "forward" : o == Order::Reverse ? "reverse" : "random";
}

inline Order parse_order(const std::string& s) {
  if (s == "forward") return Order::Forward;
  if (s == "reverse") return Order::Reverse;
  if (s == "random") return Order::Random;
  throw Error("simt: unknown schedule '" + s + "' (expected forward, reverse or random)");
}

inline const Target& find_target(const std::string& name) {
  for (const Target& t : kTargets)
    if (name == t.name) return t;
  throw Error("simt: unknown target '" + name + "' (expected sm_80 or sm_90)");
}

struct Config {
  Order order = Order::Forward;        // threads within a pass
  Order block_order = Order::Forward;  // blocks within a launch
  uint64_t seed = 0;
  bool strict = true;
#if defined(__SANITIZE_ADDRESS__)
  size_t stack_bytes = 256 * 1024;  // ASan's redzones make frames several times larger
#else
  size_t stack_bytes = 64 * 1024;
#endif
  const Target* target = &kTargets[0];
  std::mt19937_64 rng{0};  // advanced by every random decision since the last configure()
};

inline Config make_default_config() {
  Config c;
  if (const char* v = std::getenv("SIMT_ORDER")) c.order = parse_order(v);
  c.block_order = c.order;
  if (const char* v = std::getenv("SIMT_BLOCK_ORDER")) c.block_order = parse_order(v);
  if (const char* v = std::getenv("SIMT_SEED")) c.seed = std::strtoull(v, nullptr, 10);
  if (const char* v = std::getenv("SIMT_STRICT")) c.strict = std::strcmp(v, "0") != 0;
  if (const char* v = std::getenv("SIMT_STACK_KB")) c.stack_bytes = std::strtoull(v, nullptr, 10) * 1024;
  if (const char* v = std::getenv("SIMT_TARGET")) c.target = &find_target(v);
  c.rng.seed(c.seed);
  return c;
}

inline Config& config() {
  static Config c = make_default_config();
  return c;
}

// Sets the policy; restarts the random stream, so a run is reproducible from its seed.
inline void configure(Order order, Order block_order, uint64_t seed, bool strict,
                      const std::string& target) {
  Config& c = config();
  c.order = order;
  c.block_order = block_order;
  c.seed = seed;
  c.strict = strict;
  c.target = &find_target(target);
  c.rng.seed(seed);
}

// "[simt order=random seed=3 block_order=forward strict=1 target=sm_80]": printed in every
// failure so that it can be reproduced.
inline std::string policy_string() {
  const Config& c = config();
  return std::string("[simt order=") + order_name(c.order) + " seed=" + std::to_string(c.seed) +
         " block_order=" + order_name(c.block_order) + " strict=" + (c.strict ? "1" : "0") +
         " target=" + c.target->name + "]";
}

// Counters for tests and measurements.
struct Stats {
  uint64_t launches = 0, blocks = 0, threads = 0, switches = 0, warnings = 0;
};
inline Stats& stats() {
  static Stats s;
  return s;
}

inline void warn(const std::string& msg) {
  ++stats().warnings;
  std::fprintf(stderr, "simt warning: %s %s\n", msg.c_str(), policy_string().c_str());
}

}  // namespace simt
