// The forward convolution as a packed implicit GEMM (interface and the two GEMM forms in
// cpu/conv2d_fast_im2col.h), on the 1x1 GEMM's micro-kernel and packing of the weights
// (cpu/conv2d_fast_gemm.h, gemm::Kernels: mr x nr register tile, packed micro-panels).
//  - the weights are permuted to (K, R, S, C), so that a row of W[K, RSC] is contiguous, and
//    packed once per call, in parallel, into micro-panels per reduction block (A panels of mr
//    output channels for NCHW, B panels of nr output channels for channels_last);
//  - the reduction RSC is cut into blocks of at most KC steps (set by the shape alone); per
//    block, a work item gathers its pixel panels straight from the input (NCHW: kc x nr
//    pixels, at most 64, in L1/L2) or points at each pixel's steps in the input
//    (channels_last: they are contiguous there), and runs the micro-kernel over them and all
//    the weight panels of its output channels (those of one block, in L2); blocks add to the
//    result in order, the first one starting from the bias;
//  - work items are tiles of (image,) pixels x output channels, sized so that each thread gets
//    several (channels_last: equal runs of about 16 pixel panels, see Tiling); an element's
//    sum never depends on the tile it is in, so the bits are the same at any thread count.
#include "cpu/conv2d_fast_im2col.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <vector>

#include "cpu/conv2d_fast_gemm.h"
#include "cpu/conv2d_fast_util.h"
#include "cpu/layout_transpose.h"

