// Generic CPU convolution kernels (contract in cpu/conv2d_generic.h): direct convolutions in
// loop orders that vectorize without reassociating any sum, so every result element is one
// thread's sum in a fixed order (deterministic at any thread count).
//
// NCHW: the work unit is a plane. Forward and input gradient accumulate a whole output
// (resp. input) plane in a float/double buffer, one kernel tap at a time, with the innermost
// loop running along a row (contiguous for stride 1). Weight gradient: one unit per (k, c)
// weight slice; for each tap a row of per-column partial sums is accumulated over (n, p) and
// then summed in column order.
// channels_last: the work unit is a pixel (forward: output pixel, input gradient: input
// pixel), the innermost loop runs over output (resp. input) channels of one group against a
// weight transposed so those channels are contiguous. Weight gradient: one unit per output
// channel (or per block of channels for depthwise), innermost loop over input channels.
#include "cpu/conv2d_generic.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace fastconv::cpu {
namespace {

// A grain for at::parallel_for: enough units per task that each carries ~64k multiply-adds.
int64_t grain_for(int64_t macs_per_unit) {
  return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, macs_per_unit));
}

// Per kernel tap along one dimension, the output range that reads inside the input.
std::vector<ConvRange> tap_ranges(int64_t taps, int64_t in_size, int64_t out_size,
                                  int64_t stride, int64_t pad, int64_t dilation) {
  std::vector<ConvRange> ranges(taps);
  for (int64_t t = 0; t < taps; ++t) {
    ranges[t] = conv_outputs_reading_inside(t, in_size, out_size, stride, pad, dilation);
  }
  return ranges;
}

// One step of the NCHW tap walk: kernel tap (r, s) on output row p, which reads input row ih;
// output columns q in [q.begin, q.end) read input columns q * stride_w + off, all inside.
struct TapRow {
  int64_t r, s, p, ih, off;
  ConvRange q;
};

// The NCHW tap walk of the three passes, in (r, p, s) order: f(TapRow) for every tap and output
// row whose input row is inside. cols: tap_ranges along the width, computed once per call.
template <typename F>
void for_each_tap_row(const ConvGeometry& g, const std::vector<ConvRange>& cols, F&& f) {
  for (int64_t r = 0; r < g.r; ++r) {
    const ConvRange rows = conv_outputs_reading_inside(r, g.h, g.p, g.stride_h, g.pad_h, g.dil_h);
    for (int64_t p = rows.begin; p < rows.end; ++p) {
      const int64_t ih = conv_input_coord(p, r, g.stride_h, g.pad_h, g.dil_h);
      for (int64_t s = 0; s < g.s; ++s) {
        f(TapRow{r, s, p, ih, conv_input_coord(0, s, g.stride_w, g.pad_w, g.dil_w), cols[s]});
      }
    }
  }
}

template <typename scalar_t, typename acc_t>
void store(const acc_t* src, int64_t count, scalar_t* dst) {
  for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<scalar_t>(src[i]);
}

// ---- forward -------------------------------------------------------------------------------

template <typename scalar_t>
void forward_nchw(const ConvGeometry& g, const scalar_t* x, const scalar_t* w, const scalar_t* b,
                  scalar_t* y) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cpg = g.c_per_group(), kpg = g.k_per_group();
  const int64_t HW = g.h * g.w, PQ = g.p * g.q;
  const auto cols = tap_ranges(g.s, g.w, g.q, g.stride_w, g.pad_w, g.dil_w);
  const int64_t sw = g.stride_w;
  at::parallel_for(0, g.n * g.k, grain_for(cpg * g.r * g.s * PQ), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> plane(PQ);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / g.k, k = u % g.k, group = k / kpg;
      std::fill(plane.begin(), plane.end(), b ? static_cast<acc_t>(b[k]) : acc_t(0));
      for (int64_t c = 0; c < cpg; ++c) {
        const scalar_t* xp = x + (n * g.c + group * cpg + c) * HW;
        const scalar_t* wk = w + (k * cpg + c) * g.r * g.s;
        for_each_tap_row(g, cols, [&](const TapRow& t) {
          const acc_t wv = static_cast<acc_t>(wk[t.r * g.s + t.s]);
          const scalar_t* xrow = xp + t.ih * g.w;
          acc_t* orow = plane.data() + t.p * g.q;
          for (int64_t q = t.q.begin; q < t.q.end; ++q) {
            orow[q] += wv * static_cast<acc_t>(xrow[q * sw + t.off]);
          }
        });
      }
      store(plane.data(), PQ, y + u * PQ);
    }
  });
}

