// Schema strings of the fused BatchNorm(+ReLU, + residual add) family, written once: defined in
// the fastconv namespace by schemas/batch_norm.cpp (where each op's contract is documented)
// and in fastconv_simt by simt/batch_norm.cpp (the emulated CUDA kernels, same signatures).
#pragma once

#define FC_SCHEMA_BATCH_NORM_STATS "_batch_norm_stats(Tensor input) -> (Tensor mean, Tensor var)"
#define FC_SCHEMA_BATCH_NORM_FORWARD_TRAIN                                                 \
  "_batch_norm_forward_train(Tensor input, Tensor? weight, Tensor? bias, Tensor? residual, " \
  "float eps, bool relu) -> (Tensor output, Tensor mean, Tensor var)"
#define FC_SCHEMA_BATCH_NORM_UPDATE_STATS                                              \
  "_batch_norm_update_stats(Tensor mean, Tensor var, SymInt count, float momentum, "    \
  "Tensor(a!) running_mean, Tensor(b!) running_var) -> ()"
#define FC_SCHEMA_BATCH_NORM_APPLY                                                      \
  "batch_norm_apply(Tensor input, Tensor mean, Tensor var, Tensor? weight, Tensor? bias, " \
  "Tensor? residual, float eps, bool relu) -> Tensor"
#define FC_SCHEMA_BATCH_NORM_BACKWARD_REDUCE                                               \
  "_batch_norm_backward_reduce(Tensor grad_output, Tensor input, Tensor mean, Tensor var, " \
  "Tensor? weight, Tensor? bias, Tensor? residual, float eps, bool relu) "                 \
  "-> (Tensor sum_dy, Tensor sum_dy_xmu, Tensor grad_weight)"
#define FC_SCHEMA_BATCH_NORM_BACKWARD_APPLY                                              \
  "_batch_norm_backward_apply(Tensor grad_output, Tensor input, Tensor mean, Tensor var, " \
  "Tensor? weight, Tensor? bias, Tensor? residual, Tensor? sum_dy, Tensor? sum_dy_xmu, "   \
  "SymInt count, float eps, bool relu) -> Tensor"
#define FC_SCHEMA_BATCH_NORM_ADD_RELU_BACKWARD_APPLY                                        \
  "_batch_norm_add_relu_backward_apply(Tensor grad_output, Tensor input, Tensor mean, "    \
  "Tensor var, Tensor? weight, Tensor? bias, Tensor residual, Tensor? sum_dy, "            \
  "Tensor? sum_dy_xmu, SymInt count, float eps) -> (Tensor grad_input, Tensor grad_residual)"

// Every schema of the family, for the two TORCH_LIBRARY_FRAGMENTs.
#define FC_DEFINE_BATCH_NORM_SCHEMAS(m)                 \
  do {                                                  \
    m.def(FC_SCHEMA_BATCH_NORM_STATS);                  \
    m.def(FC_SCHEMA_BATCH_NORM_FORWARD_TRAIN);          \
    m.def(FC_SCHEMA_BATCH_NORM_UPDATE_STATS);           \
    m.def(FC_SCHEMA_BATCH_NORM_APPLY);                  \
    m.def(FC_SCHEMA_BATCH_NORM_BACKWARD_REDUCE);        \
    m.def(FC_SCHEMA_BATCH_NORM_BACKWARD_APPLY);         \
    m.def(FC_SCHEMA_BATCH_NORM_ADD_RELU_BACKWARD_APPLY); \
  } while (0)
