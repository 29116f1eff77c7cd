// Winograd F(m x m, 3 x 3) convolution on the CPU (contract in cpu/conv2d_fast_winograd.h).
//
// One 3x3 convolution of a source (N, Cin, Hin, Win) into a destination (N, Cout, Hout, Wout),
// dst(y, x) = sum over taps of src(st y - pad + r, st x - pad + s) g(r, s), serves both passes:
// the forward pass (source = input, g = weight; stride st = 1 or 2) and the stride-1 input
// gradient (source = grad_output, g(o = c, i = k, r, s) = weight(k, c, 2 - r, 2 - s), pad = 2 -
// forward pad). The destination is cut into m x m tiles (stride 1: m = 2 or 4, alpha = m + 2;
// stride 2: m = 2, alpha = 5, the even and odd taps transformed apart, see
// conv2d_fast_winograd_avx2.cpp: F2s2). The input gradient of a stride-2 layer (a transposed
// convolution) has the same structure with the transposed transforms (F2s2T): 4 x 4 tiles of
// the input gradient from 3 x 3 patches of grad_output, with the flipped weights. Then
//  1. weights: U[xi][ob][i][B] = (G g G^T)[xi] for every (output channel o = ob * B + lane,
//     input channel i), zero past Cout: one pass in destination order, parallel over blocks;
//  2. per work item (a chunk of tiles x a group of output-channel blocks, independent of the
//     others, so one parallel loop without barriers): the input transform of the chunk's
//     patches into V[xi][tile][Cin] (padding read as zero, never stored), then for each of
//     the alpha^2 values xi and each block ob one GEMM V[xi] x U[xi][ob] (Cin long) by the
//     register-tiled micro-kernel of the direct convolution (fastk::Kernels::conv_row with a
//     single tap, as for 1x1 layers) into M[xi][tile][channels], and finally the output
//     transform of M (plus bias) straight into the destination, NCHW or channels_last.
// Chunks hold few enough tiles that V and M of one item stay in L2; where there are fewer
// chunks than threads, the output channels are split into groups (each group transforms the
// chunk's input again, which is cheap next to the GEMMs). Every destination element is
// computed by the same operations in the same order whatever the chunking, so the results
// do not depend on the number of threads (the chunking does).
//
// For C >= 256 with few tiles, the order is weights-stationary instead (all tiles' V first, then
// each GEMM (xi, ob) over all tiles, then the outputs), so each transformed weight is read once.
//
// Accuracy (fp32, unit normals, C = K = 128, vs an fp64 reference; asserted in
// tests/test_conv2d_winograd.py): max |error| / (eps x rms(output)) is 40 for the direct
// kernel, 17 for F(2x2,3x3) and 423 for F(4x4,3x3) (PyTorch/oneDNN: 44). F(4x4)'s transforms
// scale by up to 8 and 1/24 with mixed signs; its error stays within the worst-case bound of a
// direct fp32 sum taken over each output's tile neighbours. The stride-2 transforms only add
// and subtract: 22 on that problem at stride 2 (12 x 12 -> 6 x 6), against 33 for the direct
// kernel and 10 for the implicit GEMM (oneDNN: 11 NCHW, 36 channels_last).
#include "cpu/conv2d_fast_winograd.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <vector>

#include "cpu/conv2d_fast_kernels.h"
#include "cpu/conv2d_fast_util.h"
#include "cpu/conv2d_fast_winograd_kernels.h"

