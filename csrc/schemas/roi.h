// Schema strings of the ROI family, written once: defined in the fastconv namespace by
// schemas/roi.cpp (where each op's contract is documented) and in fastconv_simt by
// simt/roi_align.cpp and simt/roi_pool.cpp (the emulated CUDA kernels, same signatures).
#pragma once

#define FC_SCHEMA_ROI_ALIGN                                                                   \
  "roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "            \
  "int pooled_width, int sampling_ratio, bool aligned) -> Tensor"
#define FC_SCHEMA_ROI_ALIGN_BACKWARD                                                          \
  "_roi_align_backward(Tensor grad_output, Tensor rois, float spatial_scale, "               \
  "int pooled_height, int pooled_width, int sampling_ratio, bool aligned, "                  \
  "SymInt[] input_size, bool channels_last) -> Tensor"
#define FC_SCHEMA_ROI_POOL                                                                    \
  "roi_pool(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "             \
  "int pooled_width) -> (Tensor, Tensor)"
#define FC_SCHEMA_ROI_POOL_BACKWARD                                                           \
  "_roi_pool_backward(Tensor grad_output, Tensor rois, Tensor argmax, float spatial_scale, " \
  "int pooled_height, int pooled_width, SymInt[] input_size, bool channels_last) -> Tensor"