namespace fastconv::cpu::im2col {
namespace {

using fastk::ceil_div;

// Reduction steps per block: a KC x 16 panel is 24 KiB (L1: 32 KiB). Measured against 256 and
// 512 (channels_last res3a/res4a/res5a_branch2b at batch 8, 1 thread): 384 was 0-9% faster
// with gathered panels; with A read in place (session 8, CPU time, load ~6) 256, 384 and 512
// and runs of 8 or 16 channel panels per work item instead of all were within 2% of each
// other.
constexpr int64_t KC = 384;

std::atomic<int64_t> forward_calls{0}, nchw_via_nhwc_calls{0};

// FASTCONV_CPU_IM2COL: "0" off, "1" on wherever the path can run, unset: the measured choice.
int switch_value() {
  const char* env = std::getenv("FASTCONV_CPU_IM2COL");
  if (env == nullptr || env[0] == '\0') return -1;
  return env[0] == '0' ? 0 : 1;
}

struct Reduction {
  int64_t total, nk, kc_len;  // RSC steps, blocks, steps per block (the last may be shorter)
  explicit Reduction(const ConvGeometry& g) : total(g.r * g.s * g.c) {
    nk = ceil_div(total, KC);
    kc_len = ceil_div(total, nk);
  }
  int64_t k0(int64_t kb) const { return kb * kc_len; }
  int64_t kc(int64_t kb) const { return std::min(kc_len, total - kb * kc_len); }
};

// Whether `items` work items leave a thread idle for long: fewer than 4 per thread, or fewer
// than 8 per thread and not a multiple of the thread count (9 items on 2 threads: one waits
// for a ninth of the work).
bool too_few(int64_t items) {
  const int64_t T = at::get_num_threads();
  return items < 4 * T || (items < 8 * T && items % T != 0);
}

// Halves the run lengths, `a` first (down to a_min) and then `b` (down to 1), until
// items(a, b) gives every thread enough work (too_few) or neither can shrink.
template <typename Items>
void shrink_runs(int64_t& a, int64_t a_min, int64_t& b, Items items) {
  while (too_few(items(a, b))) {
    if (a > a_min) {
      a = ceil_div(a, 2);
    } else if (b > 1) {
      b = ceil_div(b, 2);
    } else {
      break;
    }
  }
}

// Y_n[K, P] = W[K, RSC] im2col_n[RSC, P]: A = weights (mr output channels per panel), B =
// pixels (nr per panel, the flattened output pixels of one image, so panels run across rows).
void forward_nchw(const gemm::Kernels& kk, const ConvGeometry& g, const float* x, const float* w,
                  const float* bias, float* out, int64_t osn, int64_t osk) {
  const int64_t MR = kk.mr, NR = kk.nr, M = g.k, P = g.p * g.q;
  const Reduction red(g);
  const int64_t mt = ceil_div(M, MR), Mpad = mt * MR, pt = ceil_div(P, NR);
  float* apre = fastk::workspace(0, Mpad * red.total);  // block kb, panel i at k0 * Mpad + i * kc
  at::parallel_for(0, red.nk * mt, 8, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      const int64_t kb = it % red.nk, i = (it / red.nk) * MR, k0 = red.k0(kb), kc = red.kc(kb);
      kk.pack_a(w + i * red.total + k0, red.total, 1, static_cast<int>(std::min(MR, M - i)), kc,
                apre + k0 * Mpad + i * kc);
    }
  });
  // Items: (image, run of pp pixel panels, run of mb channel panels); runs shrink until each
  // thread has four items or more, in equal numbers where they are few.
  int64_t pp = 4, mb = mt;
  shrink_runs(pp, 1, mb,
              [&](int64_t p, int64_t m) { return g.n * ceil_div(pt, p) * ceil_div(mt, m); });
  const int64_t npb = ceil_div(pt, pp), nmb = ceil_div(mt, mb);
  at::parallel_for(0, g.n * npb * nmb, 1, [&](int64_t begin, int64_t end) {
    float* bbuf = fastk::workspace(2, pp * NR * red.kc_len + 8);
    std::vector<int32_t> ih0(pp * NR), iw0(pp * NR);
    for (int64_t it = begin; it < end; ++it) {
      const int64_t im = it % nmb, jb = (it / nmb) % npb, n = it / (nmb * npb);
      const int64_t j0 = jb * pp, j1 = std::min(pt, j0 + pp);
      const int64_t i0 = im * mb * MR, i1 = std::min(M, i0 + mb * MR);
      for (int64_t j = 0; j < (j1 - j0) * NR; ++j) {
        const int64_t pix = j0 * NR + j;
        const bool real = pix < P;
        ih0[j] = real ? static_cast<int32_t>(conv_input_coord(pix / g.q, 0, g.stride_h, g.pad_h, g.dil_h)) : kNoPixel;
        iw0[j] = real ? static_cast<int32_t>(conv_input_coord(pix % g.q, 0, g.stride_w, g.pad_w, g.dil_w)) : kNoPixel;
      }
      for (int64_t kb = 0; kb < red.nk; ++kb) {
        const int64_t k0 = red.k0(kb), kc = red.kc(kb);
        for (int64_t jp = j0; jp < j1; ++jp) {
          const int64_t o = (jp - j0) * NR;
          const NchwPanel panel{x + n * g.c * g.h * g.w, g.h, g.w, g.c, g.s, g.dil_h, g.dil_w, g.stride_w,
                                ih0.data() + o, iw0.data() + o};
          gather_nchw(panel, static_cast<int>(NR), k0, kc, bbuf + (jp - j0) * kc * NR);
        }
        for (int64_t jp = j0; jp < j1; ++jp) {
          const int nvalid = static_cast<int>(std::min(NR, P - jp * NR));
          for (int64_t i = i0; i < i1; i += MR) {
            const int m = static_cast<int>(std::min(MR, M - i));
            kk.micro(kc, apre + k0 * Mpad + i * kc, bbuf + (jp - j0) * kc * NR, out + n * osn + i * osk + jp * NR,
                     osk, 1, m, nvalid, kb > 0, (kb == 0 && bias) ? bias + i : nullptr, true);
          }
        }
      }
    }
  });
}

// The channels_last reduction: runs of steps that are contiguous in the input for one pixel
// (a kernel row's S x C elements where the column dilation is 1, else one tap's C channels),
// each cut into equal blocks of at most KC steps. A block never crosses a run, so a pixel
// reads it at one place, in place; the blocks depend on the shape alone.
// Blocks of at most kc_max steps (KC; half that for the 6 x 64 tile, whose B micro-panel is
// twice as wide).
struct RunBlocks {
  int64_t len, per_run, kc_len, nk;  // steps per run, blocks per run, steps per block, blocks
  RunBlocks(const ConvGeometry& g, int64_t kc_max) : len(g.dil_w == 1 ? g.s * g.c : g.c) {
    per_run = std::max<int64_t>(1, ceil_div(len, kc_max));
    kc_len = ceil_div(len, per_run);
    nk = g.r * g.s * g.c / len * per_run;
  }
  int64_t run(int64_t kb) const { return kb / per_run; }
  int64_t t0(int64_t kb) const { return (kb % per_run) * kc_len; }  // first step within the run
  int64_t k0(int64_t kb) const { return run(kb) * len + t0(kb); }
  int64_t kc(int64_t kb) const { return std::min(kc_len, len - t0(kb)); }
};

