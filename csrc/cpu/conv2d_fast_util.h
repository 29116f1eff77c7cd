// Helpers shared by the files of the fast CPU convolution (cpu/conv2d_fast*.cpp): kernel
// selection at run time and the NHWC staging of inputs and results.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cpu/conv2d_fast_kernels.h"
#include "cpu/layout_transpose.h"

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

// Whether pick_kernels() runs the AVX-512 kernels (the ISA the GEMM and Winograd kernels follow).
inline bool avx512_picked() {
  const Kernels* kk = pick_kernels();
  return kk != nullptr && std::strcmp(kk->isa, "avx512") == 0;
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

// n floats, n usually a tile width (6, 12) or a channel block (16, 32). A memcpy of a constant
// size compiles to a few vector moves; a loop of d[i] = s[i] compiled to one scalar move per
// float (the compiler cannot rule out overlap), and std::copy of a run-time size calls memmove.
inline void copy_floats(const float* s, int64_t n, float* d) {
  switch (n) {
    case 6: std::memcpy(d, s, 6 * sizeof(float)); return;
    case 12: std::memcpy(d, s, 12 * sizeof(float)); return;
    case 16: std::memcpy(d, s, 16 * sizeof(float)); return;
    case 32: std::memcpy(d, s, 32 * sizeof(float)); return;
    default: std::copy(s, s + n, d);
  }
}

// The paths that read the weight in place (cpu/conv2d_fast_dot.cpp, the forward;
// cpu/conv2d_fast_dgrad_inplace.cpp, the input gradient) share three tests:
// t is channels_last with its channels adjacent (a tensor with one channel or one pixel can
// pass is_contiguous(ChannelsLast) with another stride there).
inline bool channels_adjacent(const at::Tensor& t) {
  return t.is_contiguous(at::MemoryFormat::ChannelsLast) && t.stride(1) == 1;
}
// Each output channel's weights (K, C, R, S) are one run in (r, s, c) order: a channels_last
// weight, or any 1x1 weight with unit channel stride (the stride of a dimension of size 1 is
// never used, so it is not checked).
inline bool weight_taps_outer(const at::Tensor& w) {
  const int64_t C = w.size(1), R = w.size(2), S = w.size(3);
  return w.stride(1) == 1 && (S == 1 || w.stride(3) == C) && (R == 1 || w.stride(2) == S * C);
}
// Their default rule: few pixels for many weights, where packing the weight would cost a
// fifth to a third of the pass (the 7 x 7 layers at batch 1-2). `pixels`: of the pass's
// destination; `weights`: per destination channel. Measurements at each path's *_applies.
inline bool few_pixels_many_weights(int64_t pixels, int64_t weights) { return pixels <= 128 && weights >= 1024; }

// Reduction steps per pass of ConvRow: the weights of one pass (taps x steps x block floats)
// fill about `bytes`. A function of the geometry only (it sets the summation order).
// 16 KiB (half the Zen 3's L1) by default; the direct kernels' forward and stride-1 input
// gradient rows use 32 KiB (2/3 of this Xeon's 48 KiB L1d): fewer passes over the row, each
// reloading the tiles' partial sums (2 threads, best of 6-8 interleaved, 16 -> 32 KiB: conv1
// batch 1 channels_last 1.99 -> 1.67 ms, NCHW 1.98 -> 1.50, batch 8 channels_last 10.5 ->
// 10.0; AlexNet conv2 NCHW forward 2.62 -> 2.47, channels_last input gradient 3.67 -> 3.44;
// GoogLeNet 3b 5x5 channels_last forward 0.985 -> 0.860; DeepSpeech 5x20 NCHW 1.33 -> 1.19);
// Winograd's GEMM rows (one tap) measured slower with it (res2a forward 4.59 -> 5.08 ms).
constexpr int64_t kPassBytes = 16 << 10, kDirectPassBytes = 32 << 10;
inline int64_t l1_reduction_block(int64_t ntaps, int64_t block, int64_t bytes = kPassBytes) {
  return std::max<int64_t>(8, bytes / (4 * block * std::max<int64_t>(ntaps, 1)));
}

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols, in 8 x 8 tiles so
// both sides touch only 8 cache lines at a time.
inline void transpose_copy(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                           int64_t rows, int64_t cols) {
  constexpr int64_t T = 8;
  for (int64_t i0 = 0; i0 < rows; i0 += T) {
    const int64_t i1 = std::min(rows, i0 + T);
    for (int64_t j0 = 0; j0 < cols; j0 += T) {
      const int64_t j1 = std::min(cols, j0 + T);
      for (int64_t j = j0; j < j1; ++j) {
        for (int64_t i = i0; i < i1; ++i) dst[j * dst_stride + i] = src[i * src_stride + j];
      }
    }
  }
}

// A row or plane length (elements) of at least n, a whole number of 64-byte lines, and an odd
// number of them. Rows or planes at a power-of-two stride all map to the same few cache sets
// (L1: 4 KiB period, 12 ways; L2: 128 KiB), so writing or reading 16-36 of them at once (the
// Winograd transforms' alpha^2 planes) evicts lines still in use; at an odd number of lines
// apart they spread over all sets.
template <class T>
int64_t odd_lines(int64_t n) {
  const int64_t per_line = 64 / static_cast<int64_t>(sizeof(T)), lines = ceil_div(n, per_line);
  return (lines % 2 == 0 ? lines + 1 : lines) * per_line;
}

// At least `elements` elements of v (grown when short, never shrunk, so reuse across calls
// does not page-fault a fresh allocation every time), from a 64-byte boundary. glibc puts a
// large block 16 bytes past a page boundary, and a micro-kernel's 64-byte vector loads from
// such a buffer each straddle two cache lines: two load slots per load. (The GEMM's packed B
// panels did: res4 1x1 channels_last forward ~10% slower.)
template <class T>
T* aligned_scratch(std::vector<T>& v, int64_t elements) {
  constexpr int64_t pad = 64 / sizeof(T);
  if (static_cast<int64_t>(v.size()) < elements + pad) {
    v = std::vector<T>();  // free first: no old + new peak
    v.resize(elements + pad);
  }
  const auto addr = reinterpret_cast<uintptr_t>(v.data());
  return v.data() + ((64 - addr % 64) % 64) / sizeof(T);
}

// Scratch memory reused across calls (per thread, four slots: a pass stages at most two
// tensors in slots 0 and 1 on the calling thread; slot 2 holds a worker's packed weights, slot
// 3 the weight gradient's accumulators, or the NHWC result of an NCHW forward pass that the
// implicit GEMM runs in its channels_last form, cpu/conv2d_fast_im2col.cpp).
inline float* workspace(int slot, int64_t floats) {
  thread_local std::vector<float> slots[4];
  return aligned_scratch(slots[slot], floats);
}

// x (N, C, H, W) in either format as (N, Hp, Wp, C) NHWC data whose rows [top, top + H) and
// columns [left, left + W) hold x and whose other elements are zero: x's own memory when it
// is channels_last and needs no padding, else a copy in workspace `slot`. With `stream` an NCHW
// x is transposed with non-temporal stores (whole lines where C is a multiple of 16): for a copy
// that every thread then reads whole, which is faster from memory than from the other core's
// L2 where the transposing thread left it dirty (the first layers' weight gradient: ResNet-50
// conv1, 3.2 MB of grad_output, NCHW, 2 threads, best of 8-10 interleaved: batch 1 2.14 -> 1.97
// and 2.44 -> 2.31 ms in two runs, batch 8 18.7 -> 17.3 ms).
inline const float* nhwc_padded(const at::Tensor& x, int64_t top, int64_t Hp, int64_t left,
                                int64_t Wp, int slot, bool stream = false) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const float* src = x.data_ptr<float>();
  const bool nhwc = x.permute({0, 2, 3, 1}).is_contiguous();
  if (top == 0 && Hp == H && left == 0 && Wp == W && nhwc) return src;
  const Kernels* kk = pick_kernels();  // non-null: only the fast paths stage
  const auto transpose = kk ? kk->transpose : &transpose_copy;
  float* dst = workspace(slot, N * Hp * Wp * C);
  if (Hp != H) {  // zero rows above and below the image
    for (int64_t n = 0; n < N; ++n) {
      float* img = dst + n * Hp * Wp * C;
      std::fill(img, img + top * Wp * C, 0.0f);
      std::fill(img + (top + H) * Wp * C, img + Hp * Wp * C, 0.0f);
    }
  }
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nh = begin; nh < end; ++nh) {
      float* row = dst + ((nh / H) * Hp + top + nh % H) * Wp * C;
      std::fill(row, row + left * C, 0.0f);
      std::fill(row + (left + W) * C, row + Wp * C, 0.0f);
      if (nhwc) {
        std::copy(src + nh * W * C, src + (nh + 1) * W * C, row + left * C);
      } else {  // NCHW: the (C, W) slice of row h, transposed
        const int64_t n = nh / H, h = nh % H;
        if (stream) {
          transpose_32bit_streaming(src + (n * C * H + h) * W, H * W, row + left * C, C, C, W);
        } else {
          transpose(src + (n * C * H + h) * W, H * W, row + left * C, C, C, W);
        }
      }
    }
  });
  return dst;
}
inline const float* nhwc_with_column_padding(const at::Tensor& x, int64_t left, int64_t Wp, int slot,
                                             bool stream = false) {
  return nhwc_padded(x, 0, x.size(2), left, Wp, slot, stream);
}

// Element (n, c, y, x) of a contiguous 4-D result (either format) is at
// data + n * sn + c * sc + y * sy + x * sx; the kernels store NCHW results directly
// (channel stride sc = H * W) instead of transposing an NHWC copy.
struct Dest {
  float* data;
  int64_t sn, sc, sy, sx;
  explicit Dest(at::Tensor& t)
      : data(t.data_ptr<float>()), sn(t.stride(0)), sc(t.stride(1)), sy(t.stride(2)), sx(t.stride(3)) {}
  float* at(int64_t n, int64_t c, int64_t y, int64_t x) const { return data + n * sn + c * sc + y * sy + x * sx; }
};

}  // namespace fastconv::cpu::fastk
