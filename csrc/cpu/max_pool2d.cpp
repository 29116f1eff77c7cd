// CPU kernels of max_pool2d_with_indices and its backward, NCHW and channels_last natively.
//
// Forward, NCHW: work is split over (plane, output row); for one output row, every kernel tap
// of every input row in the window is one vectorized pass over the whole output row
// (max_pool2d_simd.h), reading the input row in place. Forward, channels_last: vectorized
// over channels, one output pixel at a time. Both scan window taps row-major and use PyTorch's
// argmax rule, so values, indices, ties and NaNs match PyTorch exactly.
//
// Backward: a scatter-add per (n, c) plane (NCHW) or per (n, channel block) (channels_last),
// in ascending output order like PyTorch; planes are independent, so threads never race and
// results are deterministic. Half and bfloat16 accumulate in float.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "checks/pool.h"
#include "cpu/max_pool2d_simd.h"

namespace fastconv {
namespace {

// Accumulator and index types of the vectorized loops: float with int32 plane indices for
// float, half and bfloat16 (exact: every value of those converts to float without rounding);
// double with int64 indices for double.
template <typename scalar_t>
using acc_of = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
template <typename scalar_t>
using idx_of = std::conditional_t<std::is_same_v<scalar_t, double>, int64_t, int32_t>;

inline void pool_row(const float* row, const cpu::PoolRow& g, int64_t row_index, float* best,
                     int32_t* best_idx) {
  cpu::pool_row_f32(row, g, static_cast<int32_t>(row_index), best, best_idx);
}
inline void pool_row(const double* row, const cpu::PoolRow& g, int64_t row_index, double* best,
                     int64_t* best_idx) {
  cpu::pool_row_f64(row, g, row_index, best, best_idx);
}
inline void pool_tap(const float* v, int64_t n, int64_t index, float* best, int32_t* best_idx) {
  cpu::pool_tap_f32(v, n, static_cast<int32_t>(index), best, best_idx);
}
inline void pool_tap(const double* v, int64_t n, int64_t index, double* best,
                     int64_t* best_idx) {
  cpu::pool_tap_f64(v, n, index, best, best_idx);
}
inline void store_indices(const int32_t* src, int64_t n, int64_t* dst) {
  cpu::widen_i32_i64(src, n, dst);
}
inline void store_indices(const int64_t* src, int64_t n, int64_t* dst) {
  std::copy(src, src + n, dst);
}

// FASTCONV_CPU_KERNELS=generic turns the hand-written AVX-512 path off, so the tests also
// cover the portable/auto-vectorized path on machines that have AVX-512.
bool generic_cpu_kernels_forced() {
  const char* v = std::getenv("FASTCONV_CPU_KERNELS");
  return v != nullptr && std::string(v) == "generic";
}

struct Pool2d {
  int64_t N, C, H, W, P, Q;
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

template <typename scalar_t>
void forward_nchw(const scalar_t* x, scalar_t* out, int64_t* ind, const Pool2d& g) {
  using acc_t = acc_of<scalar_t>;
  using idx_t = idx_of<scalar_t>;
  constexpr bool convert = !std::is_same_v<scalar_t, acc_t>;
  const cpu::PoolRow row_geometry{g.W, g.Q, g.kw, g.sw, g.pw, g.dw};
  std::vector<idx_t> first_col(g.Q);
  for (int64_t ow = 0; ow < g.Q; ++ow) {
    first_col[ow] = static_cast<idx_t>(pool_window(ow, g.W, g.kw, g.sw, g.pw, g.dw).start);
  }
  const bool use_avx512 = cpu::has_avx512() && !generic_cpu_kernels_forced();
  const int64_t grain = std::max<int64_t>(1, 16384 / (g.Q * g.kh * g.kw));
  at::parallel_for(0, g.N * g.C * g.P, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> best(g.Q), converted(convert ? g.W : 0);
    std::vector<idx_t> best_idx(g.Q);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / g.P, oh = r % g.P;
      const PoolWindow rows = pool_window(oh, g.H, g.kh, g.sh, g.ph, g.dh);
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (use_avx512) {
          cpu::pool_output_row_avx512(x + plane * g.H * g.W, row_geometry, rows.start, rows.end,
                                      g.dh, first_col.data(), out + r * g.Q, ind + r * g.Q);
          continue;
        }
      }
      std::fill(best.begin(), best.end(), -std::numeric_limits<acc_t>::infinity());
      for (int64_t ow = 0; ow < g.Q; ++ow) best_idx[ow] = rows.start * g.W + first_col[ow];
      for (int64_t ih = rows.start; ih < rows.end; ih += g.dh) {
        const scalar_t* row = x + (plane * g.H + ih) * g.W;
        const acc_t* v;
        if constexpr (convert) {
          for (int64_t i = 0; i < g.W; ++i) converted[i] = static_cast<acc_t>(row[i]);
          v = converted.data();
        } else {
          v = row;
        }
        pool_row(v, row_geometry, ih * g.W, best.data(), best_idx.data());
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
  const bool use_avx512 = cpu::has_avx512() && !generic_cpu_kernels_forced();
  const int64_t grain = std::max<int64_t>(1, 16384 / (C * g.kh * g.kw));
  at::parallel_for(0, g.N * g.P * g.Q, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> best(C), converted(convert ? C : 0);
    std::vector<idx_t> best_idx(C);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / (g.P * g.Q), oh = (r / g.Q) % g.P, ow = r % g.Q;
      const PoolWindow rows = pool_window(oh, g.H, g.kh, g.sh, g.ph, g.dh);
      const PoolWindow cols = pool_window(ow, g.W, g.kw, g.sw, g.pw, g.dw);
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (use_avx512) {
          cpu::pool_output_pixel_avx512(x + n * g.H * g.W * C, g.W, C, rows.start, rows.end, g.dh,
                                        cols.start, cols.end, g.dw, out + r * C, ind + r * C);
          continue;
        }
      }
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
          pool_tap(v, C, ih * g.W + iw, best.data(), best_idx.data());
        }
      }
      scalar_t* o = out + r * C;
      for (int64_t c = 0; c < C; ++c) o[c] = static_cast<scalar_t>(best[c]);
      store_indices(best_idx.data(), C, ind + r * C);
    }
  });
}

