// The 1x1 convolution drivers of the packed GEMM (cpu/conv2d_fast_gemm.h): each pass described
// as a gemm::Problem over the tensors' strides (NCHW or channels_last, any stride of the
// convolution), then gemm::run (cpu/conv2d_fast_gemm.cpp).
#include <ATen/Parallel.h>
#include <ATen/ops/from_blob.h>

#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <vector>

#include "cpu/conv2d_fast_gemm.h"
#include "cpu/conv2d_fast_util.h"
#include "cpu/layout_transpose.h"

namespace fastconv::cpu::gemm {

namespace {

std::atomic<int64_t> calls[3];  // forward, input gradient, weight gradient

// FASTCONV_CPU_GEMM=0 turns the GEMM path off (1x1 layers then take the direct kernels of
// cpu/conv2d_fast*.cpp), for measuring one against the other.
bool gemm_enabled() {
  const char* env = std::getenv("FASTCONV_CPU_GEMM");
  return env == nullptr || env[0] != '0';
}
// FASTCONV_CPU_GEMM=all also sends the channels_last forward passes that keep the direct kernel
// (forward_applies) to the GEMM, for measuring one against the other (not those the
// dot-product forward takes: it runs first, cpu/conv2d_fast_dot.h).
bool gemm_everywhere() {
  const char* env = std::getenv("FASTCONV_CPU_GEMM");
  return env != nullptr && std::strcmp(env, "all") == 0;
}

bool applies(const ConvGeometry& g, const at::Tensor& t) {
  return t.scalar_type() == at::kFloat && g.groups == 1 && g.r == 1 && g.s == 1 && g.pad_h == 0 &&
         g.pad_w == 0 && fastk::pick_kernels() != nullptr && gemm_enabled();
}

bool channels_last(const at::Tensor& t) { return !t.is_contiguous(); }

// An (n, c, h, w) tensor over per-thread scratch memory (slot of cpu/conv2d_fast_util.h's
// workspace, on the calling thread) in the given layout: no page faults of fresh memory.
at::Tensor scratch(int64_t n, int64_t c, int64_t h, int64_t w, bool cl, int slot) {
  float* data = fastk::workspace(slot, n * c * h * w);
  const std::vector<int64_t> strides = cl ? std::vector<int64_t>{c * h * w, 1, w * c, c}
                                          : std::vector<int64_t>{c * h * w, h * w, w, 1};
  return at::from_blob(data, {n, c, h, w}, strides, at::TensorOptions().dtype(at::kFloat));
}

// The input pixels a strided 1x1 convolution reads (rows oh * stride_h, columns ow * stride_w),
// as a view of x.
at::Tensor strided_view(const ConvGeometry& g, const at::Tensor& x) {
  return x.slice(2, 0, (g.p - 1) * g.stride_h + 1, g.stride_h).slice(3, 0, (g.q - 1) * g.stride_w + 1, g.stride_w);
}

// The same pixels gathered into scratch memory in the input's layout; the input itself at
// stride 1.
at::Tensor strided_pixels(const ConvGeometry& g, const at::Tensor& x) {
  if (g.stride_h == 1 && g.stride_w == 1) return x;
  at::Tensor sub = scratch(g.n, g.c, g.p, g.q, channels_last(x), 0);
  sub.copy_(strided_view(g, x));
  return sub;
}

// dst (channels_last, dense) = src (NCHW): contiguous images by the blocked transposes of
// cpu/layout_transpose.h, which ran at 2-3x the speed of torch's copy between the layouts
// here; anything else (a strided view) by torch's copy.
void copy_to_nhwc(const at::Tensor& src, at::Tensor& dst) {
  const int64_t N = src.size(0), C = src.size(1), P = src.size(2) * src.size(3);
  if (!src.is_contiguous()) {
    dst.copy_(src);
    return;
  }
  transpose_batch(src.const_data_ptr<float>(), C * P, dst.mutable_data_ptr<float>(), C * P, N, C, P);
}

// dst (NCHW, contiguous) = src (channels_last, dense).
void copy_to_nchw(const at::Tensor& src, at::Tensor& dst) {
  const int64_t N = src.size(0), C = src.size(1), P = src.size(2) * src.size(3);
  transpose_batch(src.const_data_ptr<float>(), C * P, dst.mutable_data_ptr<float>(), C * P, N, P, C);
}

// Whether the pixels of all images of t form one index n * P + pixel (t.stride(0) = P *
// pixel stride, as in channels_last), so a GEMM can run over the whole batch at once.
bool batch_folds(const at::Tensor& t, int64_t P) { return t.size(0) <= 1 || t.stride(0) == P * t.stride(3); }

// NCHW: the images' pixels as one column index (Problem::n_group) where P is not a multiple of
// the register tile's 16 columns (7 x 7: 49 = 3 x 16 + 1 would leave a quarter of the tiles'
// columns empty; 14 x 14: 196 = 12 x 16 + 4).
void fold_batch_into_columns(Problem& pr, int64_t P) {
  if (pr.batch <= 1 || P % kernels().nr == 0) return;
  pr.n_group = P;
  pr.N = pr.batch * P;
  pr.b_group = pr.b_batch;
  pr.c_group = pr.c_batch;
  pr.batch = 1;
  pr.b_batch = pr.c_batch = 0;
}

// NCHW forward and input gradient on short images (7 x 7, or a strided layer's 14 x 14 output)
// in a batch run as channels_last GEMMs on NHWC copies (the layout transposes of
// cpu/layout_transpose.h): the NCHW GEMM folds such images into its columns, and every column
// panel that spans two images is packed and stored in parts. 2 threads, batch 8, best of 6
// interleaved, NCHW -> via NHWC: forward 2048x7x7 -> 512 9.12 -> 6.72 ms, 512x7x7 -> 2048 7.82
// -> 5.80, 1024x14x14 -> 2048 stride 2 15.9 -> 11.3, 512x28x28 -> 1024 stride 2 13.7 -> 12.8;
// input gradient 512x7x7 -> 2048 14.4 -> 8.8. Not at 14 x 14 with stride 1, where the NCHW GEMM
// (B read in place) was as fast or faster: 256x14x14 -> 1024 forward 5.56 vs 6.71 ms, 1024x14x14
// -> 256 input gradient 7.97 vs 11.0. (The input gradient only at stride 1: its strided form
// already scatters from scratch.)
bool nchw_via_nhwc(const ConvGeometry& g, const at::Tensor& t) {
  const int64_t P = g.p * g.q;
  const bool strided = g.stride_h > 1 || g.stride_w > 1;
  const char* env = std::getenv("FASTCONV_CPU_GEMM_NHWC");  // =0: the NCHW GEMM (measuring, tests)
  if (env != nullptr && env[0] == '0') return false;
  // (not where t is in both layouts at once, as the NHWC copies themselves are with one
  // channel or 1 x 1 images: the copies would be the data again, and the GEMM would recurse)
  return !channels_last(t) && !t.is_contiguous(at::MemoryFormat::ChannelsLast) && g.n > 1 && P % 64 != 0 &&
         P < (strided ? 256 : 128);
}

// The GEMM's batch: images one by one, or folded into the M dimension (pixels as rows).
void fold_batch_into_rows(Problem& pr, const ConvGeometry& g, const at::Tensor& a, const at::Tensor& c) {
  const int64_t P = g.p * g.q;
  if (batch_folds(a, P) && batch_folds(c, P)) {
    pr.M = g.n * P;
    pr.batch = 1;
  }
}

}  // namespace

// channels_last forward passes over images of 56 x 56 pixels or more keep the direct kernel
// (cpu/conv2d_fast.cpp: weights per block in L1, the NHWC input read in place, no packing),
// which measured faster there (resnet50 batch 8, 1 thread, speedup over PyTorch direct / GEMM,
// two interleaved runs on a loaded machine: res2a_branch1 2.42 / 1.66 and 2.33 / 2.05,
// res2a_branch2a 2.61 / 1.48 and 1.09 / 0.67, res2b_branch2a 1.38 / 1.12 and 1.46 / 1.21,
// res3a_branch1 0.94 / 0.76 and 0.96 / 1.02); on smaller images the GEMM was on par or faster
// (res5a_branch1 1.13 / 1.61, res4b_branch2a 1.08 / 1.20).
// channels_last maps of 56 x 56 pixels or more go to the direct kernel (measured faster with
// the AVX2 tile), except those of at most 64 channels on the 6 x 32 AVX-512 tile: 2 threads,
// best of 40 interleaved, direct -> GEMM: 8x64x56x56 -> 64 1.86 -> 1.58 ms, -> 256 7.09 ->
// 6.16 ms, 2x64x112x112 -> 64 1.91 -> 1.62 ms; but 8x256x56x56 -> 64 6.72 -> 7.30 ms and
// -> 512 stride 2 8.08 -> 8.98 ms. On the 6 x 64 tile (session 12) the GEMM also wins at stride
// 1 with more channels: 8x256x56x56 -> 64 6.84 -> 5.89 ms, -> 128 11.2 -> 10.4 (best of 8
// interleaved), but not at stride 2: -> 512 10.2 -> 10.9.
bool forward_applies(const ConvGeometry& g, const at::Tensor& input) {
  const bool wide_tile_few_channels = kernels().nr >= 32 && g.c <= 64;
  const bool wider_tile_stride_1 = kernels_for_columns(g.k).nr == 64 && g.stride_h == 1 && g.stride_w == 1;
  return applies(g, input) && (input.is_contiguous() || g.h * g.w < 56 * 56 || wide_tile_few_channels ||
                               wider_tile_stride_1 || gemm_everywhere());
}
bool input_grad_applies(const ConvGeometry& g, const at::Tensor& grad_output) { return applies(g, grad_output); }
bool weight_grad_applies(const ConvGeometry& g, const at::Tensor& grad_output) { return applies(g, grad_output); }

// Y[n, k, p] = sum_c W[k, c] X[n, c, p] + bias[k].
bool conv2d_forward_gemm(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias, at::Tensor& output) {
  if (nchw_via_nhwc(g, output)) {
    at::Tensor x = scratch(g.n, g.c, g.p, g.q, true, 0), y = scratch(g.n, g.k, g.p, g.q, true, 1);
    copy_to_nhwc(strided_view(g, input), x);
    ConvGeometry unit = g;
    unit.h = g.p, unit.w = g.q, unit.stride_h = unit.stride_w = 1;
    conv2d_forward_gemm(unit, x, weight, bias, y);
    copy_to_nchw(y, output);
    return fastk::handled();
  }
  // NCHW with stride: the packing of B reads the strided pixels in place (column groups of q
  // pixels, one per output row), no gathered copy; except where the images are better folded
  // into the columns (fold_batch_into_columns: P short and not a multiple of 16), which needs
  // the pixels dense.
  const int64_t P = g.p * g.q;
  const bool strided = g.stride_h > 1 || g.stride_w > 1;
  const bool strided_in_place =
      strided && !channels_last(output) && (P % kernels().nr == 0 || P >= 128 || g.n == 1);
  const at::Tensor x = strided_in_place ? input : strided_pixels(g, input);
  Problem pr;
  pr.K = g.c;
  pr.batch = g.n;
  pr.bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
  const float* w = weight.data_ptr<float>();
  if (channels_last(output)) {  // Y[p, k] = X[p, c] W^T[c, k], all images at once where they fold
    pr.M = P;
    pr.N = g.k;
    pr.a = x.data_ptr<float>(), pr.a_rs = x.stride(3), pr.a_cs = x.stride(1), pr.a_batch = x.stride(0);
    pr.b = w, pr.b_rs = weight.stride(1), pr.b_cs = weight.stride(0);
    pr.c = output.data_ptr<float>(), pr.c_rs = output.stride(3), pr.c_cs = output.stride(1);
    pr.c_batch = output.stride(0);
    fold_batch_into_rows(pr, g, x, output);
  } else {  // Y_n[k, p] = W[k, c] X_n[c, p]
    pr.M = g.k;
    pr.N = P;
    pr.bias_per_row = true;
    pr.a = w, pr.a_rs = weight.stride(0), pr.a_cs = weight.stride(1);
    pr.b = x.data_ptr<float>(), pr.b_rs = x.stride(1), pr.b_cs = x.stride(3), pr.b_batch = x.stride(0);
    pr.c = output.data_ptr<float>(), pr.c_rs = output.stride(1), pr.c_cs = output.stride(3);
    pr.c_batch = output.stride(0);
    if (strided_in_place) {  // column (oh, ow) at oh * stride_h rows + ow * stride_w columns
      pr.n_group = g.q;
      pr.b_cs = x.stride(3) * g.stride_w, pr.b_group = x.stride(2) * g.stride_h;
      pr.c_group = output.stride(2);
    } else {
      fold_batch_into_columns(pr, P);
    }
  }
  run(pr);
  calls[0].fetch_add(1, std::memory_order_relaxed);
  return fastk::handled();
}

// dX[n, c, p] = sum_k W[k, c] dY[n, k, p]; with stride, computed for the strided pixels into
// scratch memory and scattered into a zeroed grad_input.
bool conv2d_input_grad_gemm(const ConvGeometry& g, const at::Tensor& grad_output,
                            const at::Tensor& weight, at::Tensor& grad_input) {
  if (nchw_via_nhwc(g, grad_input) && g.stride_h == 1 && g.stride_w == 1) {  // (slot 1: dx below)
    at::Tensor gy = scratch(g.n, g.k, g.p, g.q, true, 0), dx = scratch(g.n, g.c, g.h, g.w, true, 1);
    copy_to_nhwc(grad_output, gy);
    conv2d_input_grad_gemm(g, gy, weight, dx);
    copy_to_nchw(dx, grad_input);
    return fastk::handled();
  }
  const bool strided = g.stride_h > 1 || g.stride_w > 1;
  at::Tensor dx = strided ? scratch(g.n, g.c, g.p, g.q, channels_last(grad_input), 1) : grad_input;
  const int64_t P = g.p * g.q;
  Problem pr;
  pr.K = g.k;
  pr.batch = g.n;
  const float* w = weight.data_ptr<float>();
  const float* gy = grad_output.data_ptr<float>();
  if (channels_last(dx)) {  // dX[p, c] = dY[p, k] W[k, c]
    pr.M = P;
    pr.N = g.c;
    pr.a = gy, pr.a_rs = grad_output.stride(3), pr.a_cs = grad_output.stride(1);
    pr.a_batch = grad_output.stride(0);
    pr.b = w, pr.b_rs = weight.stride(0), pr.b_cs = weight.stride(1);
    pr.c = dx.data_ptr<float>(), pr.c_rs = dx.stride(3), pr.c_cs = dx.stride(1), pr.c_batch = dx.stride(0);
    fold_batch_into_rows(pr, g, grad_output, dx);
  } else {  // dX_n[c, p] = W^T[c, k] dY_n[k, p]
    pr.M = g.c;
    pr.N = P;
    pr.a = w, pr.a_rs = weight.stride(1), pr.a_cs = weight.stride(0);
    pr.b = gy, pr.b_rs = grad_output.stride(1), pr.b_cs = grad_output.stride(3);
    pr.b_batch = grad_output.stride(0);
    pr.c = dx.data_ptr<float>(), pr.c_rs = dx.stride(1), pr.c_cs = dx.stride(3), pr.c_batch = dx.stride(0);
    fold_batch_into_columns(pr, P);
  }
  run(pr);
  if (strided) {
    grad_input.zero_();
    grad_input.slice(2, 0, (g.p - 1) * g.stride_h + 1, g.stride_h)
        .slice(3, 0, (g.q - 1) * g.stride_w + 1, g.stride_w)
        .copy_(dx);
  }
  calls[1].fetch_add(1, std::memory_order_relaxed);
  return fastk::handled();
}

// dW[k, c] = sum over n, p of dY[n, k, p] X[n, c, p]: the images are part of the reduction.
bool conv2d_weight_grad_gemm(const ConvGeometry& g, const at::Tensor& grad_output,
                             const at::Tensor& input, at::Tensor& grad_weight) {
  const at::Tensor x = strided_pixels(g, input);
  Problem pr;
  pr.M = g.k;
  pr.N = g.c;
  pr.K = g.p * g.q;
  pr.batch = g.n;
  pr.reduce_batch = true;
  pr.a = grad_output.data_ptr<float>(), pr.a_rs = grad_output.stride(1), pr.a_cs = grad_output.stride(3);
  pr.a_batch = grad_output.stride(0);
  pr.b = x.data_ptr<float>(), pr.b_rs = x.stride(3), pr.b_cs = x.stride(1), pr.b_batch = x.stride(0);
  pr.c = grad_weight.data_ptr<float>(), pr.c_rs = grad_weight.stride(0), pr.c_cs = grad_weight.stride(1);
  run(pr);
  calls[2].fetch_add(1, std::memory_order_relaxed);
  return fastk::handled();
}

namespace {
std::tuple<int64_t, int64_t, int64_t> gemm_info() { return {calls[0].load(), calls[1].load(), calls[2].load()}; }
}  // namespace

}  // namespace fastconv::cpu::gemm

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  // _conv2d_cpu_gemm_info() -> (forward, input_grad, weight_grad): how many passes of each kind
  // the 1x1 GEMM path has computed in this process. For tests and the benchmark report.
  m.def("_conv2d_cpu_gemm_info() -> (int, int, int)", &fastconv::cpu::gemm::gemm_info);
}
