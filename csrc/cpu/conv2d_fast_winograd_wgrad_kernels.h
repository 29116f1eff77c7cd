// The kernels of the Winograd weight gradient (cpu/conv2d_fast_winograd_wgrad.cpp): plain
// functions over raw arrays, no ATen, in conv2d_fast_winograd_wgrad_impl.inc, compiled for AVX2 +
// FMA (conv2d_fast_winograd_wgrad_avx2.cpp: fp32 8 channels per vector, fp64 4) and for AVX-512F
// (_avx512.cpp: 16 and 8).
//
// F(m x m, 3 x 3) run backwards: the forward pass computes an m x m output tile as
// Y = A^T [(G w G^T) . (B^T d B)] A, so for a grad_output tile g (m x m) the tile's share of
// the weight gradient, sum over i, j of g(i, j) d(i + r, j + s), is
// dW = G^T [(A g A^T) . (B^T d B)] G (the adjoint of the forward map). Summed over all tiles:
// M[xi][k][c] = sum over tiles of (A g_k A^T)[xi] (B^T d_c B)[xi] (one GEMM per xi, reducing
// over the tiles), then dW[k][c] = G^T M[.][k][c] G (3 x 3).
// Every element is computed by the same sequence of operations whatever the tile's position
// or the thread that runs it.
#pragma once
#include <cstdint>

namespace fastconv::cpu::wino {

// One patch of an NHWC image: rows [y0, y0 + size) and columns [x0, x0 + size) (size = alpha
// for the input, m for grad_output), element (y, x, c) at img + y * row + x * col + c;
// positions outside [0, h) x [0, w) read as zero. Writes channels [0, nch_out) of the alpha^2
// transformed values (channels >= nch as zeros; nch_out a multiple of the vector width),
// value xi at dst + xi * dst_xi.
template <class T>
struct WPatch {
  const T* img;
  int64_t row, col;
  int64_t y0, x0, h, w;
  int64_t nch, nch_out;
  T* dst;
  int64_t dst_xi;
};

// One transformed-domain GEMM (one xi, one chunk of tiles), accumulated:
// acc[k][c] (+)= sum over t < nt of u[t * ldu + k] v[t * ldv + c], for k < krows (a multiple
// of kRows) and c < ccols (a multiple of two vectors); acc rows ld_acc apart. With `first`,
// acc is overwritten instead of accumulated into. The sum over t runs in order.
template <class T>
struct WGemm {
  const T* u;
  int64_t ldu;
  const T* v;
  int64_t ldv;
  int64_t nt;
  T* acc;
  int64_t ld_acc;
  int64_t krows, ccols;
  bool first;
};
constexpr int kRows = 6;  // rows (output channels) of the GEMM's register tile

// Rows [k0, k1) of the weight gradient: for each channel c < C, the sum over slices
// s < nslices (in order) of m[s * slice + xi * xi_stride + k * ld + c], through G^T . G, stored
// at dw[k * C * 9 + c * 9 + r * 3 + s] (a contiguous (K, C, 3, 3) tensor) or, channels_last,
// at dw[k * 9 * C + (r * 3 + s) * C + c].
template <class T>
struct WReduce {
  const T* m;
  int64_t nslices, slice, xi_stride, ld;
  int64_t k0, k1, C;
  T* dw;
  bool channels_last;
};

template <class T>
struct WgradKernels {
  int m, alpha, stride;  // input patches m * stride pixels apart
  int width;                             // elements per vector
  void (*input)(const WPatch<T>&);       // B^T d B of an alpha x alpha input patch
  void (*grad)(const WPatch<T>&);        // A g A^T of an m x m grad_output patch
  void (*gemm)(const WGemm<T>&);
  void (*reduce)(const WReduce<T>&);
};

// stride 1: m = 2 or 4; stride 2: m = 2 (any m asked for). Callable only where the CPU has AVX2
// and FMA (avx2_*), AVX-512F (avx512_*).
const WgradKernels<float>& avx2_wgrad_kernels_f32(int m, int stride);
const WgradKernels<double>& avx2_wgrad_kernels_f64(int m, int stride);
const WgradKernels<float>& avx512_wgrad_kernels_f32(int m, int stride);
const WgradKernels<double>& avx512_wgrad_kernels_f64(int m, int stride);

}  // namespace fastconv::cpu::wino
