// CPU kernels of roi_align and its backward (rules: common/roi.h, contracts: schemas/roi.cpp).
//
// Both work on channels_last data, vectorized over the C contiguous channels of a pixel
// (cpu/roi_simd.h). An NCHW input is transposed once (one pass over the map, small next to the
// gathers), and each box's output is assembled as (bins, C) in a buffer and transposed into
// place, so both layouts run the same inner loops.
//
// Forward: boxes are split over threads. Per box, the bilinear taps of every sample row and
// column are computed once (the 2-D weights are their products), then every bin sums its
// samples over all channels at once. Backward: race-free units of (image, channel block), see
// cpu/roi_units.h; the same taps, scattered. float/half/bfloat16 accumulate in float.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "checks/roi.h"
#include "common/roi.h"
#include "cpu/roi_simd.h"
#include "cpu/roi_units.h"

namespace fastconv {
namespace {

struct AlignArgs {
  int64_t N, C, H, W, K, PH, PW, sampling_ratio;
  double spatial_scale;
  bool aligned;
};

// The per-axis taps of one box: ys[ph * grid_h + iy], xs[pw * grid_w + ix].
template <typename acc_t>
struct BoxTaps {
  RoiAlignBox<acc_t> box;
  std::vector<AxisTap<acc_t>> ys, xs;

  template <typename scalar_t>
  bool compute(const scalar_t* roi, const AlignArgs& a) {
    box = roi_align_box<acc_t>(roi, static_cast<acc_t>(a.spatial_scale), a.PH, a.PW,
                               a.sampling_ratio, a.aligned);
    if (box.grid_h <= 0 || box.grid_w <= 0) return false;  // no samples: zeros
    ys.resize(a.PH * box.grid_h);
    xs.resize(a.PW * box.grid_w);
    for (int64_t p = 0; p < a.PH; ++p)
      for (int64_t i = 0; i < box.grid_h; ++i)
        ys[p * box.grid_h + i] =
            roi_axis_tap(roi_align_sample(box.start_h, box.bin_h, p, i, box.grid_h), a.H);
    for (int64_t p = 0; p < a.PW; ++p)
      for (int64_t i = 0; i < box.grid_w; ++i)
        xs[p * box.grid_w + i] =
            roi_axis_tap(roi_align_sample(box.start_w, box.bin_w, p, i, box.grid_w), a.W);
    return true;
  }

  // Calls f(y_tap, x_tap) for every in-range sample of bin (ph, pw), in torchvision's order.
  template <typename F>
  void for_each_sample(int64_t ph, int64_t pw, F f) const {
    for (int64_t iy = 0; iy < box.grid_h; ++iy) {
      const AxisTap<acc_t>& ty = ys[ph * box.grid_h + iy];
      if (ty.w_low == acc_t(0) && ty.w_high == acc_t(0)) continue;  // row out of the map
      for (int64_t ix = 0; ix < box.grid_w; ++ix) {
        const AxisTap<acc_t>& tx = xs[pw * box.grid_w + ix];
        if (tx.w_low == acc_t(0) && tx.w_high == acc_t(0)) continue;
        f(ty, tx);
      }
    }
  }
};

// x: (N, H, W, C); out: (K, C, PH, PW) in NCHW or channels_last.
template <typename scalar_t>
void forward(const scalar_t* x, const scalar_t* rois, scalar_t* out, bool channels_last,
             const AlignArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = a.C, bins = a.PH * a.PW;
  at::parallel_for(0, a.K, 1, [&](int64_t begin, int64_t end) {
    BoxTaps<acc_t> taps;
    std::vector<acc_t> acc(C);
    std::vector<scalar_t> staged(channels_last ? 0 : bins * C);
    for (int64_t k = begin; k < end; ++k) {
      const scalar_t* roi = rois + 5 * k;
      scalar_t* box_out = channels_last ? out + k * bins * C : staged.data();
      if (!taps.compute(roi, a)) {
        std::fill_n(box_out, bins * C, scalar_t(0));
      } else {
        const scalar_t* image = x + static_cast<int64_t>(roi[0]) * a.H * a.W * C;
        for (int64_t ph = 0; ph < a.PH; ++ph) {
          for (int64_t pw = 0; pw < a.PW; ++pw) {
            std::fill(acc.begin(), acc.end(), acc_t(0));
            taps.for_each_sample(ph, pw, [&](const AxisTap<acc_t>& ty, const AxisTap<acc_t>& tx) {
              const scalar_t* row_low = image + ty.low * a.W * C;
              const scalar_t* row_high = image + ty.high * a.W * C;
              cpu::bilinear_accumulate(acc.data(), row_low + tx.low * C, row_low + tx.high * C,
                                       row_high + tx.low * C, row_high + tx.high * C,
                                       ty.w_low * tx.w_low, ty.w_low * tx.w_high,
                                       ty.w_high * tx.w_low, ty.w_high * tx.w_high, C);
            });
            scalar_t* dst = box_out + (ph * a.PW + pw) * C;
            const acc_t count = taps.box.count;
            for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<scalar_t>(acc[c] / count);
          }
        }
      }
      if (!channels_last) {  // (bins, C) -> (C, bins)
        scalar_t* dst = out + k * C * bins;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t b = 0; b < bins; ++b) dst[c * bins + b] = staged[b * C + c];
      }
    }
  });
}

// go: (K, C, PH, PW) with strides s; gi: (N, C, H, W) in NCHW or channels_last.
template <typename scalar_t>
void backward(const scalar_t* go, cpu::BinStrides s, const scalar_t* rois, scalar_t* gi,
              bool channels_last, const AlignArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = a.H * a.W, bins = a.PH * a.PW;
  const cpu::BoxesByImage boxes = cpu::boxes_by_image(rois, a.K, a.N);
  const cpu::ChannelBlocks blocks = cpu::channel_blocks(a.N, a.C);
  at::parallel_for(0, a.N * blocks.count, 1, [&](int64_t begin, int64_t end) {
    BoxTaps<acc_t> taps;
    std::vector<acc_t> buf, g(blocks.width);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / blocks.count, c0 = (u % blocks.count) * blocks.width;
      const int64_t width = std::min(blocks.width, a.C - c0);
      if (width <= 0) continue;
      buf.assign(HW * width, acc_t(0));
      for (int64_t j = boxes.begin[n]; j < boxes.begin[n + 1]; ++j) {
        const int64_t k = boxes.order[j];
        if (!taps.compute(rois + 5 * k, a)) continue;
        const scalar_t* gk = go + k * s.k_stride + c0 * s.c_stride;
        for (int64_t ph = 0; ph < a.PH; ++ph) {
          for (int64_t pw = 0; pw < a.PW; ++pw) {
            const scalar_t* gb = gk + (ph * a.PW + pw) * s.b_stride;
            for (int64_t c = 0; c < width; ++c)
              g[c] = static_cast<acc_t>(gb[c * s.c_stride]) / taps.box.count;
            taps.for_each_sample(ph, pw, [&](const AxisTap<acc_t>& ty, const AxisTap<acc_t>& tx) {
              acc_t* row_low = buf.data() + ty.low * a.W * width;
              acc_t* row_high = buf.data() + ty.high * a.W * width;
              cpu::scatter(row_low + tx.low * width, g.data(), ty.w_low * tx.w_low, width);
              cpu::scatter(row_low + tx.high * width, g.data(), ty.w_low * tx.w_high, width);
              cpu::scatter(row_high + tx.low * width, g.data(), ty.w_high * tx.w_low, width);
              cpu::scatter(row_high + tx.high * width, g.data(), ty.w_high * tx.w_high, width);
            });
          }
        }
      }
      cpu::store_unit(buf.data(), gi, n, c0, width, a.C, HW, channels_last);
    }
  });
  (void)bins;
}

