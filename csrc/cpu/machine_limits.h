// Machine limits measured by the benchmark runner (fastconv.bench) in the same run as the
// kernels it times, so "% of limit" is relative to this machine, never a datasheet guess.
// ATen-free: the implementation uses std::thread only and also compiles stand-alone.
#pragma once

#include <cstdint>

namespace fastconv {

// Peak fp32 fused multiply-add throughput in GFLOP/s (2 FLOP per FMA lane).
//
// Runs an FMA microkernel on `threads` threads (<= 0: std::thread::hardware_concurrency())
// for about `seconds` of wall time each. Every thread keeps 12 independent vector
// accumulators in registers, enough to cover FMA latency x FMA ports on current x86 cores,
// so the result is bounded by the FMA units rather than by dependency chains. The vector
// width is chosen at run time: AVX-512 when the CPU and OS support it, else AVX2+FMA,
// else a portable loop the compiler vectorizes as it can. The FLOP count is independent of
// the path taken; the rate is total FLOP / wall time from the common start to the last
// thread's end.
double fma_peak_gflops(double seconds, int64_t threads);

// Which kernel fma_peak_gflops uses on this CPU: "avx512f", "avx2+fma" or "portable".
const char* fma_peak_isa();

}  // namespace fastconv
