// Schemas and contracts of the ROI family; kernels in cpu/, cuda/, meta/ and simt/
// roi_align.cpp / roi_pool.cpp, math in common/roi.h, autograd in fastconv/ops/roi.py.
#include <torch/library.h>

#include "schemas/roi.h"

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  // roi_align: torchvision.ops.roi_align on a 4-D (N, C, H, W) floating-point feature map.
  // rois (K, 5) of the input's dtype and device holds (batch index, x1, y1, x2, y2) per box in
  // image pixels; spatial_scale >= 0 maps them onto the map; pooled_height/width >= 1.
  // Returns (K, C, pooled_height, pooled_width), each bin the average of bilinear samples
  // (rules in common/roi.h: torchvision's, including `aligned` and adaptive sampling for
  // sampling_ratio <= 0), in the input's memory format; fp16/bf16 accumulate in fp32.
  // Data checks: a batch index that is not an integer in [0, N) or a non-finite coordinate
  // is a RuntimeError on every real device (on CUDA found by a kernel and read back, one
  // synchronization per call). Fake/Meta tensors have no data: they check shapes, dtypes and
  // arguments only.
  m.def(FC_SCHEMA_ROI_ALIGN);
  // _roi_align_backward: gradient of roi_align with respect to its input. grad_output
  // (K, C, pooled_height, pooled_width); the other arguments are the forward's, input_size its
  // input's shape and channels_last its memory format (the gradient's). Deterministic on every
  // backend: the CPU scatters per (image, channel block) with no two threads sharing an
  // element; CUDA gathers, per input element, over the boxes of its image in box order (no
  // atomics). Not differentiable again.
  m.def(FC_SCHEMA_ROI_ALIGN_BACKWARD);
  // roi_pool: torchvision.ops.roi_pool; input and rois as for roi_align. Returns (output,
  // argmax): output (K, C, pooled_height, pooled_width) the maximum over each bin (0 for an
  // empty bin), argmax int32 the flat h * W + w of that maximum in its (n, c) plane (-1 for an
  // empty bin or one whose values are all NaN or below -FLT_MAX), both in the input's memory
  // format.
  m.def(FC_SCHEMA_ROI_POOL);
  // _roi_pool_backward: gradient of roi_pool: grad_input[n, c, argmax] += grad_output for every
  // bin with argmax >= 0, in box order (deterministic; CUDA gathers over the bins of each input
  // element's image). On the CPU an argmax outside [-1, H*W) is an IndexError; the CUDA gather
  // only looks for each element inside the bins that cover it, so an argmax outside its own bin
  // (impossible for one from the forward) contributes nothing there. grad_output in either
  // memory format. Not differentiable again.
  m.def(FC_SCHEMA_ROI_POOL_BACKWARD);
}