namespace fastconv::cpu {
namespace {

using fastk::ceil_div;
using fastk::ConvRow;
using fastk::Kernels;

std::atomic<int64_t> forward_calls{0}, input_grad_calls{0};

}  // namespace

// FASTCONV_CPU_WINOGRAD: "0" off, "2" / "4" force that tile size, anything else: the heuristic.
int winograd_forced_tile(int64_t stride) {
  const char* env = std::getenv("FASTCONV_CPU_WINOGRAD");
  if (env == nullptr) return -1;
  if (std::strcmp(env, "0") == 0) return 0;
  if (std::strcmp(env, "2") == 0) return 2;
  if (std::strcmp(env, "4") == 0) return stride == 2 ? 2 : 4;
  return -1;
}

// Stride 2 (the 3x3 stride-2 layers of ResNet-50): 25 products per tile (forward: 2 x 2
// outputs; input gradient: 4 x 4 input pixels) against the direct sum's 9 per output pixel
// (per channel pair), so where the tiles waste few pixels (even output sizes: 0.69 of the
// direct products; 7 x 7: 0.91) it beats the implicit GEMM / direct kernels. Taken where the
// products are at most 3/4 of the direct ones. Forward pass measured (AVX-512, 2 threads, best
// of 6 interleaved, Winograd vs the default path, channels_last): res3a_branch2b batch 8 10.8 vs
// 12.8 ms, batch 1 1.55 vs 1.53 ms; res4a_branch2b batch 8 11.4 vs 12.2, batch 1 1.55 vs 1.95,
// batch 2 2.18 vs 2.44; 64 channels 56 x 56 batch 8 2.61 vs 2.92; AlexNet-like 96 channels 27 x
// 27 (14 x 14 out, batch 4) 0.93 vs 0.98; NCHW res3a / res4a batch 8 14.4 / 12.9 vs 14.6 / 13.7
// ms, batch 1 1.77 / 1.54 vs 1.97 / 1.47. 7 x 7 outputs (res5a_branch2b) measured slower (batch
// 8: 16.0 vs 13.8 ms) and stay on the implicit GEMM.
bool winograd_stride2_pays(int64_t tiles, int64_t output_pixels) {
  return 4 * 25 * tiles <= 3 * 9 * output_pixels;
}

namespace {

// stride2_ok: whether 2 x 2 strides fit (else only 1 x 1).
bool geometry_fits(const ConvGeometry& g, bool stride2_ok) {
  const bool stride1 = g.stride_h == 1 && g.stride_w == 1;
  const bool stride2 = g.stride_h == 2 && g.stride_w == 2;
  return g.groups == 1 && g.r == 3 && g.s == 3 && (stride1 || (stride2_ok && stride2)) && g.dil_h == 1 &&
         g.dil_w == 1 && g.c > 0 && g.k > 0;
}

// Large weights (Cin at least this) take the weights-stationary loop order (see `run`).
constexpr int64_t kStationaryCin = 256;

// The input gradient's GEMMs reduce over the forward's output channels; with more than 128 of
// them the strided implicit GEMM (cpu/conv2d_fast_stride2.h) measured faster: channels_last,
// batch 8, Winograd vs the default path: 64 channels 56 x 56 3.2 vs 4.5 ms, res3a_branch2b
// (128) 8.3 vs 10.1 ms (batch 2: 3.3 vs 3.6, batch 1: 1.65 vs 1.72; NCHW batch 8 / 1 13.1 /
// 1.70 vs 13.6 / 1.64), but 192 channels 28 x 28 7.4 vs 7.0 ms and res4a_branch2b (256) 10.1
// vs 9.4 ms (batch 1: 2.3 vs 2.1; NCHW 1.9 vs 1.5).
constexpr int64_t kStride2InputGradMaxK = 128;

// The tile size m for a source of cin channels into cout channels of n x hout x wout (pad: the
// larger padding), or 0 for the direct kernel. A function of the geometry only. Measured on
// the ResNet-50 3x3 layers (AVX2; numbers in the README): the transformed weights (alpha^2 x
// Cin x Cout) are streamed once per pass, so each of their elements must serve enough tiles,
// more where they no longer fit in L2 (Cin >= 256); F(4x4) does 4x fewer multiplications
// than the direct kernel but has 9/4 the weights of F(2x2) to stream; few channels leave the
// transforms dominant. Padding > 2 leaves outputs (pure bias) whose rounding error would be
// that of their tile neighbours: left to the direct kernel.
//
// With many channels (Cin >= 256) and too few tiles for F(4x4), F(2x2) is taken where its cost,
// per (input, output) channel pair in units of one multiply-add of one pixel, is below the
// direct kernel's 9 per output pixel: 16 per tile for the products plus about 640 for the filter
// transform (measured with the AVX-512 kernels, channels_last, batch 1-3, 2 threads: 380-635 on
// res4b, res5b and AlexNet conv3-5 shapes; the larger value keeps close calls on the direct
// kernel). res4b_branch2b at batch 1 (49 tiles, 1764 direct vs 1424) 1.64 -> 1.23 ms;
// res5b_branch2b at batch 3 (48 tiles, 1323 vs 1408) stays direct: F(2x2) measured 5.6 against
// 5.2 ms.
int pick_tile(int64_t cin, int64_t cout, int64_t n, int64_t hout, int64_t wout, int64_t pad, int64_t stride) {
  const int forced = winograd_forced_tile(stride);
  if (forced >= 0) return forced;
  if (cin < 32 || cout < 32 || pad > 2) return 0;
  if (stride == 2) return winograd_stride2_pays(n * ceil_div(hout, 2) * ceil_div(wout, 2), n * hout * wout) ? 2 : 0;
  const int64_t min_tiles = cin >= kStationaryCin ? 64 : 32;
  if (n * ceil_div(hout, 4) * ceil_div(wout, 4) >= min_tiles) return 4;
  const int64_t tiles2 = n * ceil_div(hout, 2) * ceil_div(wout, 2);
  if (cin >= kStationaryCin) return 16 * tiles2 + 640 < 9 * n * hout * wout ? 2 : 0;
  return tiles2 >= min_tiles ? 2 : 0;
}

bool applies(const ConvGeometry& g, const at::Tensor& src, int64_t cin, int64_t cout, int64_t hout,
             int64_t wout, int64_t stride) {
  return src.scalar_type() == at::kFloat && geometry_fits(g, stride == 2) && fastk::pick_kernels() != nullptr &&
         pick_tile(cin, cout, g.n, hout, wout, std::max(g.pad_h, g.pad_w), stride) != 0;
}

// Scratch buffers reused across calls, per thread (the calling thread holds U, each worker
// its V and M), so large transforms do not page-fault fresh allocations on every call.
float* scratch(int slot, int64_t floats) {
  thread_local std::vector<float> slots[3];
  return fastk::aligned_scratch(slots[slot], floats);
}

// The loop order for cin input channels and `tiles` tiles: all tiles per weight slice (true) or
// chunks of tiles, each through all weights (false); the first keeps alpha^2 x tiles x (Cin +
// Cout) floats of transformed data (each of V and M limited to 16 MiB).
bool weights_stationary(int64_t cin, int64_t coutp, int64_t tiles, int64_t A2) {
  return cin >= kStationaryCin && A2 * tiles * std::max(cin, coutp) <= (int64_t(1) << 22);
}

std::array<int64_t, 4> strides4(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// One 3x3 convolution (see the top of the file). Weights: the forward pass's (K, C, 3, 3)
// tensor; `flipped` for the input gradient (g(o = c, i = k, r, s) = w(k, c, 2 - r, 2 - s)), else
// g(o = k, i = c, r, s) = w(k, c, r, s).
struct Problem {
  // pad_h, pad_w: source rows / columns before the patch of tile 0 (the forward's padding;
  // for the input gradient, see conv2d_input_grad_winograd).
  int64_t n, cin, hin, win, cout, hout, wout, pad_h, pad_w;
  const float* w;
  std::array<int64_t, 4> ws;  // the weight's strides (K, C, R, S), any layout
  bool flipped;
};

// U[xi][ob][i][B] (planes xi u_xi floats apart) = the transformed filters, zero past Cout.
// g(o, i, tap) = w(o, i, tap) forward, w(i, o, 8 - tap) for the input gradient, read through
// the weight's strides (so: between output channels, si: between input channels).
void transform_filters(const Kernels& kk, const wino::Transforms& tf, const Problem& pb, int64_t B,
                       float* U, int64_t u_xi) {
  const int64_t OB = ceil_div(pb.cout, B), cin = pb.cin;
  const int64_t so = pb.flipped ? pb.ws[1] : pb.ws[0], si = pb.flipped ? pb.ws[0] : pb.ws[1];
  // Output channels contiguous and the 9 taps evenly spaced (channels_last weights in the
  // input gradient: memory order k, r, s, c with o = c, i = k): the transform reads each
  // block's taps in place, g(., i, tap t) at base + t * step, with no copy into a buffer.
  // res5b_branch2b / res4b_branch2b input gradients, batch 8, channels_last, 2 threads, best of
  // 24 interleaved: 12.6 -> 11.5 ms and 7.3 -> 6.1 ms, the same bits. (Parallel over input
  // channels instead, each step a whole weight row over all blocks, writes 16 x OB scattered
  // runs per row: 13.4 ms.)
  if (so == 1 && pb.ws[2] == 3 * pb.ws[3]) {
    const int64_t step = pb.flipped ? -pb.ws[3] : pb.ws[3], first = pb.flipped ? 8 * pb.ws[3] : 0;
    const int64_t i_run = 32, i_runs = ceil_div(cin, i_run);
    at::parallel_for(0, OB * i_runs, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> tail(9 * B, 0.0f);  // a last block of fewer than B channels, zero-padded
      for (int64_t it = begin; it < end; ++it) {
        const int64_t ob = it / i_runs, i0 = (it % i_runs) * i_run, i1 = std::min(cin, i0 + i_run);
        const int64_t o0 = ob * B, nvalid = std::min(B, pb.cout - o0);
        for (int64_t i = i0; i < i1; ++i) {
          const float* g = pb.w + i * si + o0 + first;
          int64_t g_tap = step;
          if (nvalid < B) {
            for (int64_t t = 0; t < 9; ++t) {
              std::copy(g + t * step, g + t * step + nvalid, tail.data() + t * B);
            }
            g = tail.data();
            g_tap = B;
          }
          tf.weight(g, g_tap, B, U + (ob * cin + i) * B, u_xi);
        }
      }
    });
    return;
  }
  // Otherwise parallel over (ob, run of input channels). Per (ob, i) the 9 taps of the block's
  // B filters are first copied to a small buffer with the output channel fastest (the transform
  // reads whole vectors). A run of input channels of one block reads B weight rows (or B x 9
  // runs of them) sequentially. (Session 7 first transposed the whole weight, one (i, tap) for
  // all Cout per step: in the forward pass that step reads Cout floats 9 C apart, a page each,
  // and res5b_branch2b (C = K = 512, 8 x 7 x 7, channels_last) took 15.3 ms against 9.4 ms for
  // its input gradient, whose steps read contiguous runs.)
  // Where the input channels are contiguous (channels_last weights in the forward pass: there
  // the output channels are 9 C apart) the run's taps come from 8 x 8 register transposes of
  // B rows x i_run channels per tap, not scalar loads a cache line apart (res5b_branch2b, C =
  // K = 512, 8 x 7 x 7, channels_last, 1 thread, perf: that gather was 16% of the pass's time;
  // the transposes of runs of 32 channels 5.6% of samples, of runs of 128 3.4%, which read
  // each weight row in longer pieces).
  const bool rows_contiguous = si == 1;
  const int64_t i_run = rows_contiguous ? 128 : 32, i_runs = ceil_div(cin, i_run);
  at::parallel_for(0, OB * i_runs, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(i_run * 9 * B);  // [input channel of the run][tap][lane]
    for (int64_t it = begin; it < end; ++it) {
      const int64_t ob = it / i_runs, i0 = (it % i_runs) * i_run, i1 = std::min(cin, i0 + i_run);
      const int64_t o0 = ob * B, nvalid = std::min(B, pb.cout - o0);
      if (rows_contiguous) {
        if (nvalid < B) std::fill(buf.begin(), buf.end(), 0.0f);
        for (int64_t t = 0; t < 9; ++t) {
          const int64_t tap = pb.flipped ? 8 - t : t;
          kk.transpose(pb.w + o0 * so + i0 + (tap / 3) * pb.ws[2] + (tap % 3) * pb.ws[3], so,
                       buf.data() + t * B, 9 * B, nvalid, i1 - i0);
        }
      } else {
        for (int64_t i = i0; i < i1; ++i) {
          float* g = buf.data() + (i - i0) * 9 * B;
          for (int64_t t = 0; t < 9; ++t) {
            const int64_t tap = pb.flipped ? 8 - t : t;
            const float* wt = pb.w + o0 * so + i * si + (tap / 3) * pb.ws[2] + (tap % 3) * pb.ws[3];
            for (int64_t l = 0; l < nvalid; ++l) g[t * B + l] = wt[l * so];
            std::fill(g + t * B + nvalid, g + (t + 1) * B, 0.0f);
          }
        }
      }
      for (int64_t i = i0; i < i1; ++i) {
        tf.weight(buf.data() + (i - i0) * 9 * B, B, B, U + (ob * cin + i) * B, u_xi);
      }
    }
  });
}

void run(const Kernels& kk, const wino::Transforms& tf, const Problem& pb, const at::Tensor& src_t,
         const float* bias, const fastk::Dest& out) {
  const int64_t m = tf.m, A2 = int64_t(tf.alpha) * tf.alpha, B = kk.block;
  const int64_t OB = ceil_div(pb.cout, B), cin = pb.cin, coutp = OB * B;

  // 1. The transformed filters. Planes xi of U, V and M are an odd number of cache lines apart
  //    (fastk::odd_lines): at the power-of-two distances of the plain layout (res5b_branch2b: U
  //    planes 1 MiB apart) the transforms' 16-36 streams shared a few cache sets.
  //    Channels_last forward, batch 8, 2 threads, best of 24 interleaved: res5b_branch2b
  //    8.9 -> 8.2 ms, res4b_branch2b 6.6 -> 6.0 ms.
  const int64_t u_xi = fastk::odd_lines<float>(OB * cin * B);
  float* U = scratch(0, A2 * u_xi);
  transform_filters(kk, tf, pb, B, U, u_xi);

  // 2. The source as NHWC: channels_last data in place, NCHW transposed once.
  const float* src = fastk::nhwc_padded(src_t, 0, pb.hin, 0, pb.win, 0);
  const int64_t TH = ceil_div(pb.hout, m), TW = ceil_div(pb.wout, m), tiles = pb.n * TH * TW;
  const int64_t l_block = fastk::l1_reduction_block(1, B);

  // Tiles [t0, t0 + nt) into V[xi][t - t0][Cin] (value xi at V + xi * v_xi).
  auto input = [&](int64_t t0, int64_t nt, float* V, int64_t v_xi) {
    for (int64_t t = 0; t < nt; ++t) {
      const int64_t tile = t0 + t, n = tile / (TH * TW), ty = (tile / TW) % TH, tx = tile % TW;
      const wino::InputTile in{src + n * pb.hin * pb.win * cin, pb.win * cin, cin,
                               ty * tf.src_step - pb.pad_h, tx * tf.src_step - pb.pad_w, pb.hin, pb.win,
                               cin, V + t * cin, v_xi};
      tf.input(in);
    }
  };
  // M[t][0:B] = V[t][0:Cin] x U[xi][ob] for nt tiles; M rows ld floats apart.
  auto gemm = [&](int64_t xi, int64_t ob, const float* V, int64_t nt, float* M, int64_t ld) {
    const float* a = V;
    const float* b = U + xi * u_xi + ob * cin * B;
    ConvRow job{};
    job.ntaps = 1;
    job.a = &a;
    job.b = &b;
    job.L = cin;
    job.a_pix = cin;
    job.npix = nt;
    job.dst = M;
    job.d_pix = ld;
    job.d_chan = 1;
    job.nvalid = static_cast<int>(B);
    job.l_block = l_block;
    kk.conv_row(job);
  };
  // Output channels [o0, o0 + nch) of tiles [t0, t0 + nt) from M[xi][t - t0][ld].
  auto output = [&](int64_t t0, int64_t nt, const float* M, int64_t m_xi, int64_t ld, int64_t o0,
                    int64_t nch) {
    for (int64_t t = 0; t < nt; ++t) {
      const int64_t tile = t0 + t, n = tile / (TH * TW), ty = (tile / TW) % TH, tx = tile % TW;
      const wino::OutputTile o{M + t * ld, m_xi, nch, bias ? bias + o0 : nullptr,
                               out.at(n, o0, ty * m, tx * m), out.sy, out.sx, out.sc,
                               static_cast<int>(std::min(m, pb.hout - ty * m)),
                               static_cast<int>(std::min(m, pb.wout - tx * m))};
      tf.output(o);
    }
  };

  if (weights_stationary(cin, coutp, tiles, A2)) {
    // Few tiles, many channels: each weight slice U[xi][ob] is read once for all tiles (a
    // chunk would read all of U again). Three passes: inputs, GEMMs per (xi, ob), outputs.
    const int64_t ld = OB * B;
    const int64_t v_xi = fastk::odd_lines<float>(tiles * cin);
    const int64_t m_xi = fastk::odd_lines<float>(tiles * ld);
    float* V = scratch(1, A2 * v_xi);
    float* M = scratch(2, A2 * m_xi);
    at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
      input(begin, end - begin, V + begin * cin, v_xi);
    });
    at::parallel_for(0, A2 * OB, 1, [&](int64_t begin, int64_t end) {
      for (int64_t it = begin; it < end; ++it) {
        const int64_t xi = it / OB, ob = it % OB;
        gemm(xi, ob, V + xi * v_xi, tiles, M + xi * m_xi + ob * B, ld);
      }
    });
    at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
      output(begin, end - begin, M + begin * ld, m_xi, ld, 0, pb.cout);
    });
    return;
  }

  // Chunk: V of one chunk (alpha^2 x tiles x Cin) within about `budget` floats, so the input
  // transform's output is still in L2 when the GEMMs read it.
  const int64_t budget = 49152;
  const int64_t max_chunk = std::clamp<int64_t>(budget / (A2 * cin), 6, 128);
  const int64_t threads = at::get_num_threads();
  int64_t chunks = ceil_div(tiles, max_chunk);
  const int64_t chunk = ceil_div(tiles, chunks);
  chunks = ceil_div(tiles, chunk);
  // Groups of output-channel blocks: M (alpha^2 x tiles x channels) within the budget too, and
  // enough work items for the threads.
  const int64_t groups_for_threads = chunks >= 2 * threads ? 1 : ceil_div(2 * threads, chunks);
  const int64_t groups_for_l2 = ceil_div(OB, std::max<int64_t>(1, budget / (A2 * chunk * B)));
  const int64_t ngroups = std::min(OB, std::max(groups_for_threads, groups_for_l2));
  const int64_t group = ceil_div(OB, ngroups);
  const int64_t nitems = chunks * ceil_div(OB, group);
  const int64_t v_xi = fastk::odd_lines<float>(chunk * cin);
  const int64_t m_xi = fastk::odd_lines<float>(chunk * group * B);
  at::parallel_for(0, nitems, 1, [&](int64_t begin, int64_t end) {
    float* V = scratch(1, A2 * v_xi);
    float* M = scratch(2, A2 * m_xi);
    for (int64_t it = begin; it < end; ++it) {
      const int64_t ci = it / ceil_div(OB, group), gi = it % ceil_div(OB, group);
      const int64_t t0 = ci * chunk, nt = std::min(chunk, tiles - t0);
      const int64_t ob0 = gi * group, ob1 = std::min(OB, ob0 + group);
      const int64_t ld = (ob1 - ob0) * B;  // channels per tile in M
      input(t0, nt, V, v_xi);
      for (int64_t xi = 0; xi < A2; ++xi) {
        for (int64_t ob = ob0; ob < ob1; ++ob) {
          gemm(xi, ob, V + xi * v_xi, nt, M + xi * m_xi + (ob - ob0) * B, ld);
        }
      }
      const int64_t o0 = ob0 * B;
      output(t0, nt, M, m_xi, ld, o0, std::min(pb.cout, ob1 * B) - o0);
    }
  });
}

}  // namespace

