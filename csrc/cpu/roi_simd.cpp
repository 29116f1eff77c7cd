// See roi_simd.h: the float channel loops, one clone per instruction set. No FMA contraction
// (AVX2 without -mfma): products and sums round as in torchvision's own kernels.
#include "cpu/roi_simd.h"

#define FC_ROI_CLONES __attribute__((target_clones("avx2", "default")))

namespace fastconv {
namespace cpu {

FC_ROI_CLONES void roi_bilinear_accumulate_f32(float* acc, const float* a, const float* b,
                                               const float* d, const float* e, float w1,
                                               float w2, float w3, float w4, int64_t n) {
  roi_bilinear_accumulate(acc, a, b, d, e, w1, w2, w3, w4, n);
}

FC_ROI_CLONES void roi_scatter_f32(float* dst, const float* g, float w, int64_t n) {
  roi_scatter(dst, g, w, n);
}

FC_ROI_CLONES void roi_max_update_f32(float* best, int32_t* best_idx, const float* v,
                                      int32_t index, int64_t n) {
  roi_max_update(best, best_idx, v, index, n);
}

}  // namespace cpu
}  // namespace fastconv
