// Max-pool family kernels: max_pool2d forward, its backward (a deterministic gather),
// max_unpool2d (zero + scatter) and its backward (a gather), for NCHW and channels_last (NHWC).
// Device code only, compiled by nvcc and by g++ against csrc/simt (SIMT.md): no ATen, no
// <<<>>>, no inline PTX, no __CUDA_ARCH__ bodies. Launch plans: cuda/launch/max_pool2d.h.
//
// Conventions of every kernel here:
// - One thread per output element (or per group of V channels in NHWC), grid-stride loops,
//   all index math in int64_t (tensors may exceed 2^31 elements).
// - scalar_t is the storage type (float, double, c10::Half, c10::BFloat16), acc_t the compute
//   type (at::opmath_type<scalar_t>: float for half/bf16); the launcher picks both.
// - "plane" is one (n, c) image; pooling indices are flat h * W + w within a plane.
// - Window geometry and the argmax rule come from common/pool.h, shared with the CPU kernels.
#pragma once
#include <cstdint>
#include <limits>

#include "common/pool.h"
#include "cuda/launch/launch.h"

namespace fastconv {
namespace FC_KERNEL_NS {

constexpr int kPoolThreads = 256;  // block size of every kernel here (plans and launch bounds)

// Geometry of one max_pool2d call; input and output have the same n and c.
struct Pool2dShape {
  int64_t n, c, h, w;  // input
  int64_t out_h, out_w;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
};

// V consecutive elements moved as one load/store (LDG.64/.128 on the GPU). The alignment is
// capped at 16 bytes, the widest access; plans check the pointers against pack_align.
template <typename T, int V>
constexpr int pack_align() {
  return sizeof(T) * V < 16 ? int(sizeof(T) * V) : 16;
}
template <typename T, int V>
struct alignas(pack_align<T, V>()) Pack {
  T v[V];
};


// ---- max_pool2d forward --------------------------------------------------------------------
// PyTorch's scan: start from -inf with the index of the window's first in-range position
// (so an all -inf window still reports a position inside it), rows then columns, and replace
// on a strictly greater value or a NaN (pool_takes).

// NCHW: one thread per output element; `total` = n * c * out_h * out_w.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kPoolThreads)
    max_pool2d_forward_nchw(const scalar_t* input, scalar_t* output, int64_t* indices,
                            Pool2dShape s, int64_t total) {
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    const int64_t ow = i % s.out_w;
    const int64_t oh = (i / s.out_w) % s.out_h;
    const int64_t plane = i / (s.out_w * s.out_h);
    const PoolWindow wh = pool_window(oh, s.h, s.kernel_h, s.stride_h, s.pad_h, s.dilation_h);
    const PoolWindow ww = pool_window(ow, s.w, s.kernel_w, s.stride_w, s.pad_w, s.dilation_w);
    const scalar_t* x = input + plane * s.h * s.w;
    acc_t best = -std::numeric_limits<acc_t>::infinity();
    int64_t best_index = wh.start * s.w + ww.start;
    for (int64_t h = wh.start; h < wh.end; h += s.dilation_h) {
      for (int64_t w = ww.start; w < ww.end; w += s.dilation_w) {
        const acc_t v = static_cast<acc_t>(x[h * s.w + w]);
        if (pool_takes(v, best)) {
          best = v;
          best_index = h * s.w + w;
        }
      }
    }
    output[i] = static_cast<scalar_t>(best);
    indices[i] = best_index;
  }
}

// NHWC: one thread per V consecutive channels of one output pixel, so consecutive threads
// read consecutive channels of the same input pixel (coalesced) and the window arithmetic is
// paid once per V channels. Requires c % V == 0 and pack-aligned pointers (checked by the
// plan; V = 1 otherwise). `total` = n * out_h * out_w * (c / V).
template <typename scalar_t, typename acc_t, int V>
__global__ void __launch_bounds__(kPoolThreads)
    max_pool2d_forward_nhwc(const scalar_t* input, scalar_t* output, int64_t* indices,
                            Pool2dShape s, int64_t total) {
  const int64_t groups = s.c / V;
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    const int64_t group = i % groups;
    const int64_t pixel = i / groups;  // (n * out_h + oh) * out_w + ow
    const int64_t ow = pixel % s.out_w;
    const int64_t oh = (pixel / s.out_w) % s.out_h;
    const int64_t n = pixel / (s.out_w * s.out_h);
    const PoolWindow wh = pool_window(oh, s.h, s.kernel_h, s.stride_h, s.pad_h, s.dilation_h);
    const PoolWindow ww = pool_window(ow, s.w, s.kernel_w, s.stride_w, s.pad_w, s.dilation_w);
    const scalar_t* x = input + n * s.h * s.w * s.c + group * V;
    acc_t best[V];
    int64_t best_index[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      best[j] = -std::numeric_limits<acc_t>::infinity();
      best_index[j] = wh.start * s.w + ww.start;
    }
    for (int64_t h = wh.start; h < wh.end; h += s.dilation_h) {
      for (int64_t w = ww.start; w < ww.end; w += s.dilation_w) {
        const Pack<scalar_t, V> p =
            *reinterpret_cast<const Pack<scalar_t, V>*>(x + (h * s.w + w) * s.c);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const acc_t v = static_cast<acc_t>(p.v[j]);
          if (pool_takes(v, best[j])) {
            best[j] = v;
            best_index[j] = h * s.w + w;
          }
        }
      }
    }
    Pack<scalar_t, V> out;
    Pack<int64_t, V> out_index;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      out.v[j] = static_cast<scalar_t>(best[j]);
      out_index.v[j] = best_index[j];
    }
    // output offset pixel * c + group * V == i * V
    *reinterpret_cast<Pack<scalar_t, V>*>(output + i * V) = out;
    *reinterpret_cast<Pack<int64_t, V>*>(indices + i * V) = out_index;
  }
}

