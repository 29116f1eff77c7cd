// CPU kernels of max_pool2d_with_indices and its backward, NCHW and channels_last natively.
//
// Forward, NCHW: work is split over (plane, output row). For one output row, each input row
// of the window is copied once into a -inf padded buffer split into `stride` phases
// (phase p holds padded columns p, p + s, p + 2s, ...), so every kernel tap becomes one
// contiguous, vectorized pass over the whole output row (simd_loops.h). -inf padding is never
// selected, so border windows need no special case. Forward, channels_last: vectorized over
// channels, one output pixel at a time. Both scan window taps row-major and use PyTorch's
// argmax rule, so values, indices, ties and NaNs match PyTorch exactly.
//
// Backward: a scatter-add per (n, c) plane (NCHW) or per (n, channel block) (channels_last),
// in ascending output order like PyTorch; planes are independent, so threads never race and
// results are deterministic. Half and bfloat16 accumulate in float.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "cpu/simd_loops.h"

namespace fastconv {
namespace {

// Accumulator and index types of the vectorized loops: float with int32 plane indices for
// float, half and bfloat16 (exact: every value of those converts to float without rounding);
// double with int64 indices for double.
template <typename scalar_t>
using acc_of = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
template <typename scalar_t>
using idx_of = std::conditional_t<std::is_same_v<scalar_t, double>, int64_t, int32_t>;

inline void pool_tap(const float* v, int64_t n, int64_t idx0, int64_t step, float* best,
                     int32_t* best_idx) {
  cpu::pool_tap_f32(v, n, static_cast<int32_t>(idx0), static_cast<int32_t>(step), best, best_idx);
}
inline void pool_tap(const double* v, int64_t n, int64_t idx0, int64_t step, double* best,
                     int64_t* best_idx) {
  cpu::pool_tap_f64(v, n, idx0, step, best, best_idx);
}
inline void store_indices(const int32_t* src, int64_t n, int64_t* dst) {
  cpu::widen_i32_i64(src, n, dst);
}
inline void store_indices(const int64_t* src, int64_t n, int64_t* dst) {
  std::copy(src, src + n, dst);
}

struct Pool2d {
  int64_t N, C, H, W, P, Q;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

template <typename scalar_t>
void forward_nchw(const scalar_t* x, scalar_t* out, int64_t* ind, const Pool2d& g) {
  using acc_t = acc_of<scalar_t>;
  using idx_t = idx_of<scalar_t>;
  const acc_t neg_inf = -std::numeric_limits<acc_t>::infinity();
  // Padded row length that the windows of one output row reach, in `sw` phases of `M`.
  const int64_t padded = (g.Q - 1) * g.sw + (g.kw - 1) * g.dw + 1;
  const int64_t M = (padded + g.sw - 1) / g.sw;
  std::vector<idx_t> first_col(g.Q);
  for (int64_t ow = 0; ow < g.Q; ++ow) {
    first_col[ow] = static_cast<idx_t>(pool_window(ow, g.W, g.kw, g.sw, g.pw, g.dw).start);
  }
  const int64_t grain = std::max<int64_t>(1, 16384 / (g.Q * g.kh * g.kw));
  at::parallel_for(0, g.N * g.C * g.P, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> phases(g.sw * M), best(g.Q);
    std::vector<idx_t> best_idx(g.Q);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / g.P, oh = r % g.P;
      const scalar_t* src = x + plane * g.H * g.W;
      const PoolWindow rows = pool_window(oh, g.H, g.kh, g.sh, g.ph, g.dh);
      std::fill(best.begin(), best.end(), neg_inf);
      for (int64_t ow = 0; ow < g.Q; ++ow) best_idx[ow] = rows.start * g.W + first_col[ow];
      for (int64_t ih = rows.start; ih < rows.end; ih += g.dh) {
        const scalar_t* row = src + ih * g.W;
        for (int64_t p = 0; p < g.sw; ++p) {
          acc_t* dst = phases.data() + p * M;
          for (int64_t m = 0; m < M; ++m) {
            const int64_t iw = m * g.sw + p - g.pw;
            dst[m] = (iw >= 0 && iw < g.W) ? static_cast<acc_t>(row[iw]) : neg_inf;
          }
        }
        for (int64_t k = 0; k < g.kw; ++k) {
          const int64_t off = k * g.dw;  // padded column of tap k for output 0
          const acc_t* v = phases.data() + (off % g.sw) * M + off / g.sw;
          pool_tap(v, g.Q, ih * g.W + off - g.pw, g.sw, best.data(), best_idx.data());
        }
      }
      scalar_t* o = out + r * g.Q;
      for (int64_t ow = 0; ow < g.Q; ++ow) o[ow] = static_cast<scalar_t>(best[ow]);
      store_indices(best_idx.data(), g.Q, ind + r * g.Q);
    }
  });
}

template <typename scalar_t>
void forward_channels_last(const scalar_t* x, scalar_t* out, int64_t* ind, const Pool2d& g) {
  using acc_t = acc_of<scalar_t>;
  using idx_t = idx_of<scalar_t>;
  constexpr bool convert = !std::is_same_v<scalar_t, acc_t>;
  const acc_t neg_inf = -std::numeric_limits<acc_t>::infinity();
  const int64_t C = g.C;
  const int64_t grain = std::max<int64_t>(1, 16384 / (C * g.kh * g.kw));
  at::parallel_for(0, g.N * g.P * g.Q, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> best(C), converted(convert ? C : 0);
    std::vector<idx_t> best_idx(C);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / (g.P * g.Q), oh = (r / g.Q) % g.P, ow = r % g.Q;
      const PoolWindow rows = pool_window(oh, g.H, g.kh, g.sh, g.ph, g.dh);
      const PoolWindow cols = pool_window(ow, g.W, g.kw, g.sw, g.pw, g.dw);
      std::fill(best.begin(), best.end(), neg_inf);
      std::fill(best_idx.begin(), best_idx.end(), static_cast<idx_t>(rows.start * g.W + cols.start));
      for (int64_t ih = rows.start; ih < rows.end; ih += g.dh) {
        for (int64_t iw = cols.start; iw < cols.end; iw += g.dw) {
          const scalar_t* px = x + ((n * g.H + ih) * g.W + iw) * C;
          const acc_t* v;
          if constexpr (convert) {
            for (int64_t c = 0; c < C; ++c) converted[c] = static_cast<acc_t>(px[c]);
            v = converted.data();
          } else {
            v = px;
          }
          pool_tap(v, C, ih * g.W + iw, 0, best.data(), best_idx.data());
        }
      }
      scalar_t* o = out + r * C;
      for (int64_t c = 0; c < C; ++c) o[c] = static_cast<scalar_t>(best[c]);
      store_indices(best_idx.data(), C, ind + r * C);
    }
  });
}

