// Work layout shared by the CPU ROI kernels (roi_align.cpp, roi_pool.cpp).
//
// Forward passes split the boxes over threads: each box writes only its own output. Backward
// passes are scatters into the feature map's gradient, made race-free and deterministic by
// splitting that gradient instead: a unit is one (image, channel block); it visits the boxes of
// its image in box order and accumulates into a private buffer, which it then writes out. No
// two units share an element and the order of additions is fixed, whatever the thread count.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace fastconv {
namespace cpu {

// The boxes of each image in box order: boxes of image n are order[begin[n] .. begin[n + 1]).
// Batch indices were validated (integers in [0, N)).
struct BoxesByImage {
  std::vector<int64_t> order, begin;
};

template <typename scalar_t>
BoxesByImage boxes_by_image(const scalar_t* rois, int64_t K, int64_t N) {
  BoxesByImage b;
  b.begin.assign(N + 1, 0);
  b.order.resize(K);
  for (int64_t k = 0; k < K; ++k) ++b.begin[static_cast<int64_t>(rois[5 * k]) + 1];
  for (int64_t n = 0; n < N; ++n) b.begin[n + 1] += b.begin[n];
  std::vector<int64_t> next(b.begin.begin(), b.begin.end() - 1);
  for (int64_t k = 0; k < K; ++k) b.order[next[static_cast<int64_t>(rois[5 * k])]++] = k;
  return b;
}

// Channel blocks for the backward units: whole images when there are enough of them for the
// threads, else halves, quarters, ... down to 16 channels, so both cores get work.
struct ChannelBlocks {
  int64_t count, width;
};

inline ChannelBlocks channel_blocks(int64_t N, int64_t C) {
  const int64_t want = 2 * at::get_num_threads();
  int64_t count = 1;
  while (N * count < want && (C + 2 * count - 1) / (2 * count) >= 16) count *= 2;
  return {count, (C + count - 1) / count};
}

// Writes a unit's gradient buffer buf[HW][width] (accumulator type) into grad_input's channels
// [c0, c0 + width) of image n, in either layout.
template <typename scalar_t, typename acc_t>
void store_unit(const acc_t* buf, scalar_t* gi, int64_t n, int64_t c0, int64_t width, int64_t C,
                int64_t HW, bool channels_last) {
  if (channels_last) {
    for (int64_t i = 0; i < HW; ++i) {
      scalar_t* dst = gi + (n * HW + i) * C + c0;
      for (int64_t c = 0; c < width; ++c) dst[c] = static_cast<scalar_t>(buf[i * width + c]);
    }
  } else {
    for (int64_t c = 0; c < width; ++c) {
      scalar_t* dst = gi + (n * C + c0 + c) * HW;
      for (int64_t i = 0; i < HW; ++i) dst[i] = static_cast<scalar_t>(buf[i * width + c]);
    }
  }
}

// Strides of a (K, C, PH, PW) tensor that is contiguous in one of the two layouts, with the
// bin index b = ph * PW + pw: element (k, c, b) is at k * k_stride + c * c_stride + b * b_stride.
struct BinStrides {
  int64_t k_stride, c_stride, b_stride;
};

inline BinStrides bin_strides(int64_t C, int64_t bins, bool channels_last) {
  return channels_last ? BinStrides{C * bins, 1, C} : BinStrides{C * bins, bins, 1};
}

// A (K, C, PH, PW) tensor contiguous in one of the two layouts (whichever it already is, else
// NCHW), and whether that is channels_last.
inline std::pair<at::Tensor, bool> bins_contiguous(const at::Tensor& t) {
  if (t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous()) return {t, true};
  return {t.contiguous(), false};
}

}  // namespace cpu
}  // namespace fastconv
