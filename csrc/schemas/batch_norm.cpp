// Schemas and contracts of the fused BatchNorm(+ReLU, + residual add) family; kernels in
// cpu/batch_norm*.cpp, cuda/batch_norm.cu, meta/batch_norm.cpp and simt/batch_norm.cpp, formulas
// in common/batch_norm.h, autograd in fastconv/ops/batch_norm.py.
//
// Shared conventions. input: (N, C) or (N, C, *) floating point (float32, float64, float16,
// bfloat16); channel dimension 1; the per-channel vectors mean, var, weight, bias (1-D of size
// C) may be of the input's dtype or of its compute dtype (float32 for float16/bfloat16 input,
// else the input's). Statistics are computed and returned in the compute dtype. var is always
// the biased batch variance (M2 / count) or the running variance; invstd = 1 / sqrt(var + eps)
// is derived inside every kernel with one formula, so the forward and the backward recompute
// the same ReLU mask. weight and bias default to 1 and 0. residual, grad_output: the input's
// shape and dtype. Outputs have the input's shape, dtype and memory format
// (suggest_memory_format: channels_last stays channels_last). Reductions are deterministic
// (fixed split and merge order, no atomics).
#include <torch/library.h>

#include "schemas/batch_norm.h"

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  // _batch_norm_stats: per-channel mean and biased variance of the input over every dimension
  // but 1, from one pass over the input (chunked shifted sums merged with Chan's parallel
  // formula, common/batch_norm.h). count = numel / C values; count 0 gives mean 0, var 0.
  m.def(FC_SCHEMA_BATCH_NORM_STATS);
  // _batch_norm_forward_train: training forward of a local BatchNorm: (output, mean, var) with
  // mean/var the batch statistics above and output = [relu](bn(input) [+ residual]) normalized
  // with them. A ValueError when a channel has exactly one value (torch's rule). With
  // running_mean and running_var (both or neither), also updates them in place exactly as
  // _batch_norm_update_stats below (momentum, count = numel / C), so that one op call is the
  // whole training forward.
  m.def(FC_SCHEMA_BATCH_NORM_FORWARD_TRAIN);
  // _batch_norm_update_stats: running_mean <- (1 - momentum) running_mean + momentum mean,
  // running_var <- (1 - momentum) running_var + momentum var * count / (count - 1) (unbiased),
  // in place (both mutated; float32 or float64, or the input's dtype). count: values per channel
  // that produced mean/var (count 0 leaves both unchanged, count 1 uses var as is).
  m.def(FC_SCHEMA_BATCH_NORM_UPDATE_STATS);
  // batch_norm_apply: output = [relu](bn(input) [+ residual]) with the given statistics: the
  // inference pass (running statistics) and the normalize pass of synchronized BatchNorm.
  m.def(FC_SCHEMA_BATCH_NORM_APPLY);
  // _batch_norm_backward_reduce: per channel sum_dy = sum g and sum_dy_xmu = sum g (x - mean)
  // with g the ReLU-masked grad_output (the mask recomputed from input, mean, var, weight,
  // bias, residual; no mask without relu), and grad_weight = sum_dy_xmu * invstd (weight's
  // dtype, or the compute dtype without weight). One pass over grad_output and input.
  m.def(FC_SCHEMA_BATCH_NORM_BACKWARD_REDUCE);
  // _batch_norm_backward: the whole backward of a local BatchNorm in one op: the reduce above
  // and the apply below with count = numel / C, returning (grad_input, grad_weight, grad_bias,
  // grad_residual). training: the statistics are the batch's (their gradient flows into x),
  // else constants. grad_weight = sum_dy_xmu * invstd in weight's dtype, grad_bias = sum_dy in
  // bias's dtype (the compute dtype for an absent vector); grad_residual = g (the masked
  // grad_output) when grad_residual is true, else an empty tensor of shape [0].
  m.def(FC_SCHEMA_BATCH_NORM_BACKWARD);
  // _batch_norm_backward_apply: grad_input. With sum_dy and sum_dy_xmu (from the reduce above,
  // summed over `count` values per channel, all processes for synchronized BatchNorm) the
  // statistics are the batch's and their gradient is included; without them (both None) they
  // are constants (eval mode): grad_input = g * weight * invstd.
  m.def(FC_SCHEMA_BATCH_NORM_BACKWARD_APPLY);
  // _batch_norm_add_relu_backward_apply: as above for relu(bn(input) + residual), also
  // returning grad_residual = g (the masked grad_output) from the same pass.
  m.def(FC_SCHEMA_BATCH_NORM_ADD_RELU_BACKWARD_APPLY);
}
