// The three convolution passes written as implicit GEMMs, one "problem" struct each, read by
// the GEMM cores of conv2d_igemm.cuh (SIMT) and conv2d_wmma.cuh (tensor cores). Device code
// only (SIMT.md): no ATen, no <<<>>>, no inline PTX, no __CUDA_ARCH__ bodies.
//
// A problem is a GEMM C[M x N] = A[M x Kr] * B[Kr x N] per group (blockIdx.z), whose operand
// elements are gathered from the activation tensors on the fly (nothing is materialized):
//   forward      M = N*P*Q  (output pixel)  N = K/g  (output channel)  Kr = C/g*R*S  (tap)
//   input grad   M = N*H*W  (input pixel)   N = C/g  (input channel)   Kr = K/g*R*S
//   weight grad  M = K/g                    N = C/g*R*S                Kr = N*P*Q   (pixel)
// Both operands are read as "panels" of MN rows x Kr columns: a thread keeps a Row context
// per panel row it loads (decoded once per block), then a_src/b_src(row, kk, kend) give the
// address of the element at reduction index kk, or null where the operand is zero (outside
// the tensor: padding, a tap no output reads; past kend or past MN). The cores read V
// elements from there (registers, or an asynchronous copy into shared memory). V > 1 is the
// vectorized channels_last variant: V consecutive elements along the problem's contiguous
// direction (a_along_k / b_along_k of channels_last), one 8- or 16-byte access; the plan
// guarantees divisibility and alignment. Reduction order (the kk decode) matches the weight
// layout the host passes: (c, r, s) for NCHW, (r, s, c) for channels_last (the weight is made
// contiguous in the activations' memory format).
//
// Index math: int64 for tensor offsets, built from products only (a 64-bit division is a
// subroutine call on the GPU, whose register saves show up as spills); int for the decodes of
// pixel, channel and tap indices (the host checks N*P*Q, N*H*W, C*R*S and K*R*S fit in int).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common/conv.h"
#include "cuda/launch/launch.h"

namespace fastconv {
namespace FC_KERNEL_NS {

#define FC_DEV __device__ __forceinline__

// ---- element types --------------------------------------------------------------------------
// Storage types are CUDA's (float, double, __half, __nv_bfloat16; the host reinterprets
// c10::Half / c10::BFloat16 pointers); accumulation in float, double for double.
template <typename T>
struct ConvAcc {
  using type = float;
};
template <>
struct ConvAcc<double> {
  using type = double;
};

FC_DEV float conv_to_acc(float v) { return v; }
FC_DEV double conv_to_acc(double v) { return v; }
FC_DEV float conv_to_acc(__half v) { return __half2float(v); }
FC_DEV float conv_to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

FC_DEV void conv_from_acc(float v, float* out) { *out = v; }
FC_DEV void conv_from_acc(double v, double* out) { *out = v; }
FC_DEV void conv_from_acc(float v, __half* out) { *out = __float2half_rn(v); }
FC_DEV void conv_from_acc(float v, __nv_bfloat16* out) { *out = __float2bfloat16_rn(v); }

// Zero of a storage type (the fp16 conversions constructors are off in PyTorch's nvcc flags).
FC_DEV void conv_zero(float* v) { *v = 0.f; }
FC_DEV void conv_zero(double* v) { *v = 0.0; }
FC_DEV void conv_zero(__half* v) { *v = __float2half_rn(0.f); }
FC_DEV void conv_zero(__nv_bfloat16* v) { *v = __float2bfloat16_rn(0.f); }

// V elements moved as one access (capped at 16-byte alignment, the widest load).
template <typename T, int V>
struct alignas(sizeof(T) * V < 16 ? sizeof(T) * V : 16) ConvPack {
  T v[V];
};

// V elements at p (a vector access when V > 1), or zeros where p is null.
template <typename T, int V>
FC_DEV void conv_fetch(const T* p, T (&out)[V]) {
  if (p != nullptr) {
    if (V == 1) {
      out[0] = *p;
    } else {
      const ConvPack<T, V> pack = *reinterpret_cast<const ConvPack<T, V>*>(p);
#pragma unroll
      for (int j = 0; j < V; ++j) out[j] = pack.v[j];
    }
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) conv_zero(&out[j]);
  }
}

// Decodes of a tap index: (c, r, s) with c slowest for NCHW, c fastest for channels_last.
struct ConvTap {
  int c, r, s;
};
FC_DEV ConvTap conv_tap(int kk, int cg, int r, int s, bool cl) {
  int rs, c;
  if (cl) {
    c = kk % cg;
    rs = kk / cg;
  } else {
    rs = kk % (r * s);
    c = kk / (r * s);
  }
  return {c, rs / s, rs % s};
}

// The epilogue's view of one output row (an activation pixel m = (image, pixel-in-plane)):
// element (m, channel) is at base + channel * cstride. One division per decode; the next row
// is a step (the SIMT core's rows are consecutive), which keeps divisions out of the epilogue.
struct ConvOutRow {
  int64_t base, cstride;
  int img, pix;
};
// plane = pixels per image, channels = channels of the activation.
FC_DEV ConvOutRow conv_out_row(int64_t m, int64_t plane, int64_t channels, bool cl) {
  const int img = int(m) / int(plane), pix = int(m) % int(plane);
  return {cl ? m * channels : int64_t(img) * channels * plane + pix, cl ? 1 : plane, img, pix};
}
FC_DEV void conv_out_next(ConvOutRow& o, int64_t plane, int64_t channels, bool cl) {
  if (cl) {
    o.base += channels;
  } else if (++o.pix == plane) {
    o.pix = 0;
    ++o.img;
    o.base += (channels - 1) * plane + 1;  // first pixel of the next image
  } else {
    ++o.base;
  }
}

// ---- forward ----------------------------------------------------------------------------------
template <typename T>
struct ConvFwdProblem {
  using scalar_t = T;
  using acc_t = typename ConvAcc<T>::type;
  const T* x;     // input (N, C, H, W) in its memory format
  const T* w;     // weight (K, C/g, R, S), contiguous in the input's memory format
  const T* bias;  // (K) or null
  T* y;           // output (N, K, P, Q), the input's memory format
  ConvGeometry g;
  bool cl;
  int cg, kg;  // channels per group of input and output (host-computed: no 64-bit division)

