// BatchNorm algebra, written once for every backend (CPU, CUDA, emulated CUDA).
//
// Notation per channel c over M = N*H*W values: mean, var (biased, M2 / M), invstd =
// 1 / sqrt(var + eps), weight w (1 without affine), bias b (0 without affine).
//   forward    pre = x * alpha + beta (+ residual),  alpha = w * invstd, beta = b - mean * alpha
//              y   = relu ? max(pre, 0) : pre        (NaN propagates, as torch.relu)
//   backward   g   = relu ? (pre > 0 ? dy : 0) : dy  (the ReLU mask, recomputed from x)
//              sum_dy = sum g,  sum_dy_xmu = sum g * (x - mean)
//              grad_weight = sum_dy_xmu * invstd,  grad_bias = sum_dy,  grad_residual = g
//              grad_input (training) = alpha * (g - sum_dy / M - (x - mean) * invstd^2 *
//                                      sum_dy_xmu / M) = g * alpha + x * k_x + k_0
//              grad_input (eval: statistics are constants) = g * alpha
// The forward form x * alpha + beta is PyTorch's own (batch_norm_cpu_transform_input).
#pragma once
#include <cmath>

#include "common/macros.h"

namespace fastconv {

// Mean and M2 (sum of squared deviations) of `count` values. Merged with Chan et al.'s
// parallel formula, which is exact in exact arithmetic for any split of the values, so
// partial results of threads, blocks or processes with different sizes combine into the
// statistics of the whole.
template <typename T>
struct Welford {
  T count;
  T mean;
  T m2;
};

template <typename T>
FC_HD Welford<T> welford_merge(const Welford<T>& a, const Welford<T>& b) {
  const T n = a.count + b.count;
  if (b.count == T(0)) return a;
  if (a.count == T(0)) return b;
  const T delta = b.mean - a.mean;
  const T fb = b.count / n;
  return {n, a.mean + delta * fb, a.m2 + b.m2 + delta * delta * a.count * fb};
}

// Statistics of a chunk from sums of the values shifted by a pivot taken from the chunk:
// s1 = sum(x - pivot), s2 = sum((x - pivot)^2). With the pivot inside the data, the shift
// removes the large common offset (mean 1e4, std 1e-2 keeps full precision) while the sums
// still read x once and vectorize.
template <typename T>
FC_HD Welford<T> welford_from_shifted(T count, T pivot, T s1, T s2) {
  if (count == T(0)) return {T(0), T(0), T(0)};
  const T d = s1 / count;
  const T m2 = s2 - s1 * d;
  return {count, pivot + d, m2 > T(0) ? m2 : T(0)};
}

template <typename T>
FC_HD T bn_invstd(T var, double eps) {
  return T(1) / std::sqrt(var + T(eps));
}

// Per-channel coefficients of the forward: pre = x * alpha + beta.
template <typename T>
struct BnAffine {
  T alpha;
  T beta;
};

template <typename T>
FC_HD BnAffine<T> bn_affine(T mean, T var, T weight, T bias, double eps) {
  const T alpha = weight * bn_invstd(var, eps);
  return {alpha, bias - mean * alpha};
}

template <typename T>
FC_HD T bn_relu(T v) {
  return v < T(0) ? T(0) : v;  // NaN < 0 is false: NaN passes through, as torch.relu
}

// The ReLU-masked output gradient: dy where the forward's pre-activation was positive.
template <typename T>
FC_HD T bn_masked_grad(T dy, T pre, bool relu) {
  return (!relu || pre > T(0)) ? dy : T(0);
}

// grad_input = g * alpha + x * k_x + k_0; `training` means the statistics came from this
// batch (their gradient flows back into x), otherwise they are constants (running stats).
template <typename T>
struct BnBackwardCoef {
  T alpha;
  T k_x;
  T k_0;
};

template <typename T>
FC_HD BnBackwardCoef<T> bn_backward_coef(T mean, T var, T weight, double eps, bool training,
                                         T sum_dy, T sum_dy_xmu, T count) {
  const T invstd = bn_invstd(var, eps);
  const T alpha = weight * invstd;
  if (!training || count == T(0)) return {alpha, T(0), T(0)};
  const T mean_dy = sum_dy / count;
  const T k_x = -alpha * invstd * invstd * (sum_dy_xmu / count);
  return {alpha, k_x, -k_x * mean - alpha * mean_dy};
}

// running <- (1 - momentum) * running + momentum * batch, with the unbiased variance
// M2 / (count - 1) = var * count / (count - 1) for running_var (PyTorch's rule).
FC_HD double bn_running_update(double running, double batch, double momentum) {
  return (1.0 - momentum) * running + momentum * batch;
}

FC_HD double bn_unbiased_var(double var, double count) {
  return count > 1.0 ? var * count / (count - 1.0) : var;
}

}  // namespace fastconv
