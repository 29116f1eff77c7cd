// Helpers shared by the files of the fast CPU convolution (cpu/conv2d_fast*.cpp): kernel
// selection at run time and the NHWC staging of inputs and results.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "cpu/conv2d_fast_kernels.h"

namespace fastconv::cpu::fastk {

// FASTCONV_CPU_KERNELS=generic sends every case to the generic kernels; =avx2 keeps an
// AVX-512 machine on the AVX2 kernels (so tests can cover both there).
inline const Kernels* pick_kernels() {
  static const bool has_avx512 = __builtin_cpu_supports("avx512f");
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const char* env = std::getenv("FASTCONV_CPU_KERNELS");
  if (env != nullptr && std::strcmp(env, "generic") == 0) return nullptr;
  const bool avx2_forced = env != nullptr && std::strcmp(env, "avx2") == 0;
  if (has_avx512 && !avx2_forced) return &fastk::avx512_kernels();
  if (has_avx2) return &fastk::avx2_kernels();
  return nullptr;
}

// Calls the fast kernels have handled in this process (read by the private op
// fastconv::_conv2d_cpu_fast_info, so tests can tell that a case did not fall back).
inline std::atomic<int64_t> handled_calls{0};
inline bool handled() {
  handled_calls.fetch_add(1, std::memory_order_relaxed);
  return true;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// x (N, C, H, W) in either format as an (N, H, Wp, C) NHWC buffer whose columns
// [left, left + W) hold x and whose other columns are zero. A channels_last x without
// padding is returned as is (a permuted view, contiguous in NHWC order).
inline at::Tensor nhwc_with_column_padding(const at::Tensor& x, int64_t left, int64_t Wp) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const at::Tensor view = x.permute({0, 2, 3, 1});
  if (left == 0 && Wp == W && view.is_contiguous()) return view;
  at::Tensor buf = at::empty({N, H, Wp, C}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (left > 0) buf.narrow(2, 0, left).zero_();
  if (Wp > left + W) buf.narrow(2, left + W, Wp - left - W).zero_();
  buf.narrow(2, left, W).copy_(view);
  return buf;
}

// Where an NHWC result is written: `out` itself when channels_last, else a scratch buffer
// that finish() transposes into `out`.
struct NhwcResult {
  at::Tensor& out;
  at::Tensor scratch;
  float* data;
  explicit NhwcResult(at::Tensor& o) : out(o) {
    if (o.is_contiguous(at::MemoryFormat::ChannelsLast) && o.dim() == 4) {
      data = o.data_ptr<float>();
    } else {
      scratch = at::empty({o.size(0), o.size(2), o.size(3), o.size(1)}, o.options());
      data = scratch.data_ptr<float>();
    }
  }
  void finish() {
    if (scratch.defined()) out.copy_(scratch.permute({0, 3, 1, 2}));
  }
};

}  // namespace fastconv::cpu::fastk