// `total` panels cut into `parts` runs whose lengths differ by one at most.
struct Runs {
  int64_t total, parts;
  int64_t begin(int64_t i) const { return i * total / parts; }
  int64_t most() const { return ceil_div(total, parts); }
};

// The channels_last work items: runs of pixel panels x runs of output-channel panels.
//  - about kPixelPanels pixel panels per run: a weight micro-panel, streamed from L2/L3,
//    serves that many register tiles from L1. res5a_branch2b (8 x 512 x 14 x 14, stride 2)
//    at 1 thread, CPU time, load ~3: runs of 16 panels 73% of the FMA peak, 8: 66%, 4 (the
//    old 2-thread choice): 62%.
//  - the pixel runs come in a multiple of the thread count, equal to within a panel, so that
//    every thread gets the same work (the old split gave res4a/res5a/batch-1 res3a 17 items:
//    9 on one thread, 8 on the other, one of them part empty);
//  - output channels are split in halves only while there are fewer than two items per
//    thread (each channel run reads all of its pixels' inputs again).
struct Tiling {
  static constexpr int64_t kPixelPanels = 16;
  Runs pixels, channels;
  Tiling(int64_t mt, int64_t nt, int64_t threads) {
    const int64_t T = std::max<int64_t>(1, threads);
    pixels = {mt, std::min(mt, ceil_div(ceil_div(mt, kPixelPanels), T) * T)};
    channels = {nt, 1};
    while (pixels.parts * channels.parts < 2 * T && channels.parts * 2 <= nt) channels.parts *= 2;
  }
  int64_t items() const { return pixels.parts * channels.parts; }
};

// Zeros that row pointers of padding and of pixels past the end read (kc <= KC).
alignas(64) const float kZeroRow[KC] = {};

// Y[N*P, K] = im2col[N*P, RSC] W[K, RSC]^T: A = pixels (mr per panel, the output pixels of all
// images as one index), B = weights (nr output channels per panel). A is never copied: per
// reduction block, each pixel's row of A is a pointer into the input (micro_a_ptrs), or to
// zeros where the block is all padding; only a block that is part padding (a pixel at the
// image's left or right edge) is copied, with its zeros, into a per-pixel buffer.
void forward_nhwc(const gemm::Kernels& kk, const ConvGeometry& g, const float* x, const float* w,
                  const float* bias, float* out) {
  const int64_t MR = kk.mr, NR = kk.nr, N = g.k, P = g.p * g.q, M = g.n * P, C = g.c;
  const RunBlocks red(g, NR > 32 ? KC / 2 : KC);
  const bool fold = g.dil_w == 1;
  const int64_t runs_per_row = fold ? 1 : g.s, taps_per_run = fold ? g.s : 1;
  const int64_t nt = ceil_div(N, NR), Npad = nt * NR, mt = ceil_div(M, MR), total = g.r * g.s * C;
  float* bpre = fastk::workspace(0, Npad * total);  // block kb, panel j at k0 * Npad + j * kc
  at::parallel_for(0, red.nk * nt, 8, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      const int64_t kb = it % red.nk, j = (it / red.nk) * NR, k0 = red.k0(kb), kc = red.kc(kb);
      kk.pack_b(w + j * total + k0, 1, total, static_cast<int>(std::min(NR, N - j)), kc,
                bpre + k0 * Npad + j * kc);
    }
  });
  const Tiling tiles(mt, nt, at::get_num_threads());
  const int64_t pm = tiles.pixels.most();  // pixel panels in the longest run
  at::parallel_for(0, tiles.items(), 1, [&](int64_t begin, int64_t end) {
    float* edge = fastk::workspace(2, pm * MR * red.kc_len);  // part-padding blocks, per pixel
    std::vector<const float*> rows(pm * MR);
    std::vector<int64_t> img(pm * MR), ih0(pm * MR), iw0(pm * MR);
    for (int64_t it = begin; it < end; ++it) {
      const int64_t jb = it % tiles.channels.parts, ib = it / tiles.channels.parts;
      const int64_t i0 = tiles.pixels.begin(ib), i1 = tiles.pixels.begin(ib + 1);  // pixel panels
      const int64_t c0 = tiles.channels.begin(jb) * NR, c1 = std::min(N, tiles.channels.begin(jb + 1) * NR);
      const int64_t npix = (i1 - i0) * MR;
      for (int64_t i = 0; i < npix; ++i) {
        const int64_t pix = i0 * MR + i, p = pix % P;
        img[i] = pix < M ? pix / P : -1;
        ih0[i] = conv_input_coord(p / g.q, 0, g.stride_h, g.pad_h, g.dil_h);
        iw0[i] = conv_input_coord(p % g.q, 0, g.stride_w, g.pad_w, g.dil_w);
      }
      for (int64_t kb = 0; kb < red.nk; ++kb) {
        const int64_t k0 = red.k0(kb), kc = red.kc(kb), t0 = red.t0(kb);
        const int64_t r = red.run(kb) / runs_per_row, s = red.run(kb) % runs_per_row;
        for (int64_t i = 0; i < npix; ++i) {
          // the run of pixel i starts at input column iw, its steps [lo, hi) inside the image
          const int64_t ih = ih0[i] + r * g.dil_h, iw = iw0[i] + s * g.dil_w;
          int64_t lo = 0, hi = 0;
          if (img[i] >= 0 && ih >= 0 && ih < g.h) {
            lo = std::clamp<int64_t>(-iw, 0, taps_per_run) * C;
            hi = std::clamp<int64_t>(g.w - iw, 0, taps_per_run) * C;
          }
          const int64_t a = std::max(lo, t0), b = std::min(hi, t0 + kc);
          if (b <= a) {
            rows[i] = kZeroRow;
            continue;
          }
          const float* start = x + ((img[i] * g.h + ih) * g.w + iw) * C;  // may lie before the row
          if (a == t0 && b == t0 + kc) {
            rows[i] = start + t0;
            continue;
          }
          float* e = edge + i * red.kc_len;
          std::fill(e, e + kc, 0.0f);
          std::copy(start + a, start + b, e + (a - t0));
          rows[i] = e;
        }
        for (int64_t j = c0; j < c1; j += NR) {
          const int nvalid = static_cast<int>(std::min(NR, N - j));
          for (int64_t ip = i0; ip < i1; ++ip) {
            const int m = static_cast<int>(std::min(MR, M - ip * MR));
            kk.micro_a_ptrs(kc, rows.data() + (ip - i0) * MR, bpre + k0 * Npad + j * kc, out + ip * MR * N + j,
                            N, 1, m, nvalid, kb > 0, (kb == 0 && bias) ? bias + j : nullptr, false);
          }
        }
      }
    }
  });
}

