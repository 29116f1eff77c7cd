// fastconv._simt: the emulated CUDA kernels as their own extension module and op namespace
// (SIMT.md 2), so the emulator's macros and the kernels compiled into fastconv::simt never meet
// the real build. TORCH_LIBRARY(fastconv_simt) here has the private controls; each
// simt/<op>.cpp adds the schemas of the fastconv ops it emulates (schemas/<family>.h) with
// TORCH_LIBRARY_FRAGMENT; fastconv.testing.emulate_cuda() redirects
// torch.ops.fastconv.<op> to torch.ops.fastconv_simt.<op> for CPU tensors.
#include <Python.h>
#include <torch/library.h>

#include "simt/simt.h"

extern "C" PyObject* PyInit__simt(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_simt", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

namespace {

std::string str(c10::string_view s) { return std::string(s.data(), s.size()); }

void configure(c10::string_view order, c10::string_view block_order, int64_t seed, bool strict,
               c10::string_view target) {
  ::simt::configure(::simt::parse_order(str(order)), ::simt::parse_order(str(block_order)),
                    static_cast<uint64_t>(seed), strict, str(target));
}

// [launches, blocks, threads, fiber switches, warnings] since the module was loaded.
std::vector<int64_t> stats() {
  const ::simt::Stats& s = ::simt::stats();
  return {int64_t(s.launches), int64_t(s.blocks), int64_t(s.threads), int64_t(s.switches),
          int64_t(s.warnings)};
}

std::string policy() { return ::simt::policy_string(); }

}  // namespace

TORCH_LIBRARY(fastconv_simt, m) {
  // _configure: the scheduling policy of later launches. order / block_order: "forward",
  // "reverse" or "random" (threads within a pass / blocks within a launch); seed: of the random
  // orders (the random stream restarts here, so a run is reproducible); strict: a barrier
  // after exit or a shuffle reading a non-participating lane is an error (else a warning and
  // poison); target: "sm_80" or "sm_90" (SM count, shared-memory limits).
  m.def("_configure(str order, str block_order, int seed, bool strict, str target) -> ()",
        &configure);
  m.def("_stats() -> int[]", &stats);
  m.def("_policy() -> str", &policy);
}
