// See batch_norm_simd.h. Each loop body is a template over the element type T, the compute
// type A and the compile-time flags RELU / RES (residual given) / GRES (residual gradient
// written), so the vectorized loops carry no branches; the exported functions pick the
// instantiation. No fast-math: NaN must pass through the ReLU as in PyTorch.
#include "cpu/batch_norm_simd.h"
#include "cpu/batch_norm_simd_inl.h"

namespace fastconv {
namespace cpu {
namespace {
using namespace bn_simd;  // NOLINT: the shared helpers of the two loop files

// The run loops walk `planes` runs of n values, `stride` apart: one call per channel (or
// chunk) rather than per NCHW plane, so small planes (7x7, 4x4) pay no call per plane. The
// reducing ones take `channels` consecutive channels at once (channel j's runs n values after
// channel j - 1's: adjacent NCHW planes) and walk them channel by channel, each channel's runs
// in plane order (`planes` sequential streams through the block, one per plane row); a
// channel's sums are kept in the kLanes lanes of a vector across all its runs (value i of a
// run into lane i % kLanes) and the lanes added up once at the end: one horizontal reduction
// per channel and chunk rather than one per run, which is what 4x4 and 7x7 planes (2 and 6
// vectors per run) paid most for. Each channel sees the same operations whatever `channels`
// is, hence the same bits whatever the blocking.
//
// step(v, lanes...) for each whole vector of a run (v = its first index), then tail(i, k) for
// the values left (lane k).
template <typename A, typename Step, typename Tail>
FC_INLINE void for_each_lane_step(int64_t n, Step step, Tail tail) {
  int64_t i = 0;
  for (; i + kLanes<A> <= n; i += kLanes<A>) step(i);
  for (int64_t k = 0; i + k < n; ++k) tail(i + k, k);
}

template <typename T, typename A>
FC_INLINE void run_sums(const T* x, int64_t planes, int64_t n, int64_t stride, int64_t channels,
                        const A* pivot, A* s1, A* s2) {
  for (int64_t j = 0; j < channels; ++j) {
    const A p = pivot[j];
    VecA<A> a = {}, b = {};
    for (int64_t o = 0; o < planes * stride; o += stride) {
      const T* xj = x + o + j * n;
      for_each_lane_step<A>(
          n,
          [&](int64_t i) {
            const VecA<A> d = load_vec<A>(xj + i) - p;
            a += d;
            b += d * d;
          },
          [&](int64_t i, int64_t k) {
            const A d = static_cast<A>(xj[i]) - p;
            a[k] += d;
            b[k] += d * d;
          });
    }
    s1[j] += lanes_sum<A>(a);
    s2[j] += lanes_sum<A>(b);
  }
}

// y = [relu](x * alpha + beta [+ res]) for the n values at offset o of one channel.
template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void apply_span(const T* x, const T* res, T* y, int64_t o, int64_t n, A alpha, A beta,
                          bool stream) {
  emit(y + o, n, stream, [&](int64_t i) {
    A v = pre_activation<RES>(static_cast<A>(x[o + i]), alpha, beta, res, o + i);
    if constexpr (RELU) v = bn_relu(v);
    return static_cast<T>(v);
  });
}

template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void run_apply(const T* x, const T* res, T* y, int64_t planes, int64_t n,
                         int64_t stride, A alpha, A beta, bool stream) {
  for (int64_t o = 0; o < planes * stride; o += stride) {
    apply_span<RELU, RES>(x, res, y, o, n, alpha, beta, stream);
  }
  if (stream) store_fence();
}

// The planes_* loops walk `planes` consecutive NCHW planes of n values, plane p of channel
// (c0 + p) % c: an elementwise pass in memory order, one call per task however small the planes.
template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void planes_apply(const T* x, const T* res, T* y, int64_t planes, int64_t c0,
                            int64_t c, int64_t n, const A* alpha, const A* beta, bool stream) {
  int64_t ch = c0;
  for (int64_t o = 0; o < planes * n; o += n) {
    apply_span<RELU, RES>(x, res, y, o, n, alpha[ch], beta[ch], stream);
    if (++ch == c) ch = 0;
  }
  if (stream) store_fence();
}

template <bool RELU, bool RES, typename T, typename A>
FC_INLINE void run_backward_sums(const T* dy, const T* x, const T* res, int64_t planes, int64_t n,
                                 int64_t stride, int64_t channels, const A* alpha, const A* beta,
                                 const A* mean, A* s_dy, A* s_dyx) {
  for (int64_t j = 0; j < channels; ++j) {
    const A al = alpha[j], be = beta[j], mu = mean[j];
    VecA<A> a = {}, b = {};
    for (int64_t o = 0; o < planes * stride; o += stride) {
      const int64_t at = o + j * n;
      for_each_lane_step<A>(
          n,
          [&](int64_t i) {
            const VecA<A> xv = load_vec<A>(x + at + i);
            const VecA<A> g =
                masked_vec<RELU, RES, T, A>(dy, res, at + i, xv, al + VecA<A>{}, be + VecA<A>{});
            a += g;
            b += g * (xv - mu);
          },
          [&](int64_t i, int64_t k) {
            const A xv = static_cast<A>(x[at + i]);
            const A g = bn_masked_grad(static_cast<A>(dy[at + i]),
                                       pre_activation<RES>(xv, al, be, res, at + i), RELU);
            a[k] += g;
            b[k] += g * (xv - mu);
          });
    }
    s_dy[j] += lanes_sum<A>(a);
    s_dyx[j] += lanes_sum<A>(b);
  }
}

template <bool RELU, bool RES, bool GRES, typename T, typename A>
FC_INLINE void run_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,
                                  int64_t planes, int64_t n, int64_t stride, A alpha, A beta,
                                  A k_g, A k_x, A k_0, bool stream) {
  const ScalarCoef<A> k{alpha, beta, k_g, k_x, k_0};
  for (int64_t o = 0; o < planes * stride; o += stride) {
    backward_apply_span<RELU, RES, GRES, T, A>(dy, x, res, dx, dres, o, n, stream, k);
  }
  if (stream) store_fence();
}

template <bool RELU, bool RES, bool GRES, typename T, typename A>
FC_INLINE void planes_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,
                                     int64_t planes, int64_t c0, int64_t c, int64_t n,
                                     const A* alpha, const A* beta, const A* k_g, const A* k_x,
                                     const A* k_0, bool stream) {
  int64_t ch = c0;
  for (int64_t o = 0; o < planes * n; o += n) {
    const ScalarCoef<A> k{alpha[ch], beta[ch], k_g[ch], k_x[ch], k_0[ch]};
    backward_apply_span<RELU, RES, GRES, T, A>(dy, x, res, dx, dres, o, n, stream, k);
    if (++ch == c) ch = 0;
  }
  if (stream) store_fence();
}

}  // namespace

