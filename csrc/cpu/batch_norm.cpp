// CPU kernels of the BatchNorm family (contracts: schemas/batch_norm.cpp, formulas:
// common/batch_norm.h, hot loops: cpu/batch_norm_simd.*).
//
// Every tensor of a call is made contiguous in the input's memory format and seen as
// (outer, C, inner): NCHW is (N, C, H*W) and each (n, c) plane is a contiguous run of one
// channel ("planar"); channels_last and (N, C) input are (N*H*W, C, 1), rows of C interleaved
// channels ("rows"). Minimal memory traffic, each pass reading every tensor once:
//   training forward  stats (read x) + apply (read x [, residual], write y)
//   inference         apply
//   backward          reduce (read dy, x [, residual]) + apply (read dy, x [, residual],
//                     write dx [, grad_residual])
// Reductions split the work into fixed chunks independent of the thread count, compute each
// chunk's statistics or sums in vector lanes (float for float/half/bf16 input, double for
// double), and merge the chunks per channel in a fixed order in double: deterministic, and
// accurate (shifted sums per chunk, Chan's merge across chunks).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "checks/batch_norm.h"
#include "common/batch_norm.h"
#include "cpu/batch_norm_simd.h"

namespace fastconv {
namespace {

constexpr int64_t kRun = 4096;      // values per planar chunk (fp32 lane sums stay accurate)
constexpr int64_t kRows = 64;       // rows per interleaved chunk
constexpr int64_t kGrain = 32768;   // values per parallel task, at least

template <typename scalar_t>
using acc_of = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

struct Layout {
  int64_t outer, c, inner;
  bool planar() const { return inner > 1; }
  int64_t count() const { return outer * inner; }  // values per channel
};

Layout layout_of(const at::Tensor& x) {
  const int64_t c = x.size(1);
  const int64_t n = x.size(0);
  const int64_t inner = c == 0 || n == 0 ? 1 : x.numel() / (n * c);
  if (x.dim() == 4 && x.suggest_memory_format() == at::MemoryFormat::ChannelsLast) {
    return {n * inner, c, 1};
  }
  return {n, c, inner};
}

// Every per-channel vector as a contiguous array of the compute type (weight 1 and bias 0
// when absent).
template <typename A>
std::vector<A> channel_values(const std::optional<at::Tensor>& t, int64_t c, A fill) {
  std::vector<A> v(c, fill);
  if (t.has_value() && t->defined()) {
    const at::Tensor d = t->to(c10::CppTypeToScalarType<A>::value).contiguous();
    std::copy(d.const_data_ptr<A>(), d.const_data_ptr<A>() + c, v.begin());
  }
  return v;
}

// Chunks of a layout: planar runs of <= kRun values of one plane, or blocks of <= kRows rows.
struct Chunks {
  int64_t per_plane;  // planar: chunks per (outer, c) plane
  int64_t total;      // number of partial results per channel
};

Chunks chunks_of(const Layout& l) {
  if (l.planar()) {
    const int64_t per_plane = (l.inner + kRun - 1) / kRun;
    return {per_plane, l.outer * per_plane};
  }
  return {0, (l.outer + kRows - 1) / kRows};
}

// Runs body(channel, chunk_index, first value offset, length) over every planar chunk in
// parallel; chunk_index in [0, chunks.total) orders the partials of one channel.
template <typename F>
void for_each_planar_chunk(const Layout& l, const Chunks& ch, F body) {
  const int64_t units = l.outer * l.c * ch.per_plane;
  const int64_t grain = std::max<int64_t>(1, kGrain / std::min(l.inner, kRun));
  at::parallel_for(0, units, grain, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t k = u % ch.per_plane, plane = u / ch.per_plane;
      const int64_t o = plane / l.c, c = plane % l.c;
      const int64_t start = k * kRun;
      body(c, o * ch.per_plane + k, plane * l.inner + start, std::min(kRun, l.inner - start));
    }
  });
}

// Runs body(chunk, first row, rows) over blocks of kRows rows in parallel.
template <typename F>
void for_each_row_chunk(const Layout& l, const Chunks& ch, F body) {
  const int64_t grain = std::max<int64_t>(1, kGrain / (kRows * std::max<int64_t>(l.c, 1)));
  at::parallel_for(0, ch.total, grain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t r0 = k * kRows;
      body(k, r0, std::min(kRows, l.outer - r0));
    }
  });
}

