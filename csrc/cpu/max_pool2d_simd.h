// Hot inner loops of the CPU max-pool kernels, as plain functions over raw arrays. Each is
// compiled three times through GCC's target_clones (AVX-512, AVX2, portable) and the variant
// for the running CPU is picked at load time, so one binary vectorizes as wide as it can.
#pragma once
#include <cstdint>

namespace fastconv {
namespace cpu {

// Horizontal geometry of one output row: Q outputs, kernel kw, stride sw, padding pw,
// dilation dw over an input row of W elements.
struct PoolRow {
  int64_t W, Q, kw, sw, pw, dw;
};

// All kernel taps of one input row for one output row (NCHW): for each tap k and each output
// ow whose tap lands inside the row, candidate row[ow*sw + k*dw - pw] with plane index
// row_index + ow*sw + k*dw - pw replaces (best[ow], best_idx[ow]) under PyTorch's rule
// (greater, or NaN). Taps in the padding are skipped (padding acts as -inf).
void pool_row_f32(const float* row, const PoolRow& g, int32_t row_index, float* best,
                  int32_t* best_idx);
void pool_row_f64(const double* row, const PoolRow& g, int64_t row_index, double* best,
                  int64_t* best_idx);

// One tap over n channels (channels_last): candidate v[c] with plane index `index`.
void pool_tap_f32(const float* v, int64_t n, int32_t index, float* best, int32_t* best_idx);
void pool_tap_f64(const double* v, int64_t n, int64_t index, double* best, int64_t* best_idx);

// One NCHW float output row with AVX-512 (max_pool2d_avx512.cpp): window rows
// row_start, row_start + row_step, ... < row_end of `plane`; first_col[ow] is the first
// in-range column of output ow's window. Writes Q values to out and Q int64 indices to ind.
// Callable only where has_avx512() is true.
void pool_output_row_avx512(const float* plane, const PoolRow& g, int64_t row_start,
                            int64_t row_end, int64_t row_step, const int32_t* first_col,
                            float* out, int64_t* ind);
// One channels_last float output pixel with AVX-512: window rows/cols as above over an image
// of W columns and C interleaved channels; writes C values and C int64 indices.
void pool_output_pixel_avx512(const float* image, int64_t W, int64_t C, int64_t row_start,
                              int64_t row_end, int64_t row_step, int64_t col_start,
                              int64_t col_end, int64_t col_step, float* out, int64_t* ind);
bool has_avx512();

// Widening store of indices: dst[i] = src[i].
void widen_i32_i64(const int32_t* src, int64_t n, int64_t* dst);

}  // namespace cpu
}  // namespace fastconv