bool winograd_applies(const ConvGeometry& g, const at::Tensor& input) {
  return applies(g, input, g.c, g.k, g.p, g.q, g.stride_h);
}

bool winograd_input_grad_applies(const ConvGeometry& g, const at::Tensor& grad_output) {
  if (g.stride_h != 2) return applies(g, grad_output, g.k, g.c, g.h, g.w, 1);
  // Stride 2: tiles of 4 x 4 input pixels start at the same parity in both directions (the
  // transform depends on it). Forced: at any padding, as for the forward pass.
  const int forced = winograd_forced_tile(2);
  if (forced == 0 || grad_output.scalar_type() != at::kFloat || !geometry_fits(g, true) ||
      fastk::pick_kernels() == nullptr || (g.pad_h - g.pad_w) % 2 != 0) {
    return false;
  }
  return forced > 0 || (g.k >= 32 && g.k <= kStride2InputGradMaxK && g.c >= 32 && std::max(g.pad_h, g.pad_w) <= 2 &&
                        winograd_stride2_pays(g.n * ceil_div(g.h, 4) * ceil_div(g.w, 4), g.n * g.p * g.q));
}

bool conv2d_forward_winograd(const ConvGeometry& g, const at::Tensor& input, const at::Tensor& weight,
                             const at::Tensor& bias, at::Tensor& output) {
  const Kernels& kk = *fastk::pick_kernels();
  const wino::Transforms& tf =
      wino::avx2_transforms(pick_tile(g.c, g.k, g.n, g.p, g.q, std::max(g.pad_h, g.pad_w), g.stride_h), g.stride_h);
  const Problem pb{g.n, g.c, g.h, g.w, g.k, g.p, g.q, g.pad_h, g.pad_w, weight.data_ptr<float>(),
                   strides4(weight), false};
  run(kk, tf, pb, input, bias.defined() ? bias.data_ptr<float>() : nullptr, fastk::Dest(output));
  forward_calls.fetch_add(1, std::memory_order_relaxed);
  return fastk::handled();
}