// ---- max_pool2d backward: deterministic gather ---------------------------------------------
// One thread per input element sums grad_output over the outputs whose index names it. Taps
// are visited kh = kernel_h-1 .. 0 (outer) and kw = kernel_w-1 .. 0 (inner): output = (in +
// pad - k * dilation) / stride grows as k falls, so the sum runs in ascending row-major output
// order, PyTorch's order, and distinct taps give distinct outputs (nothing counted twice).
// No atomics: every input element is written by exactly one thread.
// The tap loops stay rolled (`#pragma unroll 1`): pool_output_for_tap divides in 64 bits, whose
// slow path is a CALL, and unrolled copies of it made ptxas spill around the calls.

// Calls f(oh * out_w + ow) for every output whose window reaches input (h, w), in ascending
// output order (kernel taps in descending order): PyTorch's order of additions in the
// backward, so sums are bit-identical to its scatter. Shared by both layouts' gathers.
template <typename F>
__device__ __forceinline__ void for_each_output_reaching(int64_t h, int64_t w,
                                                         const Pool2dShape& s, F f) {
#pragma unroll 1
  for (int64_t kh = s.kernel_h - 1; kh >= 0; --kh) {
    const int64_t oh = pool_output_for_tap(h, kh, s.out_h, s.stride_h, s.pad_h, s.dilation_h);
    if (oh < 0) continue;
#pragma unroll 1
    for (int64_t kw = s.kernel_w - 1; kw >= 0; --kw) {
      const int64_t ow = pool_output_for_tap(w, kw, s.out_w, s.stride_w, s.pad_w, s.dilation_w);
      if (ow >= 0) f(oh * s.out_w + ow);
    }
  }
}

// NCHW: `total` = n * c * h * w (grad_input elements).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kPoolThreads)
    max_pool2d_backward_nchw(const scalar_t* grad_output, const int64_t* indices,
                             scalar_t* grad_input, Pool2dShape s, int64_t total) {
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    const int64_t w = i % s.w;
    const int64_t h = (i / s.w) % s.h;
    const int64_t plane = i / (s.w * s.h);
    const int64_t target = h * s.w + w;
    const int64_t base = plane * s.out_h * s.out_w;
    acc_t sum = acc_t(0);
    for_each_output_reaching(h, w, s, [&](int64_t plane_offset) {
      const int64_t o = base + plane_offset;
      if (indices[o] == target) sum += static_cast<acc_t>(grad_output[o]);
    });
    grad_input[i] = static_cast<scalar_t>(sum);
  }
}

// NHWC: one thread per V consecutive channels of one input pixel (same V rule as the forward).
// grad_output is read only where some channel's index matches. `total` = n * h * w * (c / V).
template <typename scalar_t, typename acc_t, int V>
__global__ void __launch_bounds__(kPoolThreads)
    max_pool2d_backward_nhwc(const scalar_t* grad_output, const int64_t* indices,
                             scalar_t* grad_input, Pool2dShape s, int64_t total) {
  const int64_t groups = s.c / V;
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    const int64_t group = i % groups;
    const int64_t pixel = i / groups;  // (n * h + ih) * w + iw
    const int64_t w = pixel % s.w;
    const int64_t h = (pixel / s.w) % s.h;
    const int64_t n = pixel / (s.w * s.h);
    const int64_t target = h * s.w + w;
    const int64_t base = n * s.out_h * s.out_w;  // first output pixel of image n
    acc_t sum[V];
#pragma unroll
    for (int j = 0; j < V; ++j) sum[j] = acc_t(0);
    for_each_output_reaching(h, w, s, [&](int64_t plane_offset) {
      const int64_t o = (base + plane_offset) * s.c + group * V;
      const Pack<int64_t, V> idx = *reinterpret_cast<const Pack<int64_t, V>*>(indices + o);
      bool any = false;
#pragma unroll
      for (int j = 0; j < V; ++j) any |= idx.v[j] == target;
      if (!any) return;
      const Pack<scalar_t, V> g = *reinterpret_cast<const Pack<scalar_t, V>*>(grad_output + o);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        if (idx.v[j] == target) sum[j] += static_cast<acc_t>(g.v[j]);
      }
    });
    Pack<scalar_t, V> out;