// NCHW forward passes that run as channels_last ones, on NHWC copies of the input and the
// result (two transposes: 4 MB at ResNet-50's res5a_branch2b, batch 8, ~0.3 ms per side),
// where the NCHW form wastes its panels: strided layers with small output images (under 256
// pixels, as for the 1x1 GEMM's nchw_via_nhwc) and more than one image, as the channels_last
// form runs its pixel panels across images. Measured (AVX-512 on AMD EPYC, 2 threads, best of
// 5 interleaved, NCHW, direct kernel -> via NHWC): res5a_branch2b (512 x 14 x 14 -> 512, stride
// 2) batch 8 18.6 -> 13.6 ms; at batch 1 2.38 -> 3.77 ms, and DeepBench's 256 x 20 x 84 -> 512
// 5x5 stride 2 (batch 1) 14.0 -> 16.5 ms, hence the batch rule; res4a_branch2b (28 x 28 -> 14 x
// 14, the direct kernel when Winograd is off) 11.8 both ways. FASTCONV_CPU_IM2COL_NHWC=0 turns
// it off, =1 takes it for every NCHW layer this path runs.
bool nchw_via_nhwc(const ConvGeometry& g) {
  const char* env = std::getenv("FASTCONV_CPU_IM2COL_NHWC");
  if (env != nullptr && env[0] != '\0') return env[0] == '1';
  return (g.stride_h > 1 || g.stride_w > 1) && g.n > 1 && g.p * g.q < 256;
}

// channels_last when either tensor is only that (a tensor with one channel or one pixel can be
// both, its memory the same either way).
bool channels_last(const at::Tensor& input, const at::Tensor& output) {
  return !input.is_contiguous() || !output.is_contiguous();
}

}  // namespace