// wt: the weight as (R, S, C / groups, K), so one tap's output channels are contiguous.
template <typename scalar_t>
void forward_channels_last(const ConvGeometry& g, const scalar_t* x, const scalar_t* wt,
                           const scalar_t* b, scalar_t* y) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cpg = g.c_per_group(), kpg = g.k_per_group(), K = g.k, C = g.c;
  const bool depthwise = cpg == 1 && kpg == 1;
  at::parallel_for(0, g.n * g.p * g.q, grain_for(g.c * kpg * g.r * g.s), [&](int64_t begin,
                                                                            int64_t end) {
    std::vector<acc_t> acc(K);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / (g.p * g.q), p = (u / g.q) % g.p, q = u % g.q;
      for (int64_t k = 0; k < K; ++k) acc[k] = b ? static_cast<acc_t>(b[k]) : acc_t(0);
      for (int64_t r = 0; r < g.r; ++r) {
        const int64_t ih = conv_input_coord(p, r, g.stride_h, g.pad_h, g.dil_h);
        if (ih < 0 || ih >= g.h) continue;
        for (int64_t s = 0; s < g.s; ++s) {
          const int64_t iw = conv_input_coord(q, s, g.stride_w, g.pad_w, g.dil_w);
          if (iw < 0 || iw >= g.w) continue;
          const scalar_t* xpix = x + ((n * g.h + ih) * g.w + iw) * C;
          const scalar_t* wrs = wt + (r * g.s + s) * cpg * K;
          if (depthwise) {  // output channel k reads input channel k only
            for (int64_t k = 0; k < K; ++k) {
              acc[k] += static_cast<acc_t>(xpix[k]) * static_cast<acc_t>(wrs[k]);
            }
            continue;
          }
          for (int64_t group = 0; group < g.groups; ++group) {
            acc_t* acc_group = acc.data() + group * kpg;
            for (int64_t c = 0; c < cpg; ++c) {
              const acc_t xv = static_cast<acc_t>(xpix[group * cpg + c]);
              const scalar_t* wrow = wrs + c * K + group * kpg;
              for (int64_t kk = 0; kk < kpg; ++kk) {
                acc_group[kk] += xv * static_cast<acc_t>(wrow[kk]);
              }
            }
          }
        }
      }
      store(acc.data(), K, y + u * K);
    }
  });
}

// ---- input gradient (a gather: every grad_input element is summed by one thread) --------------

