// CPU kernels of the BatchNorm family (contracts: schemas/batch_norm.cpp, formulas:
// common/batch_norm.h, passes and schedules: cpu/batch_norm_passes.h, vector loops:
// cpu/batch_norm_simd.*).
//
// Minimal memory traffic, each pass reading every tensor once:
//   training forward  stats (read x) + apply (read x [, residual], write y)
//   inference         apply
//   backward          reduce (read dy, x [, residual]) + apply (read dy, x [, residual],
//                     write dx [, grad_residual])
// NCHW input with enough channels runs the two passes of the training forward and of the
// backward channel by channel, so the second pass reads from cache (batch_norm_passes.h).
// Otherwise the second pass walks backwards, to find in cache what the first read last; outputs
// larger than half the last-level cache are written with non-temporal stores.
// Per-channel vectors (C values) are read and written directly, without ATen ops: a call's
// fixed cost is its allocations and its parallel regions, which matters for small layers.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

#include "checks/batch_norm.h"
#include "cpu/batch_norm_passes.h"
#include "cpu/buffer_cache.h"
#include "schemas/batch_norm.h"

namespace fastconv {
namespace {

using bn_cpu::acc_of;
using bn_cpu::Layout;
using OptTensor = std::optional<at::Tensor>;

#define FC_BN_DISPATCH(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

Layout layout_of(const at::Tensor& x) {
  const int64_t c = x.size(1);
  const int64_t n = x.size(0);
  const int64_t inner = c == 0 || n == 0 ? 1 : x.numel() / (n * c);
  if (x.dim() == 4 && x.suggest_memory_format() == at::MemoryFormat::ChannelsLast) {
    return {n * inner, c, 1};
  }
  return {n, c, inner};
}

bool given(const OptTensor& t) { return t.has_value() && t->defined(); }

// A per-channel vector (any floating dtype, any stride) as C values of type A; `fill` when
// absent (weight 1, bias 0).
template <typename A>
std::vector<A> channel_values(const OptTensor& t, int64_t c, A fill) {
  std::vector<A> v(c, fill);
  if (given(t)) {
    FC_BN_DISPATCH(t->scalar_type(), "fastconv::batch_norm(read vector)", [&] {
      const scalar_t* p = t->const_data_ptr<scalar_t>();
      const int64_t s = t->stride(0);
      for (int64_t i = 0; i < c; ++i) v[i] = static_cast<A>(p[i * s]);
    });
  }
  return v;
}

// C values as a new 1-D tensor of `dtype`.
template <typename A>
at::Tensor channel_tensor(const std::vector<A>& v, const at::Tensor& like, at::ScalarType dtype) {
  at::Tensor t = at::empty({int64_t(v.size())}, like.options().dtype(dtype));
  FC_BN_DISPATCH(dtype, "fastconv::batch_norm(write vector)", [&] {
    scalar_t* p = t.mutable_data_ptr<scalar_t>();
    for (size_t i = 0; i < v.size(); ++i) p[i] = static_cast<scalar_t>(v[i]);
  });
  return t;
}

at::ScalarType dtype_or(const OptTensor& t, at::ScalarType fallback) {
  return given(t) ? t->scalar_type() : fallback;
}

// running <- (1 - momentum) running + momentum batch, in place (any floating dtype and
// stride), in double as common/batch_norm.h writes it; the variance unbiased with count.
template <typename A>
void update_running(const std::vector<A>& mean, const std::vector<A>& var, int64_t count,
                    double momentum, const at::Tensor& running_mean,
                    const at::Tensor& running_var) {
  if (count == 0) return;
  FC_BN_DISPATCH(running_mean.scalar_type(), "fastconv::_batch_norm_update_stats", [&] {
    scalar_t* rm = running_mean.mutable_data_ptr<scalar_t>();
    scalar_t* rv = running_var.mutable_data_ptr<scalar_t>();
    const int64_t sm = running_mean.stride(0), sv = running_var.stride(0);
    for (size_t i = 0; i < mean.size(); ++i) {
      rm[i * sm] = static_cast<scalar_t>(bn_running_update(double(rm[i * sm]), mean[i], momentum));
      rv[i * sv] = static_cast<scalar_t>(bn_running_update(
          double(rv[i * sv]), bn_unbiased_var(double(var[i]), double(count)), momentum));
    }
  });
}

struct Prepared {
  at::Tensor x, residual;  // contiguous in fmt (residual undefined when absent)
  at::MemoryFormat fmt;
  Layout layout;
  // outputs (y, grad_input, grad_residual): activation-sized, written completely, and
  // allocated again at every training step, so from the block cache of cpu/buffer_cache.h
  at::Tensor empty_like_x() const {
    return cpu::empty_cached(x.sizes(), x.options().memory_format(fmt));
  }
};

Prepared prepare(const at::Tensor& input, const OptTensor& residual) {
  const auto fmt = bn_memory_format(input);
  Prepared p{input.contiguous(fmt), at::Tensor(), fmt, {}};
  if (given(residual)) p.residual = residual->contiguous(fmt);
  p.layout = layout_of(p.x);
  return p;
}

template <typename scalar_t>
const scalar_t* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}

// alpha, beta of the forward (pre = x * alpha + beta) from mean, var, weight, bias.
template <typename A>
void affine_coefficients(const std::vector<A>& mean, const std::vector<A>& var,
                         const std::vector<A>& weight, const std::vector<A>& bias, double eps,
                         std::vector<A>& alpha, std::vector<A>& beta) {
  alpha.resize(mean.size());
  beta.resize(mean.size());
  for (size_t c = 0; c < mean.size(); ++c) {
    const BnAffine<A> a = bn_affine<A>(mean[c], var[c], weight[c], bias[c], eps);
    alpha[c] = a.alpha;
    beta[c] = a.beta;
  }
}

// ---- forward ----------------------------------------------------------------------------------
std::tuple<at::Tensor, at::Tensor> stats_cpu(const at::Tensor& input) {
  check_bn_input(input, "_batch_norm_stats");
  const Prepared p = prepare(input, std::nullopt);
  const auto acc = bn_acc_dtype(input.scalar_type());
  std::vector<double> mean(p.layout.c, 0.0), var(p.layout.c, 0.0);
  if (p.x.numel() > 0) {
    FC_BN_DISPATCH(p.x.scalar_type(), "fastconv::_batch_norm_stats", [&] {
      bn_cpu::chunked_stats(p.x.const_data_ptr<scalar_t>(), p.layout,
                            [&](int64_t c, const Welford<double>& w) {
                              mean[c] = w.mean;
                              var[c] = w.count > 0 ? w.m2 / w.count : 0.0;
                            });
    });
  }
  return {channel_tensor(mean, input, acc), channel_tensor(var, input, acc)};
}

// The training forward: statistics, running-buffer update, normalize (+ residual) (+ relu).
template <typename scalar_t>
void forward_train_kernel(const Prepared& p, const at::Tensor& y, const OptTensor& weight,
                          const OptTensor& bias, double eps, bool relu, std::vector<double>& mean_d,
                          std::vector<double>& var_d) {
  using A = acc_of<scalar_t>;
  const Layout& l = p.layout;
  const std::vector<A> w = channel_values<A>(weight, l.c, A(1)), b = channel_values<A>(bias, l.c, A(0));
  const scalar_t* x = p.x.const_data_ptr<scalar_t>();
  const scalar_t* res = ptr_or_null<scalar_t>(p.residual);
  scalar_t* out = y.mutable_data_ptr<scalar_t>();
  // the statistics in A, as the kernels and the returned tensors hold them
  auto finish = [&](int64_t c, const Welford<double>& s) {
    mean_d[c] = double(A(s.mean));
    var_d[c] = double(A(s.count > 0 ? s.m2 / s.count : 0.0));
    return bn_affine<A>(A(mean_d[c]), A(var_d[c]), w[c], b[c], eps);
  };
  std::vector<A> alpha(l.c), beta(l.c);
  if (bn_cpu::channel_fused(l)) {
    const bool stream = bn_cpu::stream_output(l, sizeof(scalar_t));
    const int64_t block = bn_cpu::channel_block(l, sizeof(scalar_t) * (res ? 2 : 1));
    bn_cpu::parallel_items(l.c, l.count(), [&](int64_t first, int64_t last) {
      Welford<double> w[bn_cpu::kMaxBlock];
      for (int64_t c0 = first; c0 < last; c0 += block) {
        const int64_t b = std::min(block, last - c0);
        bn_cpu::block_stats_planar(x, l, c0, b, w);
        for (int64_t j = 0; j < b; ++j) {
          const BnAffine<A> a = finish(c0 + j, w[j]);
          alpha[c0 + j] = a.alpha;
          beta[c0 + j] = a.beta;
        }
        bn_cpu::apply_block(x, res, out, l, c0, b, alpha.data(), beta.data(), relu, stream);
      }
    });
    return;
  }
  bn_cpu::chunked_stats(x, l, [&](int64_t c, const Welford<double>& s) {
    const BnAffine<A> a = finish(c, s);
    alpha[c] = a.alpha;
    beta[c] = a.beta;
  });
  bn_cpu::apply(x, res, out, l, alpha.data(), beta.data(), relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_train_cpu(
    const at::Tensor& input, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, const OptTensor& running_mean, const OptTensor& running_var,
    double momentum, double eps, bool relu) {
  check_bn_forward_train(input, weight, bias, residual, running_mean, running_var, momentum, eps,
                         "_batch_norm_forward_train");
  const Prepared p = prepare(input, residual);
  const auto acc = bn_acc_dtype(input.scalar_type());
  std::vector<double> mean(p.layout.c, 0.0), var(p.layout.c, 0.0);
  at::Tensor y = p.empty_like_x();
  if (p.x.numel() > 0) {
    FC_BN_DISPATCH(p.x.scalar_type(), "fastconv::_batch_norm_forward_train", [&] {
      forward_train_kernel<scalar_t>(p, y, weight, bias, eps, relu, mean, var);
    });
  }
  if (given(running_mean)) {
    update_running(mean, var, p.layout.count(), momentum, *running_mean, *running_var);
  }
  return {y, channel_tensor(mean, input, acc), channel_tensor(var, input, acc)};
}

at::Tensor apply_cpu(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& var,
                     const OptTensor& weight, const OptTensor& bias, const OptTensor& residual,
                     double eps, bool relu) {
  check_bn_apply(input, mean, var, weight, bias, residual, eps, "batch_norm_apply");
  const Prepared p = prepare(input, residual);
  at::Tensor y = p.empty_like_x();
  if (y.numel() == 0) return y;
  FC_BN_DISPATCH(p.x.scalar_type(), "fastconv::batch_norm_apply", [&] {
    using A = acc_of<scalar_t>;
    const int64_t c = p.layout.c;
    std::vector<A> alpha, beta;
    affine_coefficients<A>(channel_values<A>(mean, c, A(0)), channel_values<A>(var, c, A(0)),
                           channel_values<A>(weight, c, A(1)), channel_values<A>(bias, c, A(0)),
                           eps, alpha, beta);
    bn_cpu::apply(p.x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(p.residual),
                  y.mutable_data_ptr<scalar_t>(), p.layout, alpha.data(), beta.data(), relu);
  });
  return y;
}

void update_stats_cpu(const at::Tensor& mean, const at::Tensor& var, c10::SymInt count,
                      double momentum, const at::Tensor& running_mean,
                      const at::Tensor& running_var) {
  check_bn_update_stats(mean, var, count, momentum, running_mean, running_var);
  const int64_t c = mean.size(0);
  update_running(channel_values<double>(mean, c, 0.0), channel_values<double>(var, c, 0.0),
                 count.expect_int(), momentum, running_mean, running_var);
}

// ---- backward ---------------------------------------------------------------------------------
// The coefficients of the backward passes; the apply ones (k_g, k_x, k_0) are filled by
// set_apply_coefficients once the sums are known.
template <typename A>
bn_cpu::BackwardCoefs<A> backward_coefficients(const at::Tensor& mean, const at::Tensor& var,
                                               const OptTensor& weight, const OptTensor& bias,
                                               double eps, int64_t c) {
  bn_cpu::BackwardCoefs<A> k;
  k.mean = channel_values<A>(mean, c, A(0));
  affine_coefficients<A>(k.mean, channel_values<A>(var, c, A(0)),
                         channel_values<A>(weight, c, A(1)), channel_values<A>(bias, c, A(0)),
                         eps, k.alpha, k.beta);
  k.k_g.resize(c);
  k.k_x.resize(c);
  k.k_0.resize(c);
  return k;
}

template <typename A>
void set_apply_coefficients(bn_cpu::BackwardCoefs<A>& k, int64_t c, A var, A weight, double eps,
                            bool training, A sum_dy, A sum_dy_xmu, A count) {
  const BnBackwardCoef<A> b =
      bn_backward_coef<A>(k.mean[c], var, weight, eps, training, sum_dy, sum_dy_xmu, count);
  k.k_g[c] = b.alpha;
  k.k_x[c] = b.k_x;
  k.k_0[c] = b.k_0;
}

struct BackwardTensors {
  Prepared p;
  at::Tensor dy;
};

// The checks (shared with the Meta kernels) and layouts of the backward ops' common arguments.
BackwardTensors prepare_backward(const char* op, const at::Tensor& grad_output,
                                 const at::Tensor& input, const at::Tensor& mean,
                                 const at::Tensor& var, const OptTensor& weight,
                                 const OptTensor& bias, const OptTensor& residual, double eps) {
  check_bn_backward(grad_output, input, mean, var, weight, bias, residual, eps, op);
  Prepared p = prepare(input, residual);
  at::Tensor dy = grad_output.contiguous(p.fmt);
  return {std::move(p), std::move(dy)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_reduce_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, double eps, bool relu) {
  const BackwardTensors t = prepare_backward("_batch_norm_backward_reduce", grad_output, input,
                                             mean, var, weight, bias, residual, eps);
  const int64_t c = t.p.layout.c;
  const auto acc = bn_acc_dtype(input.scalar_type());
  std::vector<double> s_dy(c, 0.0), s_dyx(c, 0.0);
  if (t.p.x.numel() > 0) {
    FC_BN_DISPATCH(t.p.x.scalar_type(), "fastconv::_batch_norm_backward_reduce", [&] {
      const auto k = backward_coefficients<acc_of<scalar_t>>(mean, var, weight, bias, eps, c);
      bn_cpu::chunked_sums(t.dy.const_data_ptr<scalar_t>(), t.p.x.const_data_ptr<scalar_t>(),
                           ptr_or_null<scalar_t>(t.p.residual), t.p.layout, k, relu, s_dy.data(),
                           s_dyx.data());
    });
  }
  const std::vector<double> v = channel_values<double>(var, c, 0.0);
  std::vector<double> gw(c);
  for (int64_t i = 0; i < c; ++i) gw[i] = s_dyx[i] * bn_invstd(v[i], eps);
  return {channel_tensor(s_dy, input, acc), channel_tensor(s_dyx, input, acc),
          channel_tensor(gw, input, dtype_or(weight, acc))};
}

// grad_input (and grad_residual when `grad_residual` is true) from given sums.
std::tuple<at::Tensor, at::Tensor> backward_apply_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, const OptTensor& sum_dy, const OptTensor& sum_dy_xmu,
    const c10::SymInt& count, double eps, bool relu, bool grad_residual, const char* op) {
  const BackwardTensors t =
      prepare_backward(op, grad_output, input, mean, var, weight, bias, residual, eps);
  check_bn_backward_sums(sum_dy, sum_dy_xmu, input, input.sym_size(1), count, op);
  const int64_t c = t.p.layout.c;
  const bool training = given(sum_dy);
  at::Tensor dx = t.p.empty_like_x();
  at::Tensor dres = grad_residual ? t.p.empty_like_x() : at::Tensor();
  if (dx.numel() == 0) return {dx, dres};
  FC_BN_DISPATCH(t.p.x.scalar_type(), "fastconv::_batch_norm_backward_apply", [&] {
    using A = acc_of<scalar_t>;
    auto k = backward_coefficients<A>(mean, var, weight, bias, eps, c);
    const std::vector<A> v = channel_values<A>(var, c, A(0)), w = channel_values<A>(weight, c, A(1));
    const std::vector<A> sd = channel_values<A>(sum_dy, c, A(0));
    const std::vector<A> sx = channel_values<A>(sum_dy_xmu, c, A(0));
    for (int64_t i = 0; i < c; ++i) {
      set_apply_coefficients<A>(k, i, v[i], w[i], eps, training, sd[i], sx[i],
                                A(count.expect_int()));
    }
    bn_cpu::backward_apply(t.dy.const_data_ptr<scalar_t>(), t.p.x.const_data_ptr<scalar_t>(),
                           ptr_or_null<scalar_t>(t.p.residual), dx.mutable_data_ptr<scalar_t>(),
                           grad_residual ? dres.mutable_data_ptr<scalar_t>() : nullptr,
                           t.p.layout, k, relu);
  });
  return {dx, dres};
}

// The whole local backward: sums, then grad_input [and grad_residual], in one call.
template <typename scalar_t>
void backward_kernel(const BackwardTensors& t, const at::Tensor& var, const OptTensor& weight,
                     bn_cpu::BackwardCoefs<acc_of<scalar_t>>& k, double eps, bool relu,
                     bool training, scalar_t* dx, scalar_t* dres, std::vector<double>& s_dy,
                     std::vector<double>& s_dyx) {
  using A = acc_of<scalar_t>;
  const Layout& l = t.p.layout;
  const std::vector<A> v = channel_values<A>(var, l.c, A(0)), w = channel_values<A>(weight, l.c, A(1));
  const scalar_t* dy = t.dy.const_data_ptr<scalar_t>();
  const scalar_t* x = t.p.x.const_data_ptr<scalar_t>();
  const scalar_t* res = ptr_or_null<scalar_t>(t.p.residual);
  // the sums in A, as the returned tensors hold them and the apply pass of the two-op form
  // (reduce, then apply with the returned sums) reads them
  auto coefficients_of = [&](int64_t c) {
    set_apply_coefficients<A>(k, c, v[c], w[c], eps, training, A(s_dy[c]), A(s_dyx[c]),
                              A(l.count()));
  };
  if (bn_cpu::channel_fused(l)) {
    const bool stream = bn_cpu::stream_output(l, sizeof(scalar_t));
    const int64_t block = bn_cpu::channel_block(l, sizeof(scalar_t) * (res ? 3 : 2));
    // blocks of channels backwards: the training forward went forwards, so the x of the
    // channels it touched last may still be in cache
    bn_cpu::parallel_items(l.c, 2 * l.count(), [&](int64_t first, int64_t last) {
      for (int64_t hi = last; hi > first; hi -= block) {
        const int64_t c0 = std::max(first, hi - block), b = hi - c0;
        bn_cpu::block_sums_planar(dy, x, res, l, c0, b, k, relu, &s_dy[c0], &s_dyx[c0]);
        for (int64_t c = c0; c < hi; ++c) coefficients_of(c);
        bn_cpu::backward_apply_block(dy, x, res, dx, dres, l, c0, b, k, relu, stream);
      }
    });
    return;
  }
  bn_cpu::chunked_sums(dy, x, res, l, k, relu, s_dy.data(), s_dyx.data());
  for (int64_t c = 0; c < l.c; ++c) coefficients_of(c);
  bn_cpu::backward_apply(dy, x, res, dx, dres, l, k, relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& residual, double eps, bool relu, bool training, bool grad_residual) {
  const BackwardTensors t = prepare_backward("_batch_norm_backward", grad_output, input, mean,
                                             var, weight, bias, residual, eps);
  const int64_t c = t.p.layout.c;
  const auto acc = bn_acc_dtype(input.scalar_type());
  at::Tensor dx = t.p.empty_like_x();
  at::Tensor dres = grad_residual ? t.p.empty_like_x() : at::empty({0}, input.options());
  std::vector<double> s_dy(c, 0.0), s_dyx(c, 0.0);
  if (dx.numel() > 0) {
    FC_BN_DISPATCH(t.p.x.scalar_type(), "fastconv::_batch_norm_backward", [&] {
      auto k = backward_coefficients<acc_of<scalar_t>>(mean, var, weight, bias, eps, c);
      backward_kernel<scalar_t>(t, var, weight, k, eps, relu, training,
                                dx.mutable_data_ptr<scalar_t>(),
                                grad_residual ? dres.mutable_data_ptr<scalar_t>() : nullptr,
                                s_dy, s_dyx);
    });
  }
  const std::vector<double> v = channel_values<double>(var, c, 0.0);
  std::vector<double> gw(c), gb(c);
  for (int64_t i = 0; i < c; ++i) {
    gw[i] = s_dyx[i] * bn_invstd(v[i], eps);  // as _batch_norm_backward_reduce
    gb[i] = s_dy[i];
  }
  return {dx, channel_tensor(gw, input, dtype_or(weight, acc)),
          channel_tensor(gb, input, dtype_or(bias, acc)), dres};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CPU, m) { FC_IMPL_BATCH_NORM_KERNELS(m, cpu); }

}  // namespace fastconv
