// CPU kernels of roi_pool and its backward (rules: common/roi.h, contracts: schemas/roi.cpp).
//
// Forward: boxes split over threads; every bin takes the running maximum over its pixels for
// all C channels at once (channels_last data, cpu/roi_simd.h); an NCHW input is transposed
// once and each box's (bins, C) result transposed into place. Backward: race-free units of
// (image, channel block) that add grad_output at the argmax in box order (cpu/roi_units.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cfloat>
#include <vector>

#include "checks/roi.h"
#include "common/roi.h"
#include "cpu/roi_simd.h"
#include "cpu/roi_units.h"

namespace fastconv {
namespace {

struct PoolArgs {
  int64_t N, C, H, W, K, PH, PW;
  double spatial_scale;
};

// x: (N, H, W, C); out and argmax: (K, C, PH, PW) in NCHW or channels_last.
template <typename scalar_t>
void forward(const scalar_t* x, const scalar_t* rois, scalar_t* out, int32_t* argmax,
             bool channels_last, const PoolArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = a.C, bins = a.PH * a.PW;
  at::parallel_for(0, a.K, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> best(C);
    std::vector<int32_t> best_idx(C);
    std::vector<scalar_t> staged(channels_last ? 0 : bins * C);
    std::vector<int32_t> staged_idx(channels_last ? 0 : bins * C);
    for (int64_t k = begin; k < end; ++k) {
      const scalar_t* roi = rois + 5 * k;
      const RoiPoolBox box = roi_pool_box<acc_t>(roi, static_cast<acc_t>(a.spatial_scale));
      const scalar_t* image = x + static_cast<int64_t>(roi[0]) * a.H * a.W * C;
      scalar_t* box_out = channels_last ? out + k * bins * C : staged.data();
      int32_t* box_idx = channels_last ? argmax + k * bins * C : staged_idx.data();
      for (int64_t ph = 0; ph < a.PH; ++ph) {
        const RoiPoolRange rows = roi_pool_range<acc_t>(box.start_h, box.roi_h, a.PH, ph, a.H);
        for (int64_t pw = 0; pw < a.PW; ++pw) {
          const RoiPoolRange cols = roi_pool_range<acc_t>(box.start_w, box.roi_w, a.PW, pw, a.W);
          const bool empty = rows.end <= rows.start || cols.end <= cols.start;
          // an empty bin is 0; otherwise the maximum starts below every finite value
          std::fill(best.begin(), best.end(), empty ? acc_t(0) : acc_t(-FLT_MAX));
          std::fill(best_idx.begin(), best_idx.end(), int32_t(-1));
          for (int64_t h = rows.start; h < rows.end; ++h)
            for (int64_t w = cols.start; w < cols.end; ++w)
              cpu::max_update(best.data(), best_idx.data(), image + (h * a.W + w) * C,
                              static_cast<int32_t>(h * a.W + w), C);
          scalar_t* dst = box_out + (ph * a.PW + pw) * C;
          for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<scalar_t>(best[c]);
          std::copy(best_idx.begin(), best_idx.end(), box_idx + (ph * a.PW + pw) * C);
        }
      }
      if (!channels_last) {  // (bins, C) -> (C, bins)
        for (int64_t c = 0; c < C; ++c) {
          for (int64_t b = 0; b < bins; ++b) {
            out[(k * C + c) * bins + b] = staged[b * C + c];
            argmax[(k * C + c) * bins + b] = staged_idx[b * C + c];
          }
        }
      }
    }
  });
}

// go and am: (K, C, PH, PW) with strides s (the same for both); gi: (N, C, H, W).
template <typename scalar_t>
void backward(const scalar_t* go, const int32_t* am, cpu::BinStrides s, const scalar_t* rois,
              scalar_t* gi, bool channels_last, const PoolArgs& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = a.H * a.W, bins = a.PH * a.PW;
  const cpu::BoxesByImage boxes = cpu::boxes_by_image(rois, a.K, a.N);
  const cpu::ChannelBlocks blocks = cpu::channel_blocks(a.N, a.C);
  at::parallel_for(0, a.N * blocks.count, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf;
    for (int64_t u = begin; u < end; ++u) {
      const int64_t n = u / blocks.count, c0 = (u % blocks.count) * blocks.width;
      const int64_t width = std::min(blocks.width, a.C - c0);
      if (width <= 0) continue;
      buf.assign(HW * width, acc_t(0));
      for (int64_t j = boxes.begin[n]; j < boxes.begin[n + 1]; ++j) {
        const int64_t base = boxes.order[j] * s.k_stride + c0 * s.c_stride;
        for (int64_t b = 0; b < bins; ++b) {
          for (int64_t c = 0; c < width; ++c) {
            const int64_t at = base + b * s.b_stride + c * s.c_stride;
            const int32_t i = am[at];
            if (i < 0) continue;  // empty bin: no gradient
            if (C10_UNLIKELY(i >= HW)) fail_index_out_of_range("_roi_pool_backward", i, HW);
            buf[i * width + c] += static_cast<acc_t>(go[at]);
          }
        }
      }
      cpu::store_unit(buf.data(), gi, n, c0, width, a.C, HW, channels_last);
    }
  });
}

