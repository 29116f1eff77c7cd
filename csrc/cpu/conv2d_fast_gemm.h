// 1x1 convolutions as one packed fp32 GEMM (BLIS-style), all three passes, NCHW and
// channels_last (cpu/conv2d_fast_gemm.cpp: blocking, packing, threading; cpu/conv2d_fast_gemm_conv.cpp:
// the conv drivers; cpu/conv2d_fast_gemm_avx2.cpp: the AVX2 + FMA micro-kernel and packing
// routines; cpu/conv2d_fast_gemm_avx512_tile.inc: the AVX-512 6 x 32 and 6 x 64 ones).
//
// A 1x1 convolution is a GEMM in every pass (P = output pixels of one image):
//   forward  Y_n[K, P] = W[K, C] X_n[C, P]        (channels_last: Y[N*P, K] = X[N*P, C] W^T)
//   dgrad    dX_n[C, P] = W^T dY_n[K, P]          (channels_last: dX[N*P, C] = dY[N*P, K] W)
//   wgrad    dW[K, C] = sum_n dY_n[K, P] X_n[C, P]^T
// With stride > 1 the strided pixels are gathered first (wgrad, channels_last forward and short
// NCHW images) or read in place (NCHW forward), or the result is scattered into a zeroed dX
// (dgrad). Matrices are described by their element strides, so
// both layouts (and any weight strides) are the same code.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "common/conv.h"