#pragma unroll
    for (int j = 0; j < V; ++j) out.v[j] = static_cast<scalar_t>(sum[j]);
    *reinterpret_cast<Pack<scalar_t, V>*>(grad_input + i * V) = out;  // pixel * c + group * V
  }
}

// ---- max_unpool2d and its backward ----------------------------------------------------------
// Both walk the small tensor (input / indices, planes of in_plane = H * W) in memory order and
// map element i with index idx to the element of the big tensor (planes of out_plane = OH * OW)
// in the same (n, c): NCHW plane * out_plane + idx, NHWC (n * out_plane + idx) * c + ch.
struct UnpoolShape {
  int64_t c;          // channels
  int64_t in_plane;   // H * W of input / indices
  int64_t out_plane;  // OH * OW of the output / grad_output
};

template <bool kChannelsLast>
FC_HD int64_t unpool_target(int64_t i, int64_t idx, const UnpoolShape& s) {
  if (kChannelsLast) return ((i / s.c) / s.in_plane * s.out_plane + idx) * s.c + i % s.c;
  return (i / s.in_plane) * s.out_plane + idx;
}

// Whether index idx (at position i of indices) is inside [0, out_plane); one outside is never
// dereferenced. The smallest logical (row-major NCHW) position holding one is kept in
// *first_bad (initialized to INT64_MAX by the launcher), so the launcher reports the same index
// whatever the layout and schedule. Only the error path pays for the atomic.
template <bool kChannelsLast>
__device__ __forceinline__ bool unpool_index_ok(int64_t i, int64_t idx, const UnpoolShape& s,
                                                unsigned long long* first_bad) {
  if (idx >= 0 && idx < s.out_plane) return true;
  int64_t logical = i;
  if (kChannelsLast) {
    const int64_t ch = i % s.c;
    const int64_t pixel = (i / s.c) % s.in_plane;
    const int64_t n = (i / s.c) / s.in_plane;
    logical = (n * s.c + ch) * s.in_plane + pixel;
  }
  atomicMin(first_bad, static_cast<unsigned long long>(logical));
  return false;
}

// The zero background of max_unpool2d's output (a kernel, not a memset, so the emulated build
// runs exactly this plan).
template <typename scalar_t>
__global__ void __launch_bounds__(kPoolThreads) fill_zero(scalar_t* out, int64_t total) {
  for (int64_t i = grid_first(); i < total; i += grid_step()) out[i] = scalar_t(0);
}

// max_unpool2d scatter, one thread per input element; `total` = n * c * in_plane. Repeated
// indices within a plane race: with different values the survivor is unspecified on CUDA (as
// in PyTorch's CUDA kernel); max-pool indices repeat only with equal values, so unpooling a
// max-pool result is deterministic.
template <typename scalar_t, bool kChannelsLast>
__global__ void __launch_bounds__(kPoolThreads)
    max_unpool2d_scatter(const scalar_t* input, const int64_t* indices, scalar_t* output,
                         UnpoolShape s, int64_t total, unsigned long long* first_bad) {
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    const int64_t idx = indices[i];
    if (unpool_index_ok<kChannelsLast>(i, idx, s, first_bad))
      output[unpool_target<kChannelsLast>(i, idx, s)] = input[i];
  }
}

// _max_unpool2d_backward gather: out[i] = grad_output[same (n, c), indices[i]], one thread per
// element of indices; `total` = n * c * in_plane. A bad index writes 0 and is reported.
template <typename scalar_t, bool kChannelsLast>
__global__ void __launch_bounds__(kPoolThreads)
    max_unpool2d_gather(const scalar_t* grad_output, const int64_t* indices, scalar_t* out,
                        UnpoolShape s, int64_t total, unsigned long long* first_bad) {
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    const int64_t idx = indices[i];
    out[i] = unpool_index_ok<kChannelsLast>(i, idx, s, first_bad)
                 ? grad_output[unpool_target<kChannelsLast>(i, idx, s)]
                 : scalar_t(0);
  }
}

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
