// Blocked matrix transposes for changing a feature map's layout on the CPU: NCHW -> NHWC is,
// per image, the (C, H*W) matrix of channel planes transposed into (H*W, C); NHWC -> NCHW the
// reverse. torch's own copy between the layouts ran at ~6.7 GB/s here (19 ms for a 62 MB map,
// 47 ms into a fresh tensor, the page faults included) against a copy bandwidth of 15-20 GB/s.
// Here float goes through 8x8 blocks transposed in registers (layout_transpose.cpp: AVX2 and
// portable clones; 16x16 blocks on AVX-512), in panels of 16 rows x 512 columns: every destination line (16 floats) is
// written whole by one panel, and the panel's 16 source runs of 2 KB stream through L1. Other
// types go through the same panels with scalar moves. Every element is moved once, unchanged
// (or converted by static_cast where the types differ): results do not depend on the thread
// count. Measured at 1 thread (CPU time, under load): a 62 MB NCHW map to NHWC in 17-18 ms
// against 30 ms for torch's copy_ and 9.5 ms for memcpy; panels of all rows x 32 columns took
// 19-20 ms, and up to 2x that where the 32 destination rows of a panel filled L1 (C = 256).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <type_traits>

#include "cpu/buffer_cache.h"

namespace fastconv::cpu {

// Panels of 16 rows x 512 columns, each walked in blocks of 8 rows x 32 columns (two cache
// lines of every source row).
constexpr int64_t kTransposePanelRows = 16;
constexpr int64_t kTransposePanelColumns = 512;
constexpr int64_t kTransposeColumns = 32;

// dst[j * dst_ld + i] = src[i * src_ld + j] for i < rows, j < cols (one thread), for 4-byte
// elements moved as bits (float, or int32 passed through float pointers).
void transpose_32bit(const float* src, int64_t src_ld, float* dst, int64_t dst_ld, int64_t rows,
                     int64_t cols);

// transpose_32bit for a destination that the caller will not read soon (an output in memory,
// not a buffer in cache): whole 64-byte lines of every destination row go out with
// non-temporal stores, which write memory without first reading the lines (half the traffic
// of ordinary stores for a map larger than the caches). Same results as transpose_32bit.
// nonzero: null, or one flag per source row, clear where the caller knows the row holds only
// zeros; the destination lines of 16 such rows are streamed zeros without reading the source
// (ROI Align's gradient bands, about half of which no box reaches on a P2 map).
void transpose_32bit_streaming(const float* src, int64_t src_ld, float* dst, int64_t dst_ld,
                               int64_t rows, int64_t cols, const uint8_t* nonzero = nullptr);

// transpose_32bit into a dense destination (dst_ld == rows, e.g. one box's (C, bins) block of
// an NCHW ROI output) that the caller will not read soon: 16 columns at a time are transposed
// into a small buffer in L1 and go out as whole 64-byte lines with non-temporal stores (16
// columns of a dense destination are rows * 64 bytes, line-aligned when dst is). Transposing
// straight into ROI Pool's NCHW output (rows 196 bytes apart, so every line was read before it
// was written) took more time than the pooling itself. Same results as transpose_32bit.
void transpose_32bit_dense_streaming(const float* src, int64_t src_ld, float* dst, int64_t rows,
                                     int64_t cols);

// The same for any pair of element types (one thread): float -> float and int32 -> int32 as
// above, others in the same blocked order with scalar moves.
template <typename S, typename D>
void transpose(const S* src, int64_t src_ld, D* dst, int64_t dst_ld, int64_t rows,
               int64_t cols) {
  if constexpr (std::is_same_v<S, D> &&
                (std::is_same_v<S, float> || std::is_same_v<S, int32_t>)) {
    transpose_32bit(reinterpret_cast<const float*>(src), src_ld, reinterpret_cast<float*>(dst),
                    dst_ld, rows, cols);
  } else {
    for (int64_t J = 0; J < cols; J += kTransposePanelColumns) {
      const int64_t j1 = std::min(cols, J + kTransposePanelColumns);
      for (int64_t I = 0; I < rows; I += kTransposePanelRows)
        for (int64_t j = J; j < j1; ++j)
          for (int64_t i = I; i < std::min(rows, I + kTransposePanelRows); ++i)
            dst[j * dst_ld + i] = static_cast<D>(src[i * src_ld + j]);
    }
  }
}

// transpose() into a destination in memory (see transpose_32bit_streaming): float -> float
// streams, other types go through transpose().
template <typename S, typename D>
void transpose_streaming(const S* src, int64_t src_ld, D* dst, int64_t dst_ld, int64_t rows,
                         int64_t cols, const uint8_t* nonzero = nullptr) {
  if constexpr (std::is_same_v<S, float> && std::is_same_v<D, float>) {
    transpose_32bit_streaming(src, src_ld, dst, dst_ld, rows, cols, nonzero);
  } else {
    transpose(src, src_ld, dst, dst_ld, rows, cols);
  }
}

// transpose() into a dense destination in memory (dst_ld == rows; see
// transpose_32bit_dense_streaming): float and int32 stream, other types go through transpose().
template <typename T>
void transpose_dense_streaming(const T* src, int64_t src_ld, T* dst, int64_t rows,
                               int64_t cols) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, int32_t>) {
    transpose_32bit_dense_streaming(reinterpret_cast<const float*>(src), src_ld,
                                    reinterpret_cast<float*>(dst), rows, cols);
  } else {
    transpose(src, src_ld, dst, rows, rows, cols);
  }
}

// n matrices (rows, cols), the b-th at src + b * src_batch, each transposed into
// dst + b * dst_batch (leading dimensions cols and rows), split over threads by panels of
// columns.
template <typename T>
void transpose_batch(const T* src, int64_t src_batch, T* dst, int64_t dst_batch, int64_t n,
                     int64_t rows, int64_t cols) {
  const int64_t panels = (cols + kTransposePanelColumns - 1) / kTransposePanelColumns;
  // at least ~256 KB per task so the split costs nothing on small maps
  const int64_t grain =
      std::max<int64_t>(1, 65536 / std::max<int64_t>(rows * kTransposePanelColumns, 1));
  at::parallel_for(0, n * panels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end;) {
      const int64_t b = u / panels, first = u % panels;
      const int64_t last = std::min(panels, first + (end - u));  // this image's panels here
      const int64_t j0 = first * kTransposePanelColumns;
      const int64_t j1 = std::min(cols, last * kTransposePanelColumns);
      transpose(src + b * src_batch + j0, cols, dst + b * dst_batch + j0 * rows, rows, rows,
                j1 - j0);
      u += last - first;
    }
  });
}

// x in channels_last, the same tensor when it already is; an NCHW-contiguous 4-D x is
// transposed here into a buffer from the block cache (cpu/buffer_cache.h), anything else goes
// through torch's copy.
inline at::Tensor to_channels_last(const at::Tensor& x) {
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) return x;
  if (x.dim() != 4 || !x.is_contiguous()) return x.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  at::Tensor y =
      empty_cached(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "channels_last", [&] {
    transpose_batch(x.const_data_ptr<scalar_t>(), C * HW, y.mutable_data_ptr<scalar_t>(), C * HW,
                    N, C, HW);
  });
  return y;
}

}  // namespace fastconv::cpu