  FC_DEV int64_t gemm_m() const { return g.n * g.p * g.q; }
  FC_DEV int64_t gemm_n() const { return kg; }
  FC_DEV int64_t gemm_k() const { return cg * g.r * g.s; }
  static constexpr bool a_along_k(bool cl) { return cl; }  // NCHW: neighbouring q are adjacent
  static constexpr bool b_along_k(bool) { return true; }   // weight rows are contiguous in kk

  struct ARow {
    int64_t base;  // offset of the image, plus the group's first channel in channels_last
    int ih0, iw0;  // input coordinate of tap (0, 0)
    bool valid;
  };
  FC_DEV ARow a_row(int64_t m, int64_t grp) const {
    const int pq = int(g.p * g.q), n = int(m) / pq, rem = int(m) % pq, q = int(g.q);
    const int64_t first_c = grp * cg;
    return {n * g.c * g.h * g.w + (cl ? first_c : first_c * g.h * g.w),
            int(conv_input_coord(rem / q, 0, g.stride_h, g.pad_h, g.dil_h)),
            int(conv_input_coord(rem % q, 0, g.stride_w, g.pad_w, g.dil_w)), m < gemm_m()};
  }
  FC_DEV const T* a_src(const ARow& a, int64_t kk, int64_t kend) const {
    const ConvTap t = conv_tap(int(kk), cg, int(g.r), int(g.s), cl);
    const int ih = a.ih0 + t.r * int(g.dil_h), iw = a.iw0 + t.s * int(g.dil_w);
    const bool in = a.valid && kk < kend && ih >= 0 && ih < g.h && iw >= 0 && iw < g.w;
    const int64_t off = cl ? (int64_t(ih) * g.w + iw) * g.c + t.c
                           : (int64_t(t.c) * g.h + ih) * g.w + iw;
    return in ? x + a.base + off : nullptr;
  }

  struct BRow {
    int64_t base;  // weight row of the output channel
    bool valid;
  };
  FC_DEV BRow b_row(int64_t n, int64_t grp) const {
    return {(grp * gemm_n() + n) * gemm_k(), n < gemm_n()};
  }
  FC_DEV const T* b_src(const BRow& b, int64_t kk, int64_t kend) const {
    const bool in = b.valid && kk < kend;
    return in ? w + b.base + kk : nullptr;
  }

