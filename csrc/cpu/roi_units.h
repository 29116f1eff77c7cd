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

#include "cpu/buffer_cache.h"
#include "cpu/layout_transpose.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>
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

// Channels of a unit taken per pass over its boxes: few enough that their gradient over the
// whole map (HW pixels) stays in L2 (~256 KB) while bins add to it at random pixels, and a
// multiple of 16 (whole 64-byte lines of channels_last float data), at least 16.
inline int64_t l2_channels(int64_t HW, int64_t width) {
  return std::min(width, std::max<int64_t>(16, 65536 / std::max<int64_t>(HW, 1) / 16 * 16));
}

// Element (k, c, ph, pw) of a (K, C, PH, PW) tensor with any strides (grad_output and argmax
// are read in place, whatever their layout, even expanded) is at k*k + c*c + ph*h + pw*w.
struct Strides4 {
  int64_t k, c, h, w;
};

inline Strides4 strides4(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// Software prefetch of the (w channels) x (PH x PW bins) block at p of a (K, C, PH, PW) tensor
// with strides s, in `parts` pieces (call with part = 0 .. parts - 1 while working on something
// else). The backward passes read such a block of grad_output and argmax per box; in channels_last
// it is PH * PW runs of w values a whole pixel (2 KB for C = 512) apart, a pattern the hardware
// prefetchers follow poorly. Blocks that are neither channel runs nor one contiguous range (an
// expanded gradient) are not prefetched.
template <typename T>
inline void prefetch_block_part(const T* p, Strides4 s, int64_t w, int64_t PH, int64_t PW,
                                int64_t part, int64_t parts) {
  constexpr int64_t kLine = 64 / sizeof(T);
  const int64_t bins = PH * PW;
  if (s.c == 1 && w > 1) {  // one run of w channels per bin
    for (int64_t b = bins * part / parts; b < bins * (part + 1) / parts; ++b) {
      const T* run = p + (b / PW) * s.h + (b % PW) * s.w;
      for (int64_t c = 0; c < w; c += kLine) __builtin_prefetch(run + c);
      __builtin_prefetch(run + w - 1);
    }
  } else if (s.w == 1 && s.h == PW && s.c == bins) {  // w * bins contiguous values
    const int64_t lo = w * bins * part / parts, hi = w * bins * (part + 1) / parts;
    if (hi <= lo) return;
    for (int64_t e = lo; e < hi; e += kLine) __builtin_prefetch(p + e);
    __builtin_prefetch(p + hi - 1);
  }
}

// The gradient of one unit, channels [c0, c0 + width) of image n, accumulated in acc_t: element
// (pixel i, channel c0 + c) at data[i * pixel_stride + c * channel_stride]. The caller asks for
// a layout (pixel_major: a pixel's channels adjacent, else one plane per channel). Where
// grad_input holds acc_t (float, double) in that layout, the unit adds into grad_input itself
// after zeroing its part (no second pass over the map); otherwise (half, bfloat16, or the
// other layout) into a zeroed private buffer, which finish() writes into grad_input.
template <typename scalar_t, typename acc_t>
class UnitGrad {
 public:
  UnitGrad(scalar_t* gi, std::vector<acc_t>& buf, int64_t n, int64_t c0, int64_t width, int64_t C,
           int64_t HW, bool gi_channels_last, bool pixel_major)
      : gi_(gi), n_(n), c0_(c0), width_(width), C_(C), HW_(HW), gi_channels_last_(gi_channels_last) {
    direct_ = std::is_same_v<scalar_t, acc_t> && pixel_major == gi_channels_last;
    if (direct_) {
      acc_t* g = reinterpret_cast<acc_t*>(gi);
      if (gi_channels_last) {
        data = g + n * HW * C + c0;
        pixel_stride = C;
        channel_stride = 1;
        for (int64_t i = 0; i < HW; ++i) std::fill_n(data + i * C, width, acc_t(0));
      } else {
        data = g + (n * C + c0) * HW;
        pixel_stride = 1;
        channel_stride = HW;
        std::fill_n(data, width * HW, acc_t(0));
      }
    } else {
      buf.assign(HW * width, acc_t(0));
      data = buf.data();
      pixel_stride = pixel_major ? width : 1;
      channel_stride = pixel_major ? 1 : HW;
    }
  }

  // Writes a private buffer into grad_input (nothing to do when the unit added in place): a
  // copy where the layouts match, else a blocked transpose (cpu/layout_transpose.h).
  void finish() const {
    if (direct_) return;
    if (gi_channels_last_) {
      scalar_t* dst = gi_ + n_ * HW_ * C_ + c0_;
      if (channel_stride != 1) {  // planes -> pixels
        transpose(data, HW_, dst, C_, width_, HW_);
        return;
      }
      for (int64_t i = 0; i < HW_; ++i)
        for (int64_t c = 0; c < width_; ++c)
          dst[i * C_ + c] = static_cast<scalar_t>(data[i * width_ + c]);
    } else {
      scalar_t* dst = gi_ + (n_ * C_ + c0_) * HW_;
      if (pixel_stride != 1) {  // pixels -> planes
        transpose(data, width_, dst, HW_, HW_, width_);
        return;
      }
      for (int64_t i = 0; i < width_ * HW_; ++i) dst[i] = static_cast<scalar_t>(data[i]);
    }
  }

  acc_t* data;
  int64_t pixel_stride, channel_stride;

 private:
  scalar_t* gi_;
  int64_t n_, c0_, width_, C_, HW_;
  bool gi_channels_last_, direct_;
};

}  // namespace cpu
}  // namespace fastconv