// Scatter-add of grad_output into grad_input over independent units: an (n, c) plane for NCHW,
// an (n, block of up to 64 channels) slab for channels_last. Each unit accumulates into a
// private buffer (acc_t) and writes its part of grad_input once, so nothing is zeroed twice.
template <typename scalar_t>
void backward_scatter(const scalar_t* go, const int64_t* ind, scalar_t* gi, const Pool2d& g,
                      bool channels_last) {
  using acc_t = acc_of<scalar_t>;
  const int64_t HW = g.H * g.W, PQ = g.P * g.Q;
  // channels_last: units are (n, block of CB channels); NCHW: units are (n, c) planes.
  const int64_t CB = channels_last ? std::min<int64_t>(g.C, 64) : 1;
  const int64_t blocks = channels_last ? (g.C + CB - 1) / CB : g.C;
  const int64_t stride_c = channels_last ? g.C : 1;  // distance between spatial positions
  at::parallel_for(0, g.N * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(HW * CB);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / blocks, c0 = (u % blocks) * CB;
      const int64_t width = std::min(CB, g.C - c0);
      // Offsets of element (position 0, channel c0) of this unit in input / output tensors.
      const int64_t in_base = channels_last ? n * HW * g.C + c0 : (n * g.C + c0) * HW;
      const int64_t out_base = channels_last ? n * PQ * g.C + c0 : (n * g.C + c0) * PQ;
      std::fill(acc.begin(), acc.begin() + HW * width, acc_t(0));
      for (int64_t o = 0; o < PQ; ++o) {
        const int64_t* io = ind + out_base + o * stride_c;
        const scalar_t* gp = go + out_base + o * stride_c;
        for (int64_t c = 0; c < width; ++c) {
          const int64_t i = io[c];
          if (i < 0 || i >= HW) fail_index_out_of_range("_max_pool2d_backward", i, HW);
          acc[i * width + c] += static_cast<acc_t>(gp[c]);
        }
      }
      for (int64_t i = 0; i < HW; ++i) {
        scalar_t* dst = gi + in_base + i * stride_c;
        const acc_t* s = acc.data() + i * width;
        for (int64_t c = 0; c < width; ++c) dst[c] = static_cast<scalar_t>(s[c]);
      }
    }
  });
}