template <typename scalar_t>
void input_grad_nchw(const ConvGeometry& g, const scalar_t* go, const scalar_t* w, scalar_t* gi) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cpg = g.c_per_group(), kpg = g.k_per_group();
  const int64_t HW = g.h * g.w, PQ = g.p * g.q;
  const auto cols = tap_ranges(g.s, g.w, g.q, g.stride_w, g.pad_w, g.dil_w);
  const int64_t sw = g.stride_w;
  at::parallel_for(0, g.n * g.c, grain_for(kpg * g.r * g.s * PQ), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> plane(HW);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / g.c, cin = u % g.c, group = cin / cpg, c = cin % cpg;
      std::fill(plane.begin(), plane.end(), acc_t(0));
      // Tap (r, s) of output channel k adds at most one term to each input element, so every
      // element's sum runs in (k, r, s) order.
      for (int64_t kk = 0; kk < kpg; ++kk) {
        const int64_t k = group * kpg + kk;
        const scalar_t* gop = go + (n * g.k + k) * PQ;
        const scalar_t* wkc = w + (k * cpg + c) * g.r * g.s;
        for_each_tap_row(g, cols, [&](const TapRow& t) {
          const acc_t wv = static_cast<acc_t>(wkc[t.r * g.s + t.s]);
          acc_t* irow = plane.data() + t.ih * g.w;
          const scalar_t* grow = gop + t.p * g.q;
          for (int64_t q = t.q.begin; q < t.q.end; ++q) {
            irow[q * sw + t.off] += wv * static_cast<acc_t>(grow[q]);
          }
        });
      }
      store(plane.data(), HW, gi + u * HW);
    }
  });
}

// wt: the weight as (R, S, K, C / groups), so one tap's input channels are contiguous.
template <typename scalar_t>
void input_grad_channels_last(const ConvGeometry& g, const scalar_t* go, const scalar_t* wt,
                              scalar_t* gi) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cpg = g.c_per_group(), kpg = g.k_per_group(), K = g.k, C = g.c;
  const bool depthwise = cpg == 1 && kpg == 1;
  at::parallel_for(0, g.n * g.h * g.w, grain_for(g.k * cpg * g.r * g.s), [&](int64_t begin,
                                                                            int64_t end) {
    std::vector<acc_t> acc(C);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / (g.h * g.w), ih = (u / g.w) % g.h, iw = u % g.w;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t r = 0; r < g.r; ++r) {
        const int64_t p = conv_output_for_tap(ih, r, g.p, g.stride_h, g.pad_h, g.dil_h);
        if (p < 0) continue;
        for (int64_t s = 0; s < g.s; ++s) {
          const int64_t q = conv_output_for_tap(iw, s, g.q, g.stride_w, g.pad_w, g.dil_w);
          if (q < 0) continue;
          const scalar_t* gpix = go + ((n * g.p + p) * g.q + q) * K;
          const scalar_t* wrs = wt + (r * g.s + s) * K * cpg;
          if (depthwise) {
            for (int64_t c = 0; c < C; ++c) {
              acc[c] += static_cast<acc_t>(gpix[c]) * static_cast<acc_t>(wrs[c]);
            }
            continue;
          }
          for (int64_t group = 0; group < g.groups; ++group) {
            acc_t* acc_group = acc.data() + group * cpg;
            for (int64_t kk = 0; kk < kpg; ++kk) {
              const int64_t k = group * kpg + kk;
              const acc_t gv = static_cast<acc_t>(gpix[k]);
              const scalar_t* wrow = wrs + k * cpg;
              for (int64_t c = 0; c < cpg; ++c) acc_group[c] += gv * static_cast<acc_t>(wrow[c]);
            }
          }
        }
      }
      store(acc.data(), C, gi + u * C);
    }
  });
}

// ---- weight gradient (one unit per weight slice; sums over n, p, q in a fixed order) --------

