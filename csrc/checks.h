// Argument validation shared by every backend and by the Meta (fake) kernels, so that a bad
// call raises the same error eagerly, under FakeTensorMode and under torch.compile.
// Messages follow one pattern: "fastconv::<op>: expected <what>, got <actual>".
// This file holds the shared helpers; each op family has its checks in checks/<family>.h.
#pragma once
#include <ATen/ATen.h>

#include <sstream>
#include <string>

namespace fastconv {

#define FC_CHECK(cond, op, ...) TORCH_CHECK(cond, "fastconv::", op, ": expected ", __VA_ARGS__)
#define FC_CHECK_VALUE(cond, op, ...) \
  TORCH_CHECK_VALUE(cond, "fastconv::", op, ": expected ", __VA_ARGS__)

inline std::string shape_str(c10::SymIntArrayRef sizes) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << "]";
  return s.str();
}

inline void check_floating(const at::Tensor& t, const char* op, const char* name) {
  FC_CHECK(at::isFloatingType(t.scalar_type()), op, name,
           " of dtype float32, float64, float16 or bfloat16, got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* op,
                              const char* name_a, const char* name_b) {
  FC_CHECK(a.device() == b.device(), op, name_a, " and ", name_b, " on the same device, got ",
           a.device(), " and ", b.device());
}

inline void check_int_pair(at::IntArrayRef v, const char* op, const char* name, int64_t min_value) {
  FC_CHECK(v.size() == 2, op, name, " to have 2 values, got ", v.size());
  FC_CHECK(v[0] >= min_value && v[1] >= min_value, op, name, " >= ", min_value, ", got ", v);
}

// The error for an index outside [0, plane) found by a kernel, same text on every backend.
[[noreturn]] inline void fail_index_out_of_range(const char* op, int64_t index, int64_t plane) {
  TORCH_CHECK_INDEX(false, "fastconv::", op, ": expected indices in [0, ", plane, "), got ", index);
}

}  // namespace fastconv