  // Output row m (pixel): its offset and the distance between channels, decoded once per row
  // and stepped to the next row without a division.
  FC_DEV ConvOutRow out_row(int64_t m) const { return conv_out_row(m, g.p * g.q, g.k, cl); }
  FC_DEV void out_next(ConvOutRow& o) const { conv_out_next(o, g.p * g.q, g.k, cl); }
  FC_DEV void store(const ConvOutRow& o, int64_t n, int64_t grp, int64_t /*split*/,
                    acc_t v) const {
    const int64_t k = grp * gemm_n() + n;
    if (bias != nullptr) v += conv_to_acc(bias[k]);
    conv_from_acc(v, y + o.base + k * o.cstride);
  }
};

// ---- input gradient: a gather over taps (conv_output_for_tap), no atomics --------------------
template <typename T>
struct ConvDgradProblem {
  using scalar_t = T;
  using acc_t = typename ConvAcc<T>::type;
  const T* dy;  // grad_output (N, K, P, Q)
  const T* w;   // weight (K, C/g, R, S), contiguous in grad_output's memory format
  T* dx;        // grad_input (N, C, H, W)
  ConvGeometry g;
  bool cl;
  int cg, kg;  // channels per group of input and output (host-computed: no 64-bit division)

  FC_DEV int64_t gemm_m() const { return g.n * g.h * g.w; }
  FC_DEV int64_t gemm_n() const { return cg; }
  FC_DEV int64_t gemm_k() const { return kg * g.r * g.s; }
  static constexpr bool a_along_k(bool cl) { return cl; }   // channels of dy are adjacent
  static constexpr bool b_along_k(bool cl) { return !cl; }  // channels_last weight: c adjacent

  struct ARow {
    int64_t base;  // dy offset of the image (+ the group's first channel in channels_last)
    int h, w;
    bool valid;
  };
  FC_DEV ARow a_row(int64_t m, int64_t grp) const {
    const int hw = int(g.h * g.w), n = int(m) / hw, rem = int(m) % hw;
    const int64_t first_k = grp * kg;
    return {n * g.k * g.p * g.q + (cl ? first_k : first_k * g.p * g.q), rem / int(g.w),
            rem % int(g.w), m < gemm_m()};
  }
  FC_DEV const T* a_src(const ARow& a, int64_t kk, int64_t kend) const {
    // kk = (k, r, s) with k slowest (NCHW) or fastest (channels_last): conv_tap's decode
    const ConvTap t = conv_tap(int(kk), kg, int(g.r), int(g.s), cl);
    const int64_t p = conv_output_for_tap_as<int>(a.h, t.r, int(g.p), int(g.stride_h),
                                                  int(g.pad_h), int(g.dil_h));
    const int64_t q = conv_output_for_tap_as<int>(a.w, t.s, int(g.q), int(g.stride_w),
                                                  int(g.pad_w), int(g.dil_w));
    const bool in = a.valid && kk < kend && p >= 0 && q >= 0;
    const int64_t off = cl ? (p * g.q + q) * g.k + t.c : (int64_t(t.c) * g.p + p) * g.q + q;
    return in ? dy + a.base + off : nullptr;
  }

  struct BRow {
    int64_t first_k;  // the group's first output channel
    int c;
    bool valid;
  };
  FC_DEV BRow b_row(int64_t n, int64_t grp) const {
    return {grp * kg, int(n), n < gemm_n()};
  }
  FC_DEV const T* b_src(const BRow& b, int64_t kk, int64_t kend) const {
    const ConvTap t = conv_tap(int(kk), kg, int(g.r), int(g.s), cl);
    const int64_t rs = int64_t(t.r) * g.s + t.s;
    const int64_t row = (b.first_k + t.c) * cg * g.r * g.s;
    const bool in = b.valid && kk < kend;
    const int64_t off = row + (cl ? rs * cg + b.c : b.c * g.r * g.s + rs);
    return in ? w + off : nullptr;
  }

  FC_DEV ConvOutRow out_row(int64_t m) const { return conv_out_row(m, g.h * g.w, g.c, cl); }
  FC_DEV void out_next(ConvOutRow& o) const { conv_out_next(o, g.h * g.w, g.c, cl); }
  FC_DEV void store(const ConvOutRow& o, int64_t n, int64_t grp, int64_t /*split*/,
                    acc_t v) const {
    conv_from_acc(v, dx + o.base + (grp * gemm_n() + n) * o.cstride);
  }
};

// ---- weight gradient: split over the N*P*Q reduction into fp32/fp64 partials ---------------
// Split `split` of a group sums pixels [split * k_chunk, min(Kr, (split + 1) * k_chunk)) and
// writes its partial sums to ws[split][K][C/g][R][S] (NCHW) or ws[split][K][R][S][C/g]
// (channels_last: dw's own memory order either way); conv_wgrad_reduce adds the splits in
// order (deterministic: no atomics).
template <typename T>
struct ConvWgradProblem {
  using scalar_t = T;
  using acc_t = typename ConvAcc<T>::type;
  const T* dy;  // grad_output (N, K, P, Q)
  const T* x;   // input (N, C, H, W), same memory format
  acc_t* ws;    // partials (splits, K, C/g, R, S), or (splits, K, R, S, C/g) when cl
  ConvGeometry g;
  bool cl;
  int cg, kg;  // channels per group of input and output (host-computed: no 64-bit division)