namespace fastconv::cpu::gemm {

// C[M, N] = sum over batch b (or per b) of A_b[M, K] B_b[K, N] (+ bias), fp32. Element (i, k)
// of A_b is a[b * a_batch + i * a_rs + k * a_cs], likewise B and C. With reduce_batch the
// batch is part of the reduction (C = sum_b A_b B_b, one C); otherwise C_b = A_b B_b at
// c + b * c_batch. C's contents on entry are not read, unless accumulate is set (the sum is
// then added to them; a summed batch only, no bias: a weight gradient taken in chunks of
// images). The bias (optional) is added to every element: bias[i] (bias_per_row) or bias[j].
// The summation order (K cut into fixed blocks, then batches in order) depends on the shape
// alone, never on the thread count.
struct Problem {
  int64_t M = 0, N = 0, K = 0;
  const float* a = nullptr;
  int64_t a_rs = 0, a_cs = 0, a_batch = 0;
  const float* b = nullptr;
  int64_t b_rs = 0, b_cs = 0, b_batch = 0;
  float* c = nullptr;
  int64_t c_rs = 0, c_cs = 0, c_batch = 0;
  int64_t batch = 1;
  bool reduce_batch = false;
  bool accumulate = false;
  const float* bias = nullptr;
  bool bias_per_row = false;
  // With n_group > 0 the columns of B and C come in groups of n_group (several images'
  // pixels as one column index): column j is column j % n_group of group j / n_group, the
  // groups b_group and c_group elements apart (element (k, j) of B at b[k * b_rs +
  // (j / n_group) * b_group + (j % n_group) * b_cs], likewise C). A bias is then per row.
  int64_t n_group = 0, b_group = 0, c_group = 0;
};

// Runs p with at::parallel_for over tiles of C. Needs AVX2 + FMA.
void run(const Problem& p);

// The ISA-specific pieces (cpu/conv2d_fast_gemm_avx2.cpp, _avx512.cpp). Register tile MR x NR.
struct Kernels {
  int mr, nr;
  // c[i * rs + j * cs] (i < m, j < n) = (accumulate ? c : 0) + sum_k a[k * mr + i] * b[k * nr + j],
  // the accumulators starting from the bias when it is set (bias[i] or bias[j]; only when
  // not accumulating). a, b: packed micro-panels of kc steps.
  void (*micro)(int64_t kc, const float* a, const float* b, float* c, int64_t rs, int64_t cs, int m,
                int n, bool accumulate, const float* bias, bool bias_per_row);
  // dst[k * mr + i] = src[i * rs + k * cs] for i < m (zero for m <= i < mr), k < kc.
  void (*pack_a)(const float* src, int64_t rs, int64_t cs, int m, int64_t kc, float* dst);
  // dst[k * nr + j] = src[k * rs + j * cs] for j < n (zero for n <= j < nr), k < kc.
  void (*pack_b)(const float* src, int64_t rs, int64_t cs, int n, int64_t kc, float* dst);
  // micro with a full tile's rows of A read in place: a[i * a_rs + k] for i < mr, k < kc
  // (unit stride along k; all mr rows are read, so m = mr), no packing.
  void (*micro_a_rows)(int64_t kc, const float* a, int64_t a_rs, const float* b, float* c, int64_t rs,
                       int64_t cs, int n, bool accumulate, const float* bias, bool bias_per_row);
  // pack_a for ceil(m / mr) consecutive panels of rows [0, m): panel q at dst + q * kc * mr.
  void (*pack_a_panels)(const float* src, int64_t rs, int64_t cs, int m, int64_t kc, float* dst);
  // micro with row i of A read in place at a_rows[i][k] (k < kc, unit stride along k), one
  // pointer per row: all mr rows are read (rows past m may point at zeros), only m are stored.
  void (*micro_a_ptrs)(int64_t kc, const float* const* a_rows, const float* b, float* c, int64_t rs,
                       int64_t cs, int m, int n, bool accumulate, const float* bias, bool bias_per_row);
  // micro with B read in place at b[k * b_rs + j] (unit stride along the columns; all nr
  // columns are read, only n are stored) and step k's mr values of A at a + k * a_cs (a packed
  // panel: a_cs = mr; in place: A with unit row stride, all mr rows read); null where the ISA
  // has none (AVX2).
  void (*micro_b_rows)(int64_t kc, const float* a, int64_t a_cs, const float* b, int64_t b_rs, float* c,
                       int64_t rs, int64_t cs, int m, int n, bool accumulate, const float* bias,
                       bool bias_per_row) = nullptr;
};
const Kernels& avx2_kernels();    // 6 x 16 (cpu/conv2d_fast_gemm_avx2.cpp)
const Kernels& avx512_kernels();       // 6 x 32 (cpu/conv2d_fast_gemm_avx512.cpp)
const Kernels& avx512_wide_kernels();  // 6 x 64 (cpu/conv2d_fast_gemm_avx512_wide.cpp)
// The micro-kernels of the running CPU, as fastk::pick_kernels() picks the direct kernels
// (AVX-512 where present, unless FASTCONV_CPU_KERNELS=avx2); needs AVX2 + FMA.
const Kernels& kernels();
// The kernels for a GEMM whose C has n columns: on AVX-512, the 6 x 64 tile where it pads n
// to no more columns than the 6 x 32 one does (n % 64 == 0 or > 32), else kernels().
// FASTCONV_CPU_GEMM_NR=32 or 64 forces one of the two AVX-512 tiles (tests, measurements).
const Kernels& kernels_for_columns(int64_t n);
// The kernels run() uses for p: kernels_for_columns(p.N), except for the NCHW weight
// gradient's per-image K blocks (see run()), which keep kernels() unless forced.
const Kernels& kernels_for(const Problem& p);

// The 1x1 conv drivers: fp32, groups 1, 1x1 kernel, no padding, any stride; tensors as in
// cpu/conv2d_fast.h's contract. `*_applies` says whether the GEMM path takes the case.
bool forward_applies(const ConvGeometry& g, const at::Tensor& input);
bool input_grad_applies(const ConvGeometry& g, const at::Tensor& grad_output);
bool weight_grad_applies(const ConvGeometry& g, const at::Tensor& grad_output);
bool conv2d_forward_gemm(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias, at::Tensor& output);
bool conv2d_input_grad_gemm(const ConvGeometry& g, const at::Tensor& grad_output,
                            const at::Tensor& weight, at::Tensor& grad_input);
bool conv2d_weight_grad_gemm(const ConvGeometry& g, const at::Tensor& grad_output,
                             const at::Tensor& input, at::Tensor& grad_weight);

}  // namespace fastconv::cpu::gemm
