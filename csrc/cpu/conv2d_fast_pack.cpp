// Weight packing of the fast fp32 CPU convolution, one register block at a time (see
// cpu/conv2d_fast_pack.h).
#include "cpu/conv2d_fast_pack.h"

#include <algorithm>

namespace fastconv::cpu::fastk {
namespace {

// Transposed pieces go through a stack buffer of at most kRun rows of (at most 32) lanes.
constexpr int64_t kRun = 256;
constexpr int64_t kMaxLanes = 32;

// n lanes of a packed row (n = 16 and 32 unrolled: these copies are the bulk of the work).
inline void copy_lanes(float* d, const float* s, int n) {
  if (n == 16) {
    for (int j = 0; j < 16; ++j) d[j] = s[j];
  } else if (n == 32) {
    for (int j = 0; j < 32; ++j) d[j] = s[j];
  } else {
    std::copy(s, s + n, d);
  }
}

// Which weight rows are plain runs: element (c, t) of one output channel (t = r * S + s) at
// t * Cg + c (channels_last order; any strides when there is one tap), or at c * R * S + t
// (NCHW order).
bool taps_outer(const WeightView& w) {
  return w.sc == 1 && (w.R * w.S == 1 || (w.ss == w.Cg && w.sr == w.S * w.Cg));
}
bool channels_outer(const WeightView& w) {
  return w.ss == 1 && w.sr == w.S && w.sc == w.R * w.S;
}

}  // namespace

void pack_block_forward(const Kernels& kk, const WeightView& w, int64_t k0, int nvalid, int64_t B, float* dst) {
  const int64_t Cg = w.Cg, RS = w.R * w.S;
  const float* src = w.data + k0 * w.sk;
  if (nvalid < B) std::fill(dst, dst + Cg * RS * B, 0.0f);
  if (taps_outer(w)) {  // element j = t * Cg + c of each row is packed row j
    kk.transpose(src, w.sk, dst, B, nvalid, Cg * RS);
    return;
  }
  if (channels_outer(w) && RS <= kRun && B <= kMaxLanes) {
    // Chunks of channels: transposed into tmp[(c - c0) * RS + t][lanes], then copied to packed
    // row t * Cg + c, tap by tap (runs of consecutive rows).
    float tmp[kRun * kMaxLanes];
    const int64_t CC = kRun / RS;
    for (int64_t c0 = 0; c0 < Cg; c0 += CC) {
      const int64_t nc = std::min(CC, Cg - c0);
      kk.transpose(src + c0 * RS, w.sk, tmp, B, nvalid, nc * RS);
      for (int64_t t = 0; t < RS; ++t) {
        for (int64_t c = 0; c < nc; ++c) copy_lanes(dst + (t * Cg + c0 + c) * B, tmp + (c * RS + t) * B, nvalid);
      }
    }
    return;
  }
  for (int64_t t = 0; t < RS; ++t) {  // any other strides
    for (int64_t c = 0; c < Cg; ++c) {
      const float* e = src + c * w.sc + (t / w.S) * w.sr + (t % w.S) * w.ss;
      float* d = dst + (t * Cg + c) * B;
      for (int j = 0; j < nvalid; ++j) d[j] = e[j * w.sk];
    }
  }
}

void pack_block_gather(const Kernels& kk, const WeightView& w, int64_t k0, int64_t Kg, int64_t c0, int nvalid,
                       int64_t B, bool reverse_s, float* dst, const int64_t* s_pos) {
  const int64_t S = w.S, RS = w.R * S;
  const auto row = [&](int64_t t, int64_t kg) {  // packed row of tap t, output channel kg
    const int64_t s = t % S;
    return dst + (((t - s) + (s_pos ? s_pos[s] : reverse_s ? S - 1 - s : s)) * Kg + kg) * B;
  };
  if (nvalid < B) std::fill(dst, dst + RS * Kg * B, 0.0f);
  const float* src = w.data + k0 * w.sk + c0 * w.sc;
  if (taps_outer(w)) {  // the lanes of (kg, t) are adjacent: copies, tap by tap per chunk of rows
    // Each copy reads one or two cache lines of another weight row (a stride the hardware
    // prefetcher does not follow): the lines the same copy of the next chunk reads are
    // prefetched, both of them for a 32-lane block (ResNet-50 res5b_branch2b channels_last at
    // batch 1, where packing is a quarter of the time: 2.27 -> 2.04 ms with the second line,
    // 2 threads, best of 20 interleaved).
    constexpr int64_t KC = 16;
    for (int64_t kg0 = 0; kg0 < Kg; kg0 += KC) {
      const int64_t kg1 = std::min(Kg, kg0 + KC);
      for (int64_t t = 0; t < RS; ++t) {
        const int64_t off = (t / S) * w.sr + (t % S) * w.ss;
        for (int64_t kg = kg0; kg < kg1; ++kg) {
          if (kg + KC < Kg) {
            __builtin_prefetch(src + (kg + KC) * w.sk + off);
            if (nvalid > 16) __builtin_prefetch(src + (kg + KC) * w.sk + off + 16);
          }
          copy_lanes(row(t, kg), src + kg * w.sk + off, nvalid);
        }
      }
    }
    return;
  }
  if (channels_outer(w) && RS <= kRun && B <= kMaxLanes) {
    // Per output channel, the (lanes x taps) piece transposed into tmp[kg - kg0][t][lanes];
    // then copied tap by tap (runs of consecutive packed rows).
    float tmp[kRun * kMaxLanes];
    const int64_t KC = kRun / RS;
    for (int64_t kg0 = 0; kg0 < Kg; kg0 += KC) {
      const int64_t nk = std::min(KC, Kg - kg0);
      for (int64_t i = 0; i < nk; ++i) {
        // the rows' pieces (lanes x taps floats) are short: prefetch the next chunk's
        if (kg0 + KC + i < Kg) {
          const float* next = src + (kg0 + KC + i) * w.sk;
          for (int64_t f = 0; f < nvalid * RS; f += 16) __builtin_prefetch(next + f);
        }
        kk.transpose(src + (kg0 + i) * w.sk, RS, tmp + i * RS * B, B, nvalid, RS);
      }
      for (int64_t t = 0; t < RS; ++t) {
        for (int64_t i = 0; i < nk; ++i) copy_lanes(row(t, kg0 + i), tmp + (i * RS + t) * B, nvalid);
      }
    }
    return;
  }
  for (int64_t t = 0; t < RS; ++t) {  // any other strides
    const int64_t off = (t / S) * w.sr + (t % S) * w.ss;
    for (int64_t kg = 0; kg < Kg; ++kg) {
      float* d = row(t, kg);
      for (int j = 0; j < nvalid; ++j) d[j] = src[kg * w.sk + j * w.sc + off];
    }
  }
}

}  // namespace fastconv::cpu::fastk