AlignArgs align_args(const RoiGeometry& g, double spatial_scale, int64_t pooled_h,
                     int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
  return {g.n.expect_int(), g.c.expect_int(), g.h.expect_int(), g.w.expect_int(),
          g.k.expect_int(), pooled_h, pooled_w, sampling_ratio, spatial_scale, aligned};
}

at::Tensor roi_align_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                         int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                         bool aligned) {
  const RoiGeometry g =
      check_roi_align(input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio);
  const AlignArgs a = align_args(g, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned);
  check_roi_values(rois, a.N, "roi_align");
  const bool channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  at::Tensor out = at::empty({a.K, a.C, a.PH, a.PW},
                             input.options().memory_format(roi_memory_format(channels_last)));
  if (out.numel() == 0) return out;
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor r = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "roi_align", [&] {
    forward(x.const_data_ptr<scalar_t>(), r.const_data_ptr<scalar_t>(),
            out.mutable_data_ptr<scalar_t>(), channels_last, a);
  });
  return out;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad_output, const at::Tensor& rois,
                                  double spatial_scale, int64_t pooled_h, int64_t pooled_w,
                                  int64_t sampling_ratio, bool aligned,
                                  c10::SymIntArrayRef input_size, bool channels_last) {
  const RoiGeometry g = check_roi_backward(grad_output, rois, spatial_scale, pooled_h, pooled_w,
                                           input_size, "_roi_align_backward");
  const AlignArgs a = align_args(g, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned);
  check_roi_values(rois, a.N, "_roi_align_backward");
  at::Tensor gi = at::empty({a.N, a.C, a.H, a.W},
                            grad_output.options().memory_format(roi_memory_format(channels_last)));
  if (gi.numel() == 0) return gi;
  if (a.K == 0) return gi.zero_();
  const auto go_layout = cpu::bins_contiguous(grad_output);  // (tensor, channels_last)
  const at::Tensor& go = go_layout.first;
  const bool go_channels_last = go_layout.second;
  const at::Tensor r = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(),
                                  "_roi_align_backward", [&] {
    backward(go.const_data_ptr<scalar_t>(), cpu::bin_strides(a.C, a.PH * a.PW, go_channels_last),
             r.const_data_ptr<scalar_t>(), gi.mutable_data_ptr<scalar_t>(), channels_last, a);
  });
  return gi;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("roi_align", roi_align_cpu);
  m.impl("_roi_align_backward", roi_align_backward_cpu);
}

}  // namespace fastconv