bool conv2d_input_grad_winograd(const ConvGeometry& g, const at::Tensor& grad_output,
                                const at::Tensor& weight, at::Tensor& grad_input) {
  const Kernels& kk = *fastk::pick_kernels();
  // Stride 2: tile t covers input pixels [4 t, 4 t + 4), i.e. padded columns from 4 t + pad,
  // which read grad_output from 2 t + (pad even ? pad / 2 - 1 : (pad - 1) / 2) on (see F2s2T in
  // conv2d_fast_winograd_avx2.cpp); Problem's pad is minus that offset.
  const bool stride2 = g.stride_h == 2;
  const wino::Transforms& tf =
      stride2 ? wino::avx2_transforms_stride2_input_grad(g.pad_h % 2 == 1)
              : wino::avx2_transforms(pick_tile(g.k, g.c, g.n, g.h, g.w, std::max(g.pad_h, g.pad_w), 1), 1);
  const int64_t pad_h = stride2 ? 1 - (g.pad_h + 1) / 2 : 2 - g.pad_h;
  const int64_t pad_w = stride2 ? 1 - (g.pad_w + 1) / 2 : 2 - g.pad_w;
  const Problem pb{g.n, g.k, g.p, g.q, g.c, g.h, g.w, pad_h, pad_w, weight.data_ptr<float>(), strides4(weight), true};
  run(kk, tf, pb, grad_output, nullptr, fastk::Dest(grad_input));
  input_grad_calls.fetch_add(1, std::memory_order_relaxed);
  return fastk::handled();
}

namespace {
std::tuple<int64_t, int64_t> winograd_info() { return {forward_calls.load(), input_grad_calls.load()}; }
}  // namespace

}  // namespace fastconv::cpu

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  // _conv2d_cpu_winograd_info() -> (forward, input_grad): how many forward passes and input
  // gradients the Winograd CPU convolution has computed in this process. For tests and the
  // benchmark report.
  m.def("_conv2d_cpu_winograd_info() -> (int, int)", &fastconv::cpu::winograd_info);
}
