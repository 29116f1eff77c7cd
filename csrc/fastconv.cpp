// The fastconv operator library. Each op family defines its schemas, each with its contract,
// in schemas/<family>.cpp (TORCH_LIBRARY_FRAGMENT; the schema strings are in schemas/<family>.h,
// shared with the emulated module). Kernels are registered per backend in cpu/<op>.cpp,
// cuda/<op>.cu and meta/<op>.cpp (the Meta kernels are what FakeTensorMode and torch.compile
// run: shapes, dtypes, memory formats and the same argument checks as the real kernels, from
// checks/<family>.h). Autograd is registered in Python (fastconv/ops/).
#include <Python.h>
#include <torch/library.h>

#include "cpu/buffer_cache.h"
#include "cpu/machine_limits.h"

// `import fastconv._C` only has to run the static registrations below; no Python functions.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

TORCH_LIBRARY(fastconv, m) {
  // ---- benchmark support -----------------------------------------------------------------
  // _fma_peak_gflops: fp32 FMA peak of this CPU in GFLOP/s, measured for `seconds` on
  // `threads` threads (<= 0: all hardware threads); fastconv.bench's "% of limit".
  m.def("_fma_peak_gflops(float seconds, int threads) -> float", &fastconv::fma_peak_gflops);
  // _cpu_cache_held_bytes: bytes of freed CPU output blocks that cpu/buffer_cache.h keeps for
  // reuse (0 with FASTCONV_CPU_CACHE_BYTES=0); for tests.
  m.def("_cpu_cache_held_bytes() -> int", [] {
    return static_cast<int64_t>(fastconv::cpu::BufferCache::instance().held_bytes());
  });
}