bool forward_applies(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& output) {
  const int mode = switch_value();
  if (mode == 0 || input.scalar_type() != at::kFloat || g.groups != 1 || fastk::pick_kernels() == nullptr) {
    return false;
  }
  const gemm::Kernels& kk = gemm::kernels();
  // the gathers: at most 8 pixels per A panel, 1-4 whole vectors per B panel, int32 offsets
  if (kk.mr > 8 || kk.nr % 8 != 0 || kk.nr > 32 || g.h * g.w >= (int64_t{1} << 30)) return false;
  const bool cl = channels_last(input, output);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  if (!input.is_contiguous(fmt) || !output.is_contiguous(fmt)) return false;
  if (mode == 1) return true;
  // Measured against the direct kernel (1 thread, CPU time per call, interleaved, load ~3 on
  // the 2 cores; speedup over PyTorch, direct -> implicit GEMM): channels_last strided layers
  // with >= 64 channels in and out gain: ResNet-50 batch 8 res3a_branch2b 0.79 -> 0.89x,
  // res4a 0.84 -> 0.97x, res5a 0.96 -> 1.16x, res3a at batch 1 0.82 -> 0.97x. Everything else
  // measured slower or equal: NCHW (res4a 0.90 -> 0.81x, res5a 0.92 -> 0.62x: 16-pixel panels
  // of one 7 x 7 image waste a quarter of the tile), few channels, where gathering a panel
  // costs too much per use (conv1 C = 3: 1.16 -> 0.86x channels_last; DeepSpeech K = 32:
  // 0.90 -> 0.44x), 5x5 stride 1 (alexnet conv2 1.33 -> 1.20x), 3x3 stride 1 on 7 x 7
  // (res5b 1.16 -> 1.15x).
  // On the 6 x 64 AVX-512 tile (this machine, 2 threads, best of 6 interleaved, direct kernel
  // -> implicit GEMM) 5x5 stride 1 gains too: AlexNet conv2 (64 -> 192, 27 x 27) batch 1 3.05 ->
  // 2.77 ms, batch 8 22.7 -> 20.1 ms; 3x3 stride 1 does not (ResNet-50 res4b at batch 1 1.72 ->
  // 1.94 ms, where Winograd does not take it).
  // NCHW layers that nchw_via_nhwc picks run the channels_last form on transposed copies.
  const bool strided = g.stride_h > 1 || g.stride_w > 1;
  const bool large_kernel = g.r * g.s >= 25 && gemm::kernels_for_columns(g.k).nr == 64;
  return (cl || nchw_via_nhwc(g)) && (strided || large_kernel) && g.c >= 64 && g.k >= 64;
}

bool conv2d_forward_im2col(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                           const at::Tensor& bias, at::Tensor& output) {
  const at::Tensor w = weight.permute({0, 2, 3, 1}).contiguous();  // (K, R, S, C): rows of W[K, RSC]
  const float* b = bias.defined() ? bias.data_ptr<float>() : nullptr;
  if (channels_last(input, output)) {  // (the weights' panels are the GEMM's columns)
    forward_nhwc(gemm::kernels_for_columns(g.k), g, input.data_ptr<float>(), w.data_ptr<float>(), b,
                 output.data_ptr<float>());
  } else if (nchw_via_nhwc(g)) {
    // the input transposed into workspace slot 1, the result into slot 3 (forward_nhwc uses 0
    // and 2), then transposed into the NCHW output
    const float* x = fastk::nhwc_padded(input, 0, g.h, 0, g.w, 1);
    const int64_t P = g.p * g.q;
    float* y = fastk::workspace(3, g.n * P * g.k);
    forward_nhwc(gemm::kernels_for_columns(g.k), g, x, w.data_ptr<float>(), b, y);
    transpose_batch(static_cast<const float*>(y), P * g.k, output.data_ptr<float>(), g.k * P, g.n, P, g.k);
    nchw_via_nhwc_calls.fetch_add(1, std::memory_order_relaxed);
  } else {
    forward_nchw(gemm::kernels(), g, input.data_ptr<float>(), w.data_ptr<float>(), b,
                 output.data_ptr<float>(), output.stride(0), output.stride(1));
  }
  forward_calls.fetch_add(1, std::memory_order_relaxed);
  return fastk::handled();
}

namespace {
int64_t im2col_info() { return forward_calls.load(); }
int64_t im2col_nhwc_info() { return nchw_via_nhwc_calls.load(); }
}  // namespace

}  // namespace fastconv::cpu::im2col

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  // _conv2d_cpu_im2col_info() -> int: how many forward passes the implicit-GEMM path
  // (csrc/cpu/conv2d_fast_im2col.cpp) has computed in this process. For tests and benchmarks.
  m.def("_conv2d_cpu_im2col_info() -> int", &fastconv::cpu::im2col::im2col_info);
  // _conv2d_cpu_im2col_nhwc_info() -> int: how many of those were NCHW passes run in the
  // channels_last form on transposed copies (nchw_via_nhwc). For tests.
  m.def("_conv2d_cpu_im2col_nhwc_info() -> int", &fastconv::cpu::im2col::im2col_nhwc_info);
}