  FC_DEV int64_t gemm_m() const { return kg; }
  FC_DEV int64_t gemm_n() const { return cg * g.r * g.s; }
  FC_DEV int64_t gemm_k() const { return g.n * g.p * g.q; }
  static constexpr bool a_along_k(bool cl) { return !cl; }  // NCHW: pixels adjacent
  static constexpr bool b_along_k(bool cl) { return !cl; }

  struct ARow {
    int64_t k;  // output channel (absolute)
    bool valid;
  };
  FC_DEV ARow a_row(int64_t m, int64_t grp) const {
    return {grp * gemm_m() + m, m < gemm_m()};
  }
  FC_DEV const T* a_src(const ARow& a, int64_t kk, int64_t kend) const {
    const int pq = int(g.p * g.q);
    const bool in = a.valid && kk < kend;
    const int64_t off =
        cl ? kk * g.k + a.k : (int64_t(int(kk) / pq) * g.k + a.k) * pq + int(kk) % pq;
    return in ? dy + off : nullptr;
  }

  struct BRow {
    int64_t c;     // input channel (absolute)
    int dh, dw;    // input coordinate of output pixel (0, 0) through this tap
    bool valid;
  };
  FC_DEV BRow b_row(int64_t n, int64_t grp) const {
    const ConvTap t = conv_tap(int(n < gemm_n() ? n : 0), cg, int(g.r), int(g.s), cl);
    return {grp * cg + t.c, int(conv_input_coord(0, t.r, 1, g.pad_h, g.dil_h)),
            int(conv_input_coord(0, t.s, 1, g.pad_w, g.dil_w)), n < gemm_n()};
  }
  FC_DEV const T* b_src(const BRow& b, int64_t kk, int64_t kend) const {
    const int pq = int(g.p * g.q), n = int(kk) / pq, rem = int(kk) % pq, q = int(g.q);
    const int ih = (rem / q) * int(g.stride_h) + b.dh, iw = (rem % q) * int(g.stride_w) + b.dw;
    const bool in = b.valid && kk < kend && ih >= 0 && ih < g.h && iw >= 0 && iw < g.w;
    const int64_t off = cl ? ((n * g.h + ih) * g.w + iw) * g.c + b.c
                           : ((n * g.c + b.c) * g.h + ih) * g.w + iw;  // n promotes to int64
    return in ? x + off : nullptr;
  }

  // Output rows are output channels: the row is m itself.
  FC_DEV ConvOutRow out_row(int64_t m) const { return {m, 0, 0, 0}; }
  FC_DEV void out_next(ConvOutRow& o) const { ++o.base; }
  FC_DEV void store(const ConvOutRow& o, int64_t n, int64_t grp, int64_t split,
                    acc_t v) const {
    // n in the panel's order; the partials are stored in dw's order: (c, r, s), or (r, s, c)
    // when channels_last
    const ConvTap t = conv_tap(int(n), cg, int(g.r), int(g.s), cl);
    const int64_t row = gemm_n();
    const int64_t widx = cl ? (int64_t(t.r) * g.s + t.s) * cg + t.c : (int64_t(t.c) * g.r + t.r) * g.s + t.s;
    ws[(split * g.k + grp * gemm_m() + o.base) * row + widx] = v;
  }
};

// Sums the splits of the weight-gradient partials in split order and casts:
// dw[i] = sum_{s < splits} ws[s * total + i]. One thread per weight element.
template <typename T, typename acc_t>
__global__ void __launch_bounds__(256)
    conv_wgrad_reduce(const acc_t* ws, T* dw, int64_t total, int64_t splits) {
  for (int64_t i = grid_first(); i < total; i += grid_step()) {
    acc_t sum = ws[i];
    for (int64_t s = 1; s < splits; ++s) sum += ws[s * total + i];
    conv_from_acc(sum, dw + i);
  }
}

}  // namespace FC_KERNEL_NS
}  // namespace fastconv