template <typename scalar_t>
void weight_grad_nchw(const ConvGeometry& g, const scalar_t* go, const scalar_t* x,
                      scalar_t* gw) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cpg = g.c_per_group(), kpg = g.k_per_group();
  const int64_t HW = g.h * g.w, PQ = g.p * g.q, RS = g.r * g.s;
  const auto cols = tap_ranges(g.s, g.w, g.q, g.stride_w, g.pad_w, g.dil_w);
  const int64_t sw = g.stride_w;
  at::parallel_for(0, g.k * cpg, grain_for(g.n * PQ * RS), [&](int64_t begin, int64_t end) {
    // partial[(r * S + s) * Q + q]: the sum over (n, p) of tap (r, s)'s products in column q
    std::vector<acc_t> partial(RS * g.q);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t k = u / cpg, c = u % cpg, cin = (k / kpg) * cpg + c;
      std::fill(partial.begin(), partial.end(), acc_t(0));
      for (int64_t n = 0; n < g.n; ++n) {
        const scalar_t* gop = go + (n * g.k + k) * PQ;
        const scalar_t* xp = x + (n * g.c + cin) * HW;
        // each partial sums over (n, p) in order, as the (r, p, s) walk visits p in order
        for_each_tap_row(g, cols, [&](const TapRow& t) {
          const scalar_t* grow = gop + t.p * g.q;
          const scalar_t* xrow = xp + t.ih * g.w;
          acc_t* part = partial.data() + (t.r * g.s + t.s) * g.q;
          for (int64_t q = t.q.begin; q < t.q.end; ++q) {
            part[q] += static_cast<acc_t>(grow[q]) * static_cast<acc_t>(xrow[q * sw + t.off]);
          }
        });
      }
      for (int64_t rs = 0; rs < RS; ++rs) {
        acc_t sum = 0;
        for (int64_t q = 0; q < g.q; ++q) sum += partial[rs * g.q + q];
        gw[u * RS + rs] = static_cast<scalar_t>(sum);
      }
    }
  });
}

// Weight gradient, channels_last. Three ways to give the innermost loop a contiguous run:
//  - depthwise (one input channel per output channel): a unit is a block of channels, the
//    lanes are channels (grad_output and input both contiguous across them);
//  - few input channels per group (first layers, C = 1 or 3): a unit is a block of output
//    channels of one group, the lanes are output channels (contiguous in grad_output);
//  - otherwise: a unit is one output channel, the lanes its group's input channels.
// Each weight element is one lane's sum over (n, p, q) in order.
template <typename scalar_t>
void weight_grad_channels_last(const ConvGeometry& g, const scalar_t* go, const scalar_t* x,
                               scalar_t* gw) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cpg = g.c_per_group(), kpg = g.k_per_group(), K = g.k, C = g.c;
  const int64_t RS = g.r * g.s;
  const bool depthwise = cpg == 1 && kpg == 1;
  const bool lanes_over_k = !depthwise && cpg < 8 && kpg > 1;
  const int64_t kb = depthwise ? 16 : lanes_over_k ? std::min<int64_t>(16, kpg) : 1;
  // units: blocks of kb output channels that never straddle a group (depthwise: of K)
  const int64_t blocks_per_group = depthwise ? (K + kb - 1) / kb : (kpg + kb - 1) / kb;
  const int64_t units = depthwise ? blocks_per_group : g.groups * blocks_per_group;
  at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) {
    // acc[(rs * cpg + c) * kb + j] (depthwise: cpg is 1, lane j reads channel k0 + j)
    std::vector<acc_t> acc(RS * cpg * kb);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t group = depthwise ? 0 : u / blocks_per_group;
      const int64_t k0 = depthwise ? u * kb : group * kpg + (u % blocks_per_group) * kb;
      const int64_t lanes = depthwise ? std::min(kb, K - k0)
                                      : std::min(kb, (group + 1) * kpg - k0);
      const int64_t c0 = depthwise ? k0 : group * cpg;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t n = 0; n < g.n; ++n) {
        for (int64_t p = 0; p < g.p; ++p) {
          for (int64_t q = 0; q < g.q; ++q) {
            const scalar_t* gpix = go + ((n * g.p + p) * g.q + q) * K + k0;
            for (int64_t r = 0; r < g.r; ++r) {
              const int64_t ih = conv_input_coord(p, r, g.stride_h, g.pad_h, g.dil_h);
              if (ih < 0 || ih >= g.h) continue;
              for (int64_t s = 0; s < g.s; ++s) {
                const int64_t iw = conv_input_coord(q, s, g.stride_w, g.pad_w, g.dil_w);
                if (iw < 0 || iw >= g.w) continue;
                const scalar_t* xpix = x + ((n * g.h + ih) * g.w + iw) * C + c0;
                acc_t* a = acc.data() + (r * g.s + s) * cpg * kb;
                if (depthwise) {
                  for (int64_t j = 0; j < lanes; ++j) {
                    a[j] += static_cast<acc_t>(gpix[j]) * static_cast<acc_t>(xpix[j]);
                  }
                } else if (lanes_over_k) {
                  for (int64_t c = 0; c < cpg; ++c) {
                    const acc_t xv = static_cast<acc_t>(xpix[c]);
                    acc_t* ac = a + c * kb;
                    for (int64_t j = 0; j < lanes; ++j) ac[j] += xv * static_cast<acc_t>(gpix[j]);
                  }
                } else {
                  const acc_t gv = static_cast<acc_t>(gpix[0]);
                  for (int64_t c = 0; c < cpg; ++c) a[c] += gv * static_cast<acc_t>(xpix[c]);
                }
              }
            }
          }
        }
      }
      // grad_weight (K, C / groups, R, S) contiguous: lane j of input channel c is weight
      // element (k0 + j, c) (depthwise: (k0 + j, 0)).
      for (int64_t j = 0; j < lanes; ++j) {
        for (int64_t c = 0; c < cpg; ++c) {
          scalar_t* dst = gw + ((k0 + j) * cpg + c) * RS;
          for (int64_t rs = 0; rs < RS; ++rs) {
            dst[rs] = static_cast<scalar_t>(acc[(rs * cpg + c) * kb + j]);
          }
        }
      }
    }
  });
}

}  // namespace