#define FC_BN_DEFINE(ATTR, T, A)                                                                \
  ATTR void bn_run_sums(const T* x, int64_t planes, int64_t n, int64_t stride,                 \
                        int64_t channels, const A* pivot, A* s1, A* s2) {                       \
    run_sums(x, planes, n, stride, channels, pivot, s1, s2);                                    \
  }                                                                                             \
  ATTR void bn_run_apply(const T* x, const T* res, T* y, int64_t planes, int64_t n,             \
                         int64_t stride, A alpha, A beta, bool relu, bool stream) {             \
    FC_BN_FLAGS2(run_apply, relu, res != nullptr, x, res, y, planes, n, stride, alpha, beta,    \
                 stream);                                                                       \
  }                                                                                             \
  ATTR void bn_planes_apply(const T* x, const T* res, T* y, int64_t planes, int64_t c0,        \
                            int64_t c, int64_t n, const A* alpha, const A* beta, bool relu,      \
                            bool stream) {                                                      \
    FC_BN_FLAGS2(planes_apply, relu, res != nullptr, x, res, y, planes, c0, c, n, alpha, beta,  \
                 stream);                                                                       \
  }                                                                                             \
  ATTR void bn_run_backward_sums(const T* dy, const T* x, const T* res, int64_t planes,         \
                                 int64_t n, int64_t stride, int64_t channels, const A* alpha,   \
                                 const A* beta, const A* mean, bool relu, A* s_dy, A* s_dyx) {  \
    FC_BN_FLAGS2(run_backward_sums, relu, res != nullptr, dy, x, res, planes, n, stride,        \
                 channels, alpha, beta, mean, s_dy, s_dyx);                                     \
  }                                                                                             \
  ATTR void bn_run_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,         \
                                  int64_t planes, int64_t n, int64_t stride, A alpha, A beta,    \
                                  A k_g, A k_x, A k_0, bool relu, bool stream) {                 \
    FC_BN_FLAGS3(run_backward_apply, relu, res != nullptr, dres != nullptr, dy, x, res, dx,      \
                 dres, planes, n, stride, alpha, beta, k_g, k_x, k_0, stream);                  \
  }                                                                                             \
  ATTR void bn_planes_backward_apply(const T* dy, const T* x, const T* res, T* dx, T* dres,     \
                                     int64_t planes, int64_t c0, int64_t c, int64_t n,          \
                                     const A* alpha, const A* beta, const A* k_g, const A* k_x, \
                                     const A* k_0, bool relu, bool stream) {                    \
    FC_BN_FLAGS3(planes_backward_apply, relu, res != nullptr, dres != nullptr, dy, x, res, dx,   \
                 dres, planes, c0, c, n, alpha, beta, k_g, k_x, k_0, stream);                   \
  }

FC_BN_DEFINE(FC_CPU_CLONES, float, float)
FC_BN_DEFINE(FC_CPU_CLONES, double, double)
FC_BN_DEFINE(, c10::Half, float)
FC_BN_DEFINE(, c10::BFloat16, float)

}  // namespace cpu
}  // namespace fastconv