// ---- statistics ------------------------------------------------------------------------------
// mean and biased var per channel into mean_out / var_out (compute dtype, size C).
template <typename scalar_t>
void compute_stats(const scalar_t* x, const Layout& l, at::Tensor& mean_out, at::Tensor& var_out) {
  using A = acc_of<scalar_t>;
  const Chunks ch = chunks_of(l);
  std::vector<Welford<double>> part(l.c * ch.total);  // part[c * total + chunk]
  if (l.planar()) {
    for_each_planar_chunk(l, ch, [&](int64_t c, int64_t k, int64_t off, int64_t n) {
      const A pivot = static_cast<A>(x[off]);
      A s1 = 0, s2 = 0;
      cpu::bn_run_sums(x + off, n, pivot, &s1, &s2);
      part[c * ch.total + k] = welford_from_shifted<double>(n, pivot, s1, s2);
    });
  } else {
    for_each_row_chunk(l, ch, [&](int64_t k, int64_t r0, int64_t rows) {
      std::vector<A> pivot(l.c), s1(l.c, A(0)), s2(l.c, A(0));
      for (int64_t j = 0; j < l.c; ++j) pivot[j] = static_cast<A>(x[r0 * l.c + j]);
      cpu::bn_rows_sums(x + r0 * l.c, rows, l.c, pivot.data(), s1.data(), s2.data());
      for (int64_t j = 0; j < l.c; ++j) {
        part[j * ch.total + k] = welford_from_shifted<double>(rows, pivot[j], s1[j], s2[j]);
      }
    });
  }
  A* mean = mean_out.mutable_data_ptr<A>();
  A* var = var_out.mutable_data_ptr<A>();
  at::parallel_for(0, l.c, 16, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      Welford<double> w{0, 0, 0};
      for (int64_t k = 0; k < ch.total; ++k) w = welford_merge(w, part[c * ch.total + k]);
      mean[c] = static_cast<A>(w.mean);
      var[c] = static_cast<A>(w.count > 0 ? w.m2 / w.count : 0.0);
    }
  });
}

// ---- normalize (+ residual) (+ relu) ----------------------------------------------------------
template <typename scalar_t>
void apply(const scalar_t* x, const scalar_t* res, scalar_t* y, const Layout& l,
           const std::vector<acc_of<scalar_t>>& alpha, const std::vector<acc_of<scalar_t>>& beta,
           bool relu) {
  if (l.planar()) {
    const int64_t grain = std::max<int64_t>(1, kGrain / l.inner);
    at::parallel_for(0, l.outer * l.c, grain, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t off = p * l.inner, c = p % l.c;
        cpu::bn_run_apply(x + off, res ? res + off : nullptr, y + off, l.inner, alpha[c], beta[c],
                          relu);
      }
    });
  } else {
    const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(l.c, 1));
    at::parallel_for(0, l.outer, grain, [&](int64_t begin, int64_t end) {
      const int64_t off = begin * l.c;
      cpu::bn_rows_apply(x + off, res ? res + off : nullptr, y + off, end - begin, l.c,
                         alpha.data(), beta.data(), relu);
    });
  }
}

struct Prepared {
  at::Tensor x, residual;  // contiguous in fmt (residual undefined when absent)
  at::MemoryFormat fmt;
  Layout layout;
};

Prepared prepare(const at::Tensor& input, const std::optional<at::Tensor>& residual) {
  const auto fmt = bn_memory_format(input);
  Prepared p{input.contiguous(fmt), at::Tensor(), fmt, {}};
  if (residual.has_value() && residual->defined()) p.residual = residual->contiguous(fmt);
  p.layout = layout_of(p.x);
  return p;
}

template <typename scalar_t>
const scalar_t* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}

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

template <typename scalar_t>
at::Tensor apply_with(const Prepared& p, const std::vector<acc_of<scalar_t>>& mean,
                      const std::vector<acc_of<scalar_t>>& var,
                      const std::optional<at::Tensor>& weight,
                      const std::optional<at::Tensor>& bias, double eps, bool relu) {
  using A = acc_of<scalar_t>;
  const int64_t c = p.layout.c;
  std::vector<A> alpha, beta;
  affine_coefficients<A>(mean, var, channel_values<A>(weight, c, A(1)),
                         channel_values<A>(bias, c, A(0)), eps, alpha, beta);
  at::Tensor y = at::empty_like(p.x, p.x.options().memory_format(p.fmt));
  if (y.numel() > 0) {
    apply(p.x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(p.residual),
          y.mutable_data_ptr<scalar_t>(), p.layout, alpha, beta, relu);
  }
  return y;
}

#define FC_BN_DISPATCH(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

