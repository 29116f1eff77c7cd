// FMA-peak microkernel for the benchmark's machine limits; see machine_limits.h.
//
// Design notes (why it looks like this):
// - Each FMA instruction depends only on its own accumulator, so 12 accumulators give 12
//   independent chains: with a 4-cycle latency and 2 FMA ports a core needs >= 8 in flight.
// - acc = acc * a + b with a slightly below 1 converges to b / (1 - a): values stay finite and
//   normal (denormals would slow some cores down), and the compiler cannot fold the loop.
// - The ISA-specific kernels carry __attribute__((target(...))) so this file builds with the
//   project's generic flags (no -march) and still uses AVX-512 where the CPU has it.
// - Threads poll the clock only every kInner iterations, so the check costs < 1 %.
#include "machine_limits.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FASTCONV_X86_DISPATCH 1
#include <immintrin.h>
#endif

namespace fastconv {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kChains = 12;        // independent accumulators per thread
constexpr int64_t kInner = 4096;   // loop trips between clock checks

// One thread's result: FMA lanes executed (x2 = FLOP) and when it started / stopped.
struct ThreadResult {
  double flop = 0;
  Clock::time_point start, end;
};

// FLOP done by `trips` inner iterations of `lanes` FMA lanes each (an FMA is 2 FLOP).
double fma_flop(int64_t trips, int64_t lanes) {
  return 2.0 * static_cast<double>(trips) * static_cast<double>(lanes);
}

// The result is stored here so the compiler must compute the accumulators.
volatile float g_sink = 0.f;

#ifdef FASTCONV_X86_DISPATCH
__attribute__((target("avx512f"))) double fma_avx512(Clock::time_point deadline) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1.0f + 0.01f * i);
  const __m512 a = _mm512_set1_ps(0.999999f);
  const __m512 b = _mm512_set1_ps(1e-6f);
  // No lambda here: a lambda would not inherit the target attribute.
  int64_t trips = 0;
  do {
    for (int64_t t = 0; t < kInner; ++t) {
      for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    trips += kInner;
  } while (Clock::now() < deadline);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  float lanes[16];  // not _mm512_reduce_add_ps: GCC 12 warns about its internals under -Wall
  _mm512_storeu_ps(lanes, s);
  float total = 0.f;
  for (float v : lanes) total += v;
  g_sink = total;
  return fma_flop(trips, kChains * 16);
}

__attribute__((target("avx2,fma"))) double fma_avx2(Clock::time_point deadline) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(1.0f + 0.01f * i);
  const __m256 a = _mm256_set1_ps(0.999999f);
  const __m256 b = _mm256_set1_ps(1e-6f);
  int64_t trips = 0;
  do {
    for (int64_t t = 0; t < kInner; ++t) {
      for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
    trips += kInner;
  } while (Clock::now() < deadline);
  __m256 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_add_ps(s, acc[i]);
  float lanes[8];
  _mm256_storeu_ps(lanes, s);
  float total = 0.f;
  for (float v : lanes) total += v;
  g_sink = total;
  return fma_flop(trips, kChains * 8);
}
#endif

// Portable fallback: kChains x 8 scalar chains; the compiler may vectorize it for whatever
// the build targets. Counted as one mul + one add (2 FLOP) per lane either way.
double fma_portable(Clock::time_point deadline) {
  constexpr int kLanes = kChains * 8;
  float acc[kLanes];
  for (int i = 0; i < kLanes; ++i) acc[i] = 1.0f + 0.001f * i;
  const float a = 0.999999f, b = 1e-6f;
  int64_t trips = 0;
  do {
    for (int64_t t = 0; t < kInner; ++t) {
      for (int i = 0; i < kLanes; ++i) acc[i] = acc[i] * a + b;
    }
    trips += kInner;
  } while (Clock::now() < deadline);
  float total = 0.f;
  for (float v : acc) total += v;
  g_sink = total;
  return fma_flop(trips, kLanes);
}

enum class Isa { kAvx512, kAvx2, kPortable };

Isa detect_isa() {
#ifdef FASTCONV_X86_DISPATCH
  // __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0).
  if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kPortable;
}

double run_kernel(Isa isa, Clock::time_point deadline) {
  switch (isa) {
#ifdef FASTCONV_X86_DISPATCH
    case Isa::kAvx512:
      return fma_avx512(deadline);
    case Isa::kAvx2:
      return fma_avx2(deadline);
#endif
    default:
      return fma_portable(deadline);
  }
}

}  // namespace

const char* fma_peak_isa() {
  switch (detect_isa()) {
    case Isa::kAvx512:
      return "avx512f";
    case Isa::kAvx2:
      return "avx2+fma";
    default:
      return "portable";
  }
}

double fma_peak_gflops(double seconds, int64_t threads) {
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  if (!(seconds > 0)) seconds = 0.1;
  const Isa isa = detect_isa();
  const auto budget =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));

  // All threads wait for one start signal so they run concurrently, not staggered.
  std::atomic<bool> go{false};
  std::atomic<int64_t> ready{0};
  std::vector<ThreadResult> results(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  pool.reserve(results.size());
  for (auto& r : results) {
    pool.emplace_back([&, budget, isa] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      r.start = Clock::now();
      r.flop = run_kernel(isa, r.start + budget);
      r.end = Clock::now();
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  go.store(true, std::memory_order_release);
  for (auto& t : pool) t.join();

  // Conservative aggregate: all FLOP over the span from the first start to the last end.
  double flop = 0;
  auto first = results[0].start, last = results[0].end;
  for (const auto& r : results) {
    flop += r.flop;
    first = std::min(first, r.start);
    last = std::max(last, r.end);
  }
  const double span = std::chrono::duration<double>(last - first).count();
  return span > 0 ? flop / span * 1e-9 : 0.0;
}

}  // namespace fastconv