PoolArgs pool_args(const RoiGeometry& g, double spatial_scale, int64_t pooled_h,
                   int64_t pooled_w) {
  return {g.n.expect_int(), g.c.expect_int(), g.h.expect_int(), g.w.expect_int(),
          g.k.expect_int(), pooled_h,         pooled_w,         spatial_scale};
}

std::tuple<at::Tensor, at::Tensor> roi_pool_cpu(const at::Tensor& input, const at::Tensor& rois,
                                                double spatial_scale, int64_t pooled_h,
                                                int64_t pooled_w) {
  const RoiGeometry g = check_roi_pool(input, rois, spatial_scale, pooled_h, pooled_w);
  const PoolArgs a = pool_args(g, spatial_scale, pooled_h, pooled_w);
  check_roi_values(rois, a.N, "roi_pool");
  FC_CHECK(a.H * a.W <= INT32_MAX, "roi_pool", "feature maps of fewer than 2^31 pixels, got ",
           a.H, "x", a.W);
  const bool channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  const auto options = input.options().memory_format(roi_memory_format(channels_last));
  at::Tensor out = at::empty({a.K, a.C, a.PH, a.PW}, options);
  at::Tensor argmax = at::empty({a.K, a.C, a.PH, a.PW}, options.dtype(at::kInt));
  if (out.numel() == 0) return {out, argmax};
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor r = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "roi_pool", [&] {
    forward(x.const_data_ptr<scalar_t>(), r.const_data_ptr<scalar_t>(),
            out.mutable_data_ptr<scalar_t>(), argmax.mutable_data_ptr<int32_t>(), channels_last,
            a);
  });
  return {out, argmax};
}

at::Tensor roi_pool_backward_cpu(const at::Tensor& grad_output, const at::Tensor& rois,
                                 const at::Tensor& argmax, double spatial_scale,
                                 int64_t pooled_h, int64_t pooled_w,
                                 c10::SymIntArrayRef input_size, bool channels_last) {
  const char* op = "_roi_pool_backward";
  const RoiGeometry g =
      check_roi_backward(grad_output, rois, spatial_scale, pooled_h, pooled_w, input_size, op);
  check_roi_argmax(argmax, grad_output, op);
  const PoolArgs a = pool_args(g, spatial_scale, pooled_h, pooled_w);
  check_roi_values(rois, a.N, op);
  at::Tensor gi = at::empty({a.N, a.C, a.H, a.W},
                            grad_output.options().memory_format(roi_memory_format(channels_last)));
  if (gi.numel() == 0) return gi;
  if (a.K == 0) return gi.zero_();
  // grad_output and argmax in one layout, so one set of strides serves both
  const auto go_layout = cpu::bins_contiguous(grad_output);  // (tensor, channels_last)
  const at::Tensor& go = go_layout.first;
  const bool go_channels_last = go_layout.second;
  const at::Tensor am = argmax.contiguous(roi_memory_format(go_channels_last));
  const at::Tensor r = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, go.scalar_type(), "fastconv::roi_backward", [&] {
    backward(go.const_data_ptr<scalar_t>(), am.const_data_ptr<int32_t>(),
             cpu::bin_strides(a.C, a.PH * a.PW, go_channels_last), r.const_data_ptr<scalar_t>(),
             gi.mutable_data_ptr<scalar_t>(), channels_last, a);
  });
  return gi;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("roi_pool", roi_pool_cpu);
  m.impl("_roi_pool_backward", roi_pool_backward_cpu);
}

}  // namespace fastconv