std::tuple<at::Tensor, at::Tensor> stats_cpu(const at::Tensor& input) {
  check_bn_input(input, "_batch_norm_stats");
  const Prepared p = prepare(input, std::nullopt);
  const auto acc = input.options().dtype(bn_acc_dtype(input.scalar_type()));
  at::Tensor mean = at::zeros({p.layout.c}, acc), var = at::zeros({p.layout.c}, acc);
  if (p.x.numel() > 0) {
    FC_BN_DISPATCH(p.x.scalar_type(), "fastconv::_batch_norm_stats", [&] {
      compute_stats(p.x.const_data_ptr<scalar_t>(), p.layout, mean, var);
    });
  }
  return {mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_train_cpu(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
    double eps, bool relu) {
  check_bn_forward_train(input, weight, bias, residual, eps, "_batch_norm_forward_train");
  const Prepared p = prepare(input, residual);
  const auto acc = input.options().dtype(bn_acc_dtype(input.scalar_type()));
  at::Tensor mean = at::zeros({p.layout.c}, acc), var = at::zeros({p.layout.c}, acc);
  at::Tensor y;
  FC_BN_DISPATCH(p.x.scalar_type(), "fastconv::_batch_norm_forward_train", [&] {
    using A = acc_of<scalar_t>;
    if (p.x.numel() > 0) compute_stats(p.x.const_data_ptr<scalar_t>(), p.layout, mean, var);
    const std::vector<A> m(mean.const_data_ptr<A>(), mean.const_data_ptr<A>() + p.layout.c);
    const std::vector<A> v(var.const_data_ptr<A>(), var.const_data_ptr<A>() + p.layout.c);
    y = apply_with<scalar_t>(p, m, v, weight, bias, eps, relu);
  });
  return {y, mean, var};
}

at::Tensor apply_cpu(const at::Tensor& input, const at::Tensor& mean, const at::Tensor& var,
                     const std::optional<at::Tensor>& weight,
                     const std::optional<at::Tensor>& bias,
                     const std::optional<at::Tensor>& residual, double eps, bool relu) {
  check_bn_apply(input, mean, var, weight, bias, residual, eps, "batch_norm_apply");
  const Prepared p = prepare(input, residual);
  at::Tensor y;
  FC_BN_DISPATCH(p.x.scalar_type(), "fastconv::batch_norm_apply", [&] {
    using A = acc_of<scalar_t>;
    const int64_t c = p.layout.c;
    y = apply_with<scalar_t>(p, channel_values<A>(mean, c, A(0)), channel_values<A>(var, c, A(0)),
                             weight, bias, eps, relu);
  });
  return y;
}

void update_stats_cpu(const at::Tensor& mean, const at::Tensor& var, c10::SymInt count_sym,
                      double momentum, const at::Tensor& running_mean,
                      const at::Tensor& running_var) {
  check_bn_update_stats(mean, var, count_sym, momentum, running_mean, running_var);
  const int64_t count = count_sym.expect_int();
  if (count == 0) return;
  const int64_t c = mean.size(0);
  const std::vector<double> m = channel_values<double>(mean, c, 0.0);
  const std::vector<double> v = channel_values<double>(var, c, 0.0);
  at::Tensor rm = running_mean.to(at::kDouble), rv = running_var.to(at::kDouble).contiguous();
  rm = rm.contiguous();
  double* pm = rm.mutable_data_ptr<double>();
  double* pv = rv.mutable_data_ptr<double>();
  for (int64_t i = 0; i < c; ++i) {
    pm[i] = bn_running_update(pm[i], m[i], momentum);
    pv[i] = bn_running_update(pv[i], bn_unbiased_var(v[i], double(count)), momentum);
  }
  running_mean.copy_(rm);
  running_var.copy_(rv);
}

// ---- backward ---------------------------------------------------------------------------------
struct BackwardInputs {
  Prepared p;
  at::Tensor dy;
};

template <typename scalar_t>
struct ChannelCoefficients {
  using A = acc_of<scalar_t>;
  std::vector<A> mean, alpha, beta;
};

template <typename scalar_t>
ChannelCoefficients<scalar_t> coefficients(const at::Tensor& mean, const at::Tensor& var,
                                           const std::optional<at::Tensor>& weight,
                                           const std::optional<at::Tensor>& bias, double eps,
                                           int64_t c) {
  using A = acc_of<scalar_t>;
  ChannelCoefficients<scalar_t> k;
  k.mean = channel_values<A>(mean, c, A(0));
  affine_coefficients<A>(k.mean, channel_values<A>(var, c, A(0)),
                         channel_values<A>(weight, c, A(1)), channel_values<A>(bias, c, A(0)),
                         eps, k.alpha, k.beta);
  return k;
}

// sum_dy, sum_dy_xmu per channel (double), one pass over dy and x.
template <typename scalar_t>
void backward_sums(const scalar_t* dy, const scalar_t* x, const scalar_t* res, const Layout& l,
                   const ChannelCoefficients<scalar_t>& k, bool relu, std::vector<double>& s_dy,
                   std::vector<double>& s_dyx) {
  using A = acc_of<scalar_t>;
  const Chunks ch = chunks_of(l);
  std::vector<double> part_dy(l.c * ch.total, 0.0), part_dyx(l.c * ch.total, 0.0);
  if (l.planar()) {
    for_each_planar_chunk(l, ch, [&](int64_t c, int64_t i, int64_t off, int64_t n) {
      A a = 0, b = 0;
      cpu::bn_run_backward_sums(dy + off, x + off, res ? res + off : nullptr, n, k.alpha[c],
                                k.beta[c], k.mean[c], relu, &a, &b);
      part_dy[c * ch.total + i] = a;
      part_dyx[c * ch.total + i] = b;
    });
  } else {
    for_each_row_chunk(l, ch, [&](int64_t i, int64_t r0, int64_t rows) {
      std::vector<A> a(l.c, A(0)), b(l.c, A(0));
      const int64_t off = r0 * l.c;
      cpu::bn_rows_backward_sums(dy + off, x + off, res ? res + off : nullptr, rows, l.c,
                                 k.alpha.data(), k.beta.data(), k.mean.data(), relu, a.data(),
                                 b.data());
      for (int64_t j = 0; j < l.c; ++j) {
        part_dy[j * ch.total + i] = a[j];
        part_dyx[j * ch.total + i] = b[j];
      }
    });
  }
  s_dy.assign(l.c, 0.0);
  s_dyx.assign(l.c, 0.0);
  for (int64_t c = 0; c < l.c; ++c) {
    for (int64_t i = 0; i < ch.total; ++i) {
      s_dy[c] += part_dy[c * ch.total + i];
      s_dyx[c] += part_dyx[c * ch.total + i];
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_reduce_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual, double eps,
    bool relu) {
  const char* op = "_batch_norm_backward_reduce";
  check_bn_apply(input, mean, var, weight, bias, residual, eps, op);
  check_bn_like(grad_output, input, op, "grad_output");
  const Prepared p = prepare(input, residual);
  const at::Tensor dy = grad_output.contiguous(p.fmt);
  const int64_t c = p.layout.c;
  const auto acc = bn_acc_dtype(input.scalar_type());
  std::vector<double> s_dy(c, 0.0), s_dyx(c, 0.0);
  FC_BN_DISPATCH(p.x.scalar_type(), "fastconv::_batch_norm_backward_reduce", [&] {
    const auto k = coefficients<scalar_t>(mean, var, weight, bias, eps, c);
    if (p.x.numel() > 0) {
      backward_sums(dy.const_data_ptr<scalar_t>(), p.x.const_data_ptr<scalar_t>(),
                    ptr_or_null<scalar_t>(p.residual), p.layout, k, relu, s_dy, s_dyx);
    }
  });
  const std::vector<double> v = channel_values<double>(var, c, 0.0);
  std::vector<double> gw(c);
  for (int64_t i = 0; i < c; ++i) gw[i] = s_dyx[i] * bn_invstd(v[i], eps);
  auto to_tensor = [&](const std::vector<double>& d, at::ScalarType t) {
    return at::tensor(d, input.options().dtype(at::kDouble)).to(t);
  };
  const auto wdt = weight.has_value() && weight->defined() ? weight->scalar_type() : acc;
  return {to_tensor(s_dy, acc), to_tensor(s_dyx, acc), to_tensor(gw, wdt)};
}

// grad_input (and grad_residual when `grad_residual` is true).
std::tuple<at::Tensor, at::Tensor> backward_apply_impl(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
    const std::optional<at::Tensor>& sum_dy, const std::optional<at::Tensor>& sum_dy_xmu,
    const c10::SymInt& count_sym, double eps, bool relu, bool grad_residual, const char* op) {
  const c10::SymInt c_sym = check_bn_apply(input, mean, var, weight, bias, residual, eps, op);
  check_bn_like(grad_output, input, op, "grad_output");
  check_bn_backward_sums(sum_dy, sum_dy_xmu, input, c_sym, count_sym, op);
  const Prepared p = prepare(input, residual);
  const at::Tensor dy = grad_output.contiguous(p.fmt);
  const int64_t c = p.layout.c;
  const bool training = sum_dy.has_value() && sum_dy->defined();
  at::Tensor dx = at::empty_like(p.x, p.x.options().memory_format(p.fmt));
  at::Tensor dres = grad_residual ? at::empty_like(dx) : at::Tensor();
  if (dx.numel() == 0) return {dx, dres};
  FC_BN_DISPATCH(p.x.scalar_type(), "fastconv::_batch_norm_backward_apply", [&] {
    using A = acc_of<scalar_t>;
    const auto k = coefficients<scalar_t>(mean, var, weight, bias, eps, c);
    const std::vector<A> v = channel_values<A>(var, c, A(0)), w = channel_values<A>(weight, c, A(1));
    const std::vector<A> sd = channel_values<A>(sum_dy, c, A(0));
    const std::vector<A> sx = channel_values<A>(sum_dy_xmu, c, A(0));
    std::vector<A> k_g(c), k_x(c), k_0(c);
    for (int64_t i = 0; i < c; ++i) {
      const BnBackwardCoef<A> b = bn_backward_coef<A>(k.mean[i], v[i], w[i], eps, training, sd[i],
                                                      sx[i], A(count_sym.expect_int()));
      k_g[i] = b.alpha;
      k_x[i] = b.k_x;
      k_0[i] = b.k_0;
    }
    const scalar_t* pdy = dy.const_data_ptr<scalar_t>();
    const scalar_t* px = p.x.const_data_ptr<scalar_t>();
    const scalar_t* pr = ptr_or_null<scalar_t>(p.residual);
    scalar_t* pdx = dx.mutable_data_ptr<scalar_t>();
    scalar_t* pdr = grad_residual ? dres.mutable_data_ptr<scalar_t>() : nullptr;
    const Layout& l = p.layout;
    if (l.planar()) {
      const int64_t grain = std::max<int64_t>(1, kGrain / l.inner);
      at::parallel_for(0, l.outer * l.c, grain, [&](int64_t begin, int64_t end) {
        for (int64_t q = begin; q < end; ++q) {
          const int64_t off = q * l.inner, ci = q % l.c;
          cpu::bn_run_backward_apply(pdy + off, px + off, pr ? pr + off : nullptr, pdx + off,
                                     pdr ? pdr + off : nullptr, l.inner, k.alpha[ci], k.beta[ci],
                                     k_g[ci], k_x[ci], k_0[ci], relu);
        }
      });
    } else {
      const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(l.c, 1));
      at::parallel_for(0, l.outer, grain, [&](int64_t begin, int64_t end) {
        const int64_t off = begin * l.c;
        cpu::bn_rows_backward_apply(pdy + off, px + off, pr ? pr + off : nullptr, pdx + off,
                                    pdr ? pdr + off : nullptr, end - begin, l.c, k.alpha.data(),
                                    k.beta.data(), k_g.data(), k_x.data(), k_0.data(), relu);
      });
    }
  });
  return {dx, dres};
}

at::Tensor backward_apply_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                              const at::Tensor& mean, const at::Tensor& var,
                              const std::optional<at::Tensor>& weight,
                              const std::optional<at::Tensor>& bias,
                              const std::optional<at::Tensor>& residual,
                              const std::optional<at::Tensor>& sum_dy,
                              const std::optional<at::Tensor>& sum_dy_xmu, c10::SymInt count,
                              double eps, bool relu) {
  return std::get<0>(backward_apply_impl(grad_output, input, mean, var, weight, bias, residual,
                                         sum_dy, sum_dy_xmu, count, eps, relu, false,
                                         "_batch_norm_backward_apply"));
}

std::tuple<at::Tensor, at::Tensor> add_relu_backward_apply_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
    const at::Tensor& var, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, const at::Tensor& residual,
    const std::optional<at::Tensor>& sum_dy, const std::optional<at::Tensor>& sum_dy_xmu,
    c10::SymInt count, double eps) {
  return backward_apply_impl(grad_output, input, mean, var, weight, bias, residual, sum_dy,
                             sum_dy_xmu, count, eps, true, true,
                             "_batch_norm_add_relu_backward_apply");
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("_batch_norm_stats", stats_cpu);
  m.impl("_batch_norm_forward_train", forward_train_cpu);
  m.impl("_batch_norm_update_stats", update_stats_cpu);
  m.impl("batch_norm_apply", apply_cpu);
  m.impl("_batch_norm_backward_reduce", backward_reduce_cpu);
  m.impl("_batch_norm_backward_apply", backward_apply_cpu);
  m.impl("_batch_norm_add_relu_backward_apply", add_relu_backward_apply_cpu);
}

}  // namespace fastconv