void conv2d_forward_generic(const ConvGeometry& g, const at::Tensor& input,
                            const at::Tensor& weight, const at::Tensor& bias, at::Tensor& output,
                            bool channels_last) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "conv2d", [&] {
    const scalar_t* b = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    if (channels_last) {
      const at::Tensor wt = weight.permute({2, 3, 1, 0}).contiguous();  // (R, S, C/groups, K)
      forward_channels_last(g, input.const_data_ptr<scalar_t>(), wt.const_data_ptr<scalar_t>(),
                            b, output.mutable_data_ptr<scalar_t>());
    } else {
      forward_nchw(g, input.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), b,
                   output.mutable_data_ptr<scalar_t>());
    }
  });
}

void conv2d_input_grad_generic(const ConvGeometry& g, const at::Tensor& grad_output,
                               const at::Tensor& weight, at::Tensor& grad_input,
                               bool channels_last) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(),
                                  "_conv2d_input_grad", [&] {
    if (channels_last) {
      const at::Tensor wt = weight.permute({2, 3, 0, 1}).contiguous();  // (R, S, K, C/groups)
      input_grad_channels_last(g, grad_output.const_data_ptr<scalar_t>(),
                               wt.const_data_ptr<scalar_t>(),
                               grad_input.mutable_data_ptr<scalar_t>());
    } else {
      input_grad_nchw(g, grad_output.const_data_ptr<scalar_t>(),
                      weight.const_data_ptr<scalar_t>(), grad_input.mutable_data_ptr<scalar_t>());
    }
  });
}

void conv2d_weight_grad_generic(const ConvGeometry& g, const at::Tensor& grad_output,
                                const at::Tensor& input, at::Tensor& grad_weight,
                                bool channels_last) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "_conv2d_weight_grad", [&] {
    if (channels_last) {
      weight_grad_channels_last(g, grad_output.const_data_ptr<scalar_t>(),
                                input.const_data_ptr<scalar_t>(),
                                grad_weight.mutable_data_ptr<scalar_t>());
    } else {
      weight_grad_nchw(g, grad_output.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
                       grad_weight.mutable_data_ptr<scalar_t>());
    }
  });
}

}  // namespace fastconv::cpu