// Scatter-add of grad_output into grad_input over independent units: an (n, c) plane for NCHW,
// an (n, channel block) slab for channels_last. float and double add straight
// into grad_input (zeroed per unit, in cache, right before); half and bfloat16 add into a
// float buffer that is rounded once at the end.
template <typename scalar_t>
void backward_scatter(const scalar_t* go, const int64_t* ind, scalar_t* gi, const Pool2d& g,
                      bool channels_last) {
  using acc_t = acc_of<scalar_t>;
  constexpr bool direct = std::is_same_v<scalar_t, acc_t>;
  const int64_t HW = g.H * g.W, PQ = g.P * g.Q;
  // channels_last units take all channels of an image, or blocks of 64 when there are fewer
  // images than threads (inference), so both cores get work.
  const int64_t CB = !channels_last ? 1
                     : g.N >= at::get_num_threads() ? g.C
                                                    : std::min<int64_t>(g.C, 64);
  const int64_t blocks = channels_last ? (g.C + CB - 1) / CB : g.C;
  const int64_t stride = channels_last ? g.C : 1;  // distance between spatial positions
  at::parallel_for(0, g.N * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer(direct ? 0 : HW * CB);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / blocks, c0 = (u % blocks) * CB;
      const int64_t width = std::min(CB, g.C - c0);
      const int64_t in_base = channels_last ? n * HW * g.C + c0 : (n * g.C + c0) * HW;
      const int64_t out_base = channels_last ? n * PQ * g.C + c0 : (n * g.C + c0) * PQ;
      // acc[i * acc_stride + c]: channel c0 + c at input position i of this unit.
      acc_t* acc;
      int64_t acc_stride;
      if constexpr (direct) {
        acc = gi + in_base;
        acc_stride = stride;
      } else {
        acc = buffer.data();
        acc_stride = width;
      }
      const int64_t* io = ind + out_base;
      const scalar_t* gp = go + out_base;
      auto add = [&](int64_t i, int64_t c, scalar_t v) {
        if (C10_UNLIKELY(i < 0 || i >= HW)) fail_index_out_of_range("_max_pool2d_backward", i, HW);
        acc[i * acc_stride + c] += static_cast<acc_t>(v);
      };
      if (acc_stride == width) {  // the unit's accumulator is one contiguous block
        std::fill_n(acc, HW * width, acc_t(0));
      } else {
        for (int64_t i = 0; i < HW; ++i) std::fill_n(acc + i * acc_stride, width, acc_t(0));
      }
      if (width == 1) {  // NCHW: one channel per unit
        for (int64_t o = 0; o < PQ; ++o) add(io[o], 0, gp[o]);
      } else {
        for (int64_t o = 0; o < PQ; ++o, io += stride, gp += stride) {
          for (int64_t c = 0; c < width; ++c) add(io[c], c, gp[c]);
        }
      }
      if constexpr (!direct) {
        for (int64_t i = 0; i < HW; ++i) {
          for (int64_t c = 0; c < width; ++c) {
            gi[in_base + i * stride + c] = static_cast<scalar_t>(acc[i * width + c]);
          }
        }
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
