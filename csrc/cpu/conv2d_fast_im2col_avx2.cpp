// The AVX2 gather of the implicit-GEMM forward's NCHW panels (cpu/conv2d_fast_im2col.h):
// micro-panels of im2col read straight from the input, padding as zeros, 8 lanes at a time.
#include <immintrin.h>

#include <algorithm>

#include "cpu/conv2d_fast_im2col.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace fastconv::cpu::im2col {
namespace {

// Lanes [a, b) set (0 <= a <= b <= 8).
inline __m256i lanes_between(int64_t a, int64_t b) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(a)), iota),
                             _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(b)), iota));
}

}  // namespace

// NCHW: one reduction step is one (tap, channel): nr pixels of one channel plane, 8 at a time.
// Where the 8 pixels lie in one output row, the tap's row and first column are two scalars;
// when the row is inside the image and all 8 columns too (the common case away from borders)
// each channel is one load at column stride 1, two loads and a deinterleave at stride 2.
// Everything else (borders, runs across rows, other strides) takes a masked hardware gather
// over per-pixel plane offsets.
void gather_nchw(const NchwPanel& pp, int nr, int64_t k0, int64_t kc, float* dst) {
  const int64_t C = pp.C, plane = pp.H * pp.W, sw = pp.sw;
  const __m256i minus1 = _mm256_set1_epi32(-1), Hv = _mm256_set1_epi32(static_cast<int>(pp.H));
  const __m256i Wv = _mm256_set1_epi32(static_cast<int>(pp.W));
  const __m256i first7 = lanes_between(0, 7);
  bool one_row[4];  // per 8 pixels (nr <= 32 here: the callers' nr is 16)
  for (int h = 0; h < nr; h += 8) {
    bool same = pp.ih0[h] != kNoPixel;
    for (int j = 1; j < 8; ++j) same = same && pp.ih0[h + j] == pp.ih0[h] && pp.iw0[h + j] == pp.iw0[h] + j * sw;
    one_row[h / 8] = same;
  }
  // (r, s, c0): the step k0 + done, advanced without divisions (C may be 1: a piece per step)
  int64_t c0 = k0 % C, r = (k0 / C) / pp.S, s = (k0 / C) % pp.S;
  for (int64_t done = 0; done < kc;) {
    const int64_t len = std::min(C - c0, kc - done);
    const float* base = pp.img + c0 * plane;
    for (int h = 0; h < nr; h += 8) {
      float* d = dst + done * nr + h;
      if (one_row[h / 8] && (sw == 1 || sw == 2)) {
        const int64_t ih = pp.ih0[h] + r * pp.dh, iw = pp.iw0[h] + s * pp.dw;
        if (ih >= 0 && ih < pp.H && iw >= 0 && iw + 7 * sw < pp.W) {
          const float* p0 = base + ih * pp.W + iw;
          if (sw == 1) {
            for (int64_t c = 0; c < len; ++c) _mm256_storeu_ps(d + c * nr, _mm256_loadu_ps(p0 + c * plane));
          } else if (ih * pp.W + iw + 16 <= plane) {  // elements 0, 2, ..., 14 (15 is in the plane too)
            for (int64_t c = 0; c < len; ++c) {
              const float* p = p0 + c * plane;
              const __m256 t = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), 0x88);
              _mm256_storeu_ps(d + c * nr, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), 0xD8)));
            }
          } else {  // the plane's last elements: p[15] is not read
            for (int64_t c = 0; c < len; ++c) {
              const float* p = p0 + c * plane;
              const __m256 t = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_maskload_ps(p + 8, first7), 0x88);
              _mm256_storeu_ps(d + c * nr, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), 0xD8)));
            }
          }
          continue;
        }
      }
      const __m256i ih = _mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(pp.ih0 + h)),
                                          _mm256_set1_epi32(static_cast<int>(r * pp.dh)));
      const __m256i iw = _mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(pp.iw0 + h)),
                                          _mm256_set1_epi32(static_cast<int>(s * pp.dw)));
      const __m256i valid =
          _mm256_and_si256(_mm256_and_si256(_mm256_cmpgt_epi32(ih, minus1), _mm256_cmpgt_epi32(Hv, ih)),
                           _mm256_and_si256(_mm256_cmpgt_epi32(iw, minus1), _mm256_cmpgt_epi32(Wv, iw)));
      const __m256i off = _mm256_and_si256(_mm256_add_epi32(_mm256_mullo_epi32(ih, Wv), iw), valid);
      const __m256 mask = _mm256_castsi256_ps(valid);
      for (int64_t c = 0; c < len; ++c) {
        _mm256_storeu_ps(d + c * nr, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base + c * plane, off, mask, 4));
      }
    }
    done += len;
    c0 = 0;
    if (++s == pp.S) s = 0, ++r;
  }
}

}  // namespace fastconv::cpu::im2col

#pragma GCC pop_options
