// The tile transforms of the Winograd convolution (cpu/conv2d_fast_winograd.cpp): plain
// functions over raw arrays, no ATen, compiled for AVX2 + FMA (conv2d_fast_winograd_avx2.cpp)
// and vectorized over 8 channels. F(m x m, 3 x 3) turns an alpha x alpha input patch (alpha =
// m + 2 at stride 1, 2 m + 1 at stride 2; see Transforms for the stride-2 input gradient) into
// alpha^2 values per channel (V = B^T d B), a 3 x 3 filter into alpha^2 values (U =
// G g G^T), and after the alpha^2 channel GEMMs M = V U, the alpha^2 sums into an m x m output
// tile (Y = A^T M A). Every element is computed by the same sequence of operations whatever the
// tile's position or the thread that runs it.
#pragma once
#include <cstdint>

namespace fastconv::cpu::wino {

// One input patch: rows [y0, y0 + alpha) and columns [x0, x0 + alpha) of an NHWC image,
// element (y, x, c) at img + y * row + x * col + c; positions outside [0, h) x [0, w) read as
// zero (the padding is never stored). Writes channels [0, nch) of the alpha^2 transformed
// values, value xi at dst + xi * dst_xi.
struct InputTile {
  const float* img;
  int64_t row, col;
  int64_t y0, x0, h, w;
  int64_t nch;
  float* dst;
  int64_t dst_xi;
};

// One output tile: GEMM sums of value xi at src + xi * src_xi (channels [0, nch), readable in
// whole vectors of 8), plus bias (nch floats, or nullptr), stored as the top-left rows x cols
// pixels of the m x m tile: element (y, x, c) at dst + y * d_row + x * d_col + c * d_chan.
struct OutputTile {
  const float* src;
  int64_t src_xi;
  int64_t nch;
  const float* bias;
  float* dst;
  int64_t d_row, d_col, d_chan;
  int rows, cols;
};

struct Transforms {
  // A tile: m x m outputs through alpha x alpha transformed values, from an input patch (alpha x
  // alpha; 3 x 3 for the stride-2 input gradient) whose tiles are src_step source pixels apart.
  int m, alpha, src_step;
  void (*input)(const InputTile&);
  void (*output)(const OutputTile&);
  // g: the 9 taps (r * 3 + s) of `lanes` filters (a multiple of 8), tap t of filter l at
  // g + t * g_tap + l; writes value xi of filter l at u + xi * u_xi + l.
  void (*weight)(const float* g, int64_t g_tap, int64_t lanes, float* u, int64_t u_xi);
};

// stride 1: F(m x m, 3 x 3), m = 2 or 4; stride 2: the stride-2 F(2 x 2, 3 x 3) (m = 2, alpha =
// 5, any m asked for). Callable only where the CPU has AVX2 and FMA.
const Transforms& avx2_transforms(int m, int stride);
// The input gradient of a 3x3 stride-2 layer (m = 4, alpha = 5, patch = 3): tiles that start at
// an odd or even column of the padded input (odd or even padding).
const Transforms& avx2_transforms_stride2_input_grad(bool odd_start);

}  // namespace fastconv::cpu::wino
