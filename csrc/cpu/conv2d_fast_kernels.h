// The SIMD micro-kernels behind the fast fp32 CPU convolution (cpu/conv2d_fast*.cpp): plain
// functions over raw arrays, no ATen, compiled once per instruction set (conv2d_fast_avx2.cpp,
// conv2d_fast_avx512.cpp, both from conv2d_fast_ukernels.h) and picked at run time.
//
// Every pass is reduced to two shapes of work on NHWC data:
//  - ConvRow: one destination row segment x one block of `block` destination channels,
//    out[x][0:block] = init + sum over taps t, l < L of a[t][x * a_pix + l] * b[t][l][0:block]
//    (b[t][l] at b[t] + l * b_ld where b_ld is set; init: out's own contents with accumulate).
//    Forward: destination = output pixels, source = (zero-padded) input, reduction = input
//    channels (or kernel columns x input channels, folded into one contiguous run).
//    Input gradient: destination = input pixels of one stride phase, source = (zero-padded)
//    grad_output, reduction = output channels. The tile is `max_m` pixels x `block` channels
//    held in registers (AVX2: 6 x 16 in 12 ymm; AVX-512: 12 x 32 in 24 zmm); the weights are
//    packed so each reduction step loads two vectors and broadcasts one value per pixel.
//  - WgradTile: one tile of the weight gradient, `m` (<= max_m) reduction-side elements x one
//    block of output channels, accumulated over rows of pixels:
//    acc[e][0:block] += sum over rows i, pixels p of a[i][p * a_pix + e] * g[i][p * g_pix + 0:block].
//    No padding is read: the caller pads the input. Only the first `nvalid` channels of g are
//    loaded (masked), so a block may run past the end of grad_output.
// Summation order is fixed by the arguments alone (never by the thread that runs them).
#pragma once
#include <cstdint>

namespace fastconv::cpu::fastk {

struct ConvRow {
  int ntaps;
  const float* const* a;  // a[t]: source run of destination pixel 0 for tap t
  const float* const* b;  // b[t]: packed weights of tap t, L x block floats
  int64_t L;              // reduction length of every tap
  int64_t a_pix;          // source stride (floats) between consecutive destination pixels
  int64_t npix;           // destination pixels in the row segment
  const float* init;      // `block` floats added to every pixel (bias), or nullptr for zero
  float* dst;             // destination pixel 0, first channel of the block
  int64_t d_pix;          // destination stride (floats) between pixels
  int64_t d_chan;         // destination stride between channels: 1 (NHWC) or H * W (NCHW)
  int nvalid;             // channels of the block that exist (1..block); only these are stored
  int64_t l_block;        // reduction steps per pass over the row (<= 0: all of L at once)
  const int64_t* pix_off;  // if set, pixel x reads a[t] + pix_off[x] instead of a[t] + x * a_pix
  // Floats between consecutive reduction steps of b[t]: 0 means `block` (packed weights); a
  // weight read in place gives its own stride (cpu/conv2d_fast_dgrad_inplace.cpp).
  int64_t b_ld = 0;
  // The first pass starts from dst's contents (a partial sum over an earlier part of the
  // reduction) instead of init.
  bool accumulate = false;
  // With a weight read in place (b_ld set): scratch of ntaps x L x block floats. The first tile
  // of each pass stores the weights it loads there, packed, and the row's other tiles read them
  // from it: a weight row whose stride is a multiple of 2 KiB maps all of a block's pieces to
  // 2 of the L1's 64 sets, so every tile would reload them from L2 or beyond (nullptr: none).
  float* b_copy = nullptr;
};

struct WgradTile {
  int nrows;
  const float* const* g;  // g[i]: grad_output of pixel 0 of row i, first channel of the block
  const float* const* a;  // a[i]: first reduction-side element of pixel 0 of row i
  int64_t npix;           // pixels per row
  int64_t g_pix, a_pix;   // strides (floats) between consecutive pixels of a row
  int m;                  // reduction-side elements (1..max_m)
  int nvalid;             // channels of the block that exist (1..block); only these are read
  float* acc;             // m rows of `block` floats, row stride acc_stride: accumulated into
  int64_t acc_stride;
  bool zero_init;         // acc starts from zero (its contents on entry are not read)
};

// Depthwise (one input channel per group, multiplier 1), NHWC, one destination row segment x
// `nvalid` (<= block) channels: dst[x][c] = init[c] + sum_t a[t][x * a_pix + c] * b[t][c].
// Forward: a = padded input, b[t] = weight of tap t transposed to [tap][channel].
struct DepthwiseRow {
  int ntaps;
  const float* const* a;
  const float* const* b;
  int64_t a_pix;
  int64_t npix;
  const float* init;  // nullptr for zero
  float* dst;
  int64_t d_pix, d_chan;
  int nvalid;
};

// NCHW, vectorized over pixels: one destination row segment of `npix` adjacent pixels x
// `nvalid` (<= max_m) destination channels whose planes are d_chan apart,
// dst[m * d_chan + x] = init[m] + sum over taps t, l < L of w[t][l * w_l + m] * a[t][l * a_l + x].
// The source runs are adjacent pixels too (NCHW rows, stride-1 columns or one stride phase),
// so each reduction step loads two vectors of pixels and broadcasts one weight per channel.
// Forward: source = input planes (l = input channel), w[t] = weights of tap t as [c][m].
// Input gradient (unit column stride): source = grad_output planes (l = output channel).
struct PixRow {
  int ntaps;
  const float* const* a;  // a[t]: source of pixel 0, reduction step 0, for tap t
  const float* const* w;  // w[t]: weights of tap t, channel m of step l at l * w_l + m
  int64_t L;              // reduction length of every tap
  int64_t a_l, w_l;       // strides (floats) between consecutive reduction steps
  int64_t npix;           // destination pixels (adjacent in source and destination)
  const float* init;      // nvalid floats added per channel (bias), or nullptr for zero
  float* dst;             // destination channel 0, pixel 0
  int64_t d_chan;         // destination stride between channels
  int nvalid;             // channels of the tile (1..max_m)
  int64_t l_block;        // reduction steps per pass over the row (<= 0: all of L at once)
};

struct Kernels {
  const char* isa;
  int block;  // destination channels per packed block (two vectors)
  int max_m;  // pixels per register tile
  void (*conv_row)(const ConvRow&);
  void (*wgrad_tile)(const WgradTile&);
  void (*depthwise_row)(const DepthwiseRow&);
  void (*pix_row)(const PixRow&);  // tiles of max_m channels x two vectors of pixels
  // dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols (8 x 8 register
  // transposes; NCHW <-> NHWC staging)
  void (*transpose)(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                    int64_t rows, int64_t cols);
};

// The AVX2 transpose, shared by both kernel sets (AVX-512F includes AVX2).
void transpose_avx2(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                    int64_t rows, int64_t cols);

// The kernels compiled for each instruction set; callable only where the CPU supports it.
const Kernels& avx2_kernels();
const Kernels& avx512_kernels();

}  // namespace fastconv::cpu::fastk