Pool2d make_pool2d(const at::Tensor& x4, int64_t P, int64_t Q, at::IntArrayRef k,
                   at::IntArrayRef s, at::IntArrayRef p, at::IntArrayRef d) {
  return {x4.size(0), x4.size(1), x4.size(2), x4.size(3), P, Q,
          k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1]};
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_with_indices_cpu(
    const at::Tensor& input, at::IntArrayRef kernel, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const PoolGeometry geo = check_max_pool2d(input, kernel, stride, padding, dilation, ceil_mode);
  const auto fmt = pool_memory_format(input);
  const at::Tensor x = (geo.batched ? input : input.unsqueeze(0)).contiguous(fmt);
  const Pool2d g = make_pool2d(x, geo.out_h.expect_int(), geo.out_w.expect_int(), kernel, stride,
                               padding, dilation);
  FC_CHECK(g.H * g.W <= std::numeric_limits<int32_t>::max(), "max_pool2d_with_indices",
           "input planes of fewer than 2^31 elements on the CPU, got ", g.H, "x", g.W);
  at::Tensor out = at::empty({g.N, g.C, g.P, g.Q}, x.options().memory_format(fmt));
  at::Tensor ind = at::empty({g.N, g.C, g.P, g.Q}, x.options().dtype(at::kLong).memory_format(fmt));
  if (out.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool2d", [&] {
      if (fmt == at::MemoryFormat::ChannelsLast) {
        forward_channels_last(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                              ind.mutable_data_ptr<int64_t>(), g);
      } else {
        forward_nchw(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                     ind.mutable_data_ptr<int64_t>(), g);
      }
    });
  }
  if (!geo.batched) return {out.squeeze(0), ind.squeeze(0)};
  return {out, ind};
}

at::Tensor max_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& indices,
                                   c10::SymIntArrayRef input_size, at::IntArrayRef kernel,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, bool ceil_mode) {
  const PoolGeometry geo = check_max_pool2d_backward(grad_output, indices, input_size, kernel,
                                                     stride, padding, dilation, ceil_mode);
  const auto fmt = pool_memory_format(indices);
  auto batch = [&](const at::Tensor& t) { return (geo.batched ? t : t.unsqueeze(0)).contiguous(fmt); };
  const at::Tensor go = batch(grad_output), ind = batch(indices);
  const auto in_size = C10_AS_INTARRAYREF_SLOW(input_size);
  at::Tensor gi = at::empty({geo.n.expect_int(), in_size[in_size.size() - 3],
                             in_size[in_size.size() - 2], in_size[in_size.size() - 1]},
                            go.options().memory_format(fmt));
  const Pool2d g = make_pool2d(gi, go.size(2), go.size(3), kernel, stride, padding, dilation);
  if (gi.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(), "max_pool2d_backward", [&] {
      backward_scatter(go.const_data_ptr<scalar_t>(), ind.const_data_ptr<int64_t>(),
                       gi.mutable_data_ptr<scalar_t>(), g, fmt == at::MemoryFormat::ChannelsLast);
    });
  }
  return geo.batched ? gi : gi.squeeze(0);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("max_pool2d_with_indices", max_pool2d_with_indices_cpu);
  m.impl("_max_pool2d_backward", max_pool2d_backward_cpu);
}

}  // namespace fastconv
