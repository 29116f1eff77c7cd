// Weight packing of the fast fp32 CPU convolution (cpu/conv2d_fast*.cpp), one register block
// at a time, so a pass can pack each block right where it uses it (in a per-thread buffer that
// stays in L2) instead of writing the whole packed weight to memory and reading it back: with
// few output pixels (batch 1, 7 x 7 or 14 x 14 images) that round trip and a scalar gather
// from B weight rows used to cost as much as the arithmetic. Both functions read the weight
// through its strides; NCHW- and channels_last-ordered weights take 8 x 8 register transposes
// (Kernels::transpose) and 64-byte row copies, any other strides a scalar loop. The packed
// values are the same in every case (a copy, no arithmetic), so the results do not depend on
// which path packed them.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "cpu/conv2d_fast_kernels.h"

namespace fastconv::cpu::fastk {

// A weight (K, Cg, R, S): element (k, c, r, s) at data + k * sk + c * sc + r * sr + s * ss.
struct WeightView {
  const float* data;
  int64_t sk, sc, sr, ss;
  int64_t Cg, R, S;
  explicit WeightView(const at::Tensor& w)
      : data(w.data_ptr<float>()), sk(w.stride(0)), sc(w.stride(1)), sr(w.stride(2)), ss(w.stride(3)),
        Cg(w.size(1)), R(w.size(2)), S(w.size(3)) {}
};

// Forward pass: output channels [k0, k0 + nvalid) (nvalid <= B) as
// dst[(t * Cg + c) * B + j] = weight(k0 + j, c, t / S, t % S), zero for j >= nvalid: the block
// of ForwardPlan ([tap][c][B]; the S x C fold, [r][s * Cg + c][B], is the same order).
void pack_block_forward(const Kernels& kk, const WeightView& w, int64_t k0, int nvalid, int64_t B, float* dst);

// Input gradient: input channels [c0, c0 + nvalid) of group gi's output channels
// [k0, k0 + Kg) as dst[((r * S + s') * Kg + kg) * B + j] = weight(k0 + kg, c0 + j, r, s) with
// s' = S - 1 - s when `reverse_s`, else s (s' = s_pos[s] when s_pos is given: any order of
// the kernel columns, cpu/conv2d_fast_stride2.cpp); zero for j >= nvalid.
void pack_block_gather(const Kernels& kk, const WeightView& w, int64_t k0, int64_t Kg, int64_t c0, int nvalid,
                       int64_t B, bool reverse_s, float* dst, const int64_t* s_pos = nullptr);

}  // namespace fastconv::cpu::fastk
