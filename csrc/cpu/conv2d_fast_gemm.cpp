// The packed fp32 GEMM behind 1x1 convolutions (interface and the three GEMM forms in
// cpu/conv2d_fast_gemm.h), BLIS-style:
//  - the reduction (K, and the batch where it is summed over) is one concatenated index, cut
//    into nk equal blocks of at most KC steps (a KC x NR micro-panel of B, at most 32 KiB, stays in L1
//    while a whole MC-row block of A streams past it), or into blocks within each image (see
//    image_blocks); blocks and batches are summed in order, so the result depends on the
//    shape alone;
//  - C is cut into thread tiles (one work item each, split over at::parallel_for) of at most
//    kTileFloats elements (a tile that the K blocks revisit stays in L2); within an item, per
//    K block, the item's thread packs its columns of B (KC x tile width, in L2/L3), then per
//    MC rows of A (MC x KC, in L2) packs them and runs the MR x NR micro-kernel over them;
//  - an operand that does not depend on the image (the weights) and that several items read
//    is packed once, in parallel, before the items run; with all of B packed that way the
//    K blocks become the innermost loop (a row block of C stays in cache across them);
//  - packing reads any strides: the unit-stride side is copied or transposed in registers;
//    an A with unit stride along the reduction is not packed but read in place by
//    Kernels::micro_a_rows (broadcasts need no contiguous panel);
//  - B's and C's columns may come in groups (Problem::n_group: images folded into the
//    columns, or the strided pixels of one output row each).
// The thread tiles only decide which thread computes an element, never how, so the bits are
// the same at any thread count.
#include "cpu/conv2d_fast_gemm.h"

#include <ATen/Parallel.h>
#include <ATen/ops/from_blob.h>

#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include "cpu/conv2d_fast_util.h"
#include "cpu/layout_transpose.h"

namespace fastconv::cpu::gemm {
namespace {

using fastk::ceil_div;

// Reduction steps per block: KC x NR x 4 B at most 32 KiB (2/3 of a 48 KiB L1): 256 for the 6 x
// 16 and 6 x 32 tiles, 128 for the 6 x 64 one (2 threads, 6 x 64, KC 256 -> 128: 1x1 channels_last
// forward 512x28x28 -> 128 5.92 -> 5.64 ms, 1024x14x14 -> 256 5.51 -> 5.36, 2048x7x7 -> 512 6.09
// -> 5.87, 256x56x56 -> 64 7.47 -> 7.64).
constexpr int64_t kBPanelFloats = 8192;
constexpr int64_t MC = 120;  // rows of A per packed block: MC x KC x 4 B = 120 KiB (L2: 512 KiB)
constexpr int64_t kTileFloats = 64 << 10;  // C elements per thread tile (256 KiB)
constexpr int64_t kMaxTile = 6 * 64;       // register tile elements (mr x nr) at most
constexpr int64_t kImageBlockMin = 128;    // shortest image whose pixels get K blocks of their own

// Calls f(batch, first step, steps, offset) for the pieces of the concatenated reduction range
// [k0, k0 + kc) (offset: steps before the piece within the range).
template <class F>
void for_pieces(const Problem& p, int64_t b_out, int64_t k0, int64_t kc, F&& f) {
  if (!p.reduce_batch) {
    f(b_out, k0, kc, int64_t{0});
    return;
  }
  for (int64_t done = 0; done < kc;) {
    const int64_t k = k0 + done, b = k / p.K, kb = k % p.K;
    const int64_t len = std::min(p.K - kb, kc - done);
    f(b, kb, len, done);
    done += len;
  }
}

// Whether the reduction is cut into K blocks within each image (see run()).
bool image_blocks_apply(const Problem& p) { return p.reduce_batch && p.a_cs == 1 && p.K >= kImageBlockMin; }

bool b_rows_enabled() {
  const char* env = std::getenv("FASTCONV_CPU_GEMM_B_ROWS");
  return env == nullptr || env[0] != '0';
}

// Per-thread packing buffers, reused across calls: slots 0 and
// 1 for a worker's panels of B and A, 2 and 3 for the calling thread's shared A and B, 4 for
// the parts of a B panel across column groups.
float* buffer(int slot, int64_t floats) {
  thread_local std::vector<float> bufs[5];
  return fastk::aligned_scratch(bufs[slot], floats);
}

}  // namespace

void run(const Problem& p) {
  const Kernels& kk = kernels_for(p);
  const int64_t MR = kk.mr, NR = kk.nr, KC = std::min<int64_t>(256, kBPanelFloats / NR);
  TORCH_INTERNAL_ASSERT(MR * NR <= kMaxTile);
  const int64_t nout = p.reduce_batch ? 1 : p.batch;
  if (p.M <= 0 || p.N <= 0 || nout <= 0) return;
  const int64_t Ktot = p.reduce_batch ? p.batch * p.K : p.K;
  // Offsets of column j in B and C (Problem::n_group).
  auto b_col = [&](int64_t j) { return p.n_group > 0 ? j / p.n_group * p.b_group + j % p.n_group * p.b_cs : j * p.b_cs; };
  auto c_col = [&](int64_t j) { return p.n_group > 0 ? j / p.n_group * p.c_group + j % p.n_group * p.c_cs : j * p.c_cs; };
  if (Ktot == 0) {  // an empty sum: the bias, or zero
    for (int64_t b = 0; b < nout; ++b) {
      for (int64_t i = 0; i < p.M; ++i) {
        for (int64_t j = 0; j < p.N; ++j) {
          p.c[b * p.c_batch + i * p.c_rs + c_col(j)] = p.bias ? p.bias[p.bias_per_row ? i : j] : 0.0f;
        }
      }
    }
    return;
  }
  // K blocks: nk equal blocks of the concatenated reduction, or, where the batch is summed over
  // and A has unit stride along k (NCHW weight gradient: A = dY_n[K, P]), blocks that never span
  // two images (nk_image per image), so the micro-kernel can read A's rows in place. (Not for
  // short images: blocks of 49 steps would make C's tile revisited once per image.)
  const bool image_blocks = image_blocks_apply(p);
  const int64_t nk_image = image_blocks ? ceil_div(p.K, KC) : 1;
  const int64_t nk = image_blocks ? p.batch * nk_image : ceil_div(Ktot, KC);
  const int64_t kc_len = image_blocks ? ceil_div(p.K, nk_image) : ceil_div(Ktot, nk);
  // First step (in the concatenated reduction) and length of K block kb.
  auto block = [&](int64_t kb) -> std::pair<int64_t, int64_t> {
    if (!image_blocks) return {kb * kc_len, std::min(kc_len, Ktot - kb * kc_len)};
    const int64_t b = kb / nk_image, k = (kb % nk_image) * kc_len;
    return {b * p.K + k, std::min(kc_len, p.K - k)};
  };

  // Packs B's panel of columns [j, j + n), len steps from src (B at its first step), into dst;
  // a panel across column groups part by part (each part packed alone, then copied in).
  // (columns uniformly spaced despite the groups: one stride, no parts)
  const bool b_uniform = p.n_group == 0 || p.b_group == p.n_group * p.b_cs;
  const bool c_uniform = p.n_group == 0 || p.c_group == p.n_group * p.c_cs;
  auto pack_b_panel = [&](const float* src, int64_t j, int n, int64_t len, float* dst) {
    if (b_uniform || j % p.n_group + n <= p.n_group) {
      kk.pack_b(src + b_col(j), p.b_rs, p.b_cs, n, len, dst);
      return;
    }
    std::fill(dst, dst + len * NR, 0.0f);
    float* part = buffer(4, len * NR);
    for (int jj = 0; jj < n;) {
      const int np = static_cast<int>(std::min<int64_t>(n - jj, p.n_group - (j + jj) % p.n_group));
      kk.pack_b(src + b_col(j + jj), p.b_rs, p.b_cs, np, len, part);
      for (int64_t k = 0; k < len; ++k) std::copy(part + k * NR, part + k * NR + np, dst + k * NR + jj);
      jj += np;
    }
  };

  // Thread tiles: pm x pn per output matrix, split (the longer side first) until a tile holds
  // at most kTileFloats elements and the items divide evenly among the threads (or are many).
  const int64_t mt = ceil_div(p.M, MR), nt = ceil_div(p.N, NR);
  int64_t pm = 1, pn = 1;
  auto rows = [&] { return ceil_div(mt, pm) * MR; };
  auto cols = [&] { return ceil_div(nt, pn) * NR; };
  // (Splitting a weight gradient's columns first, so that each item packs only its own
  // columns of B, measured slower: items of one 16-column panel read all of A in place with no
  // reuse, res4a_branch2c NCHW wgrad 83 -> 49 GFLOP/s at 1 thread.)
  auto split = [&] {
    if ((rows() >= cols() && pm < mt) || pn >= nt) {
      if (pm >= mt) return false;
      ++pm;
    } else {
      ++pn;
    }
    return true;
  };
  while (rows() * cols() > kTileFloats && split()) {
  }
  const int64_t T = at::get_num_threads();
  while ((nout * pm * pn) % T != 0 && nout * pm * pn < 8 * T && split()) {
  }
  const int64_t tile_m = rows(), tile_n = cols();

  // An operand that does not change with the batch (the weights) and that several items read
  // is packed once for all of them, in parallel, before the items run: panel (kb, i) of A at
  // kb * kc_len * Mpad + i * kc * MR, likewise B. Otherwise each item packs what it reads.
  const int64_t Mpad = mt * MR, Npad = nt * NR;
  const bool shared_a = p.a_batch == 0 && !p.reduce_batch && pn * nout > 1;
  const bool shared_b = p.b_batch == 0 && !p.reduce_batch && pm * nout > 1;
  // A with unit stride along the reduction and one image per output (channels_last forward and
  // input gradient: the activations) is read in place by the micro-kernel (broadcasts need no
  // contiguous panel), which saves packing each element once (as much work as 16-64 of its
  // multiply-adds where N is 64-256); only a short last row panel is packed.
  const bool a_in_place = !shared_a && (!p.reduce_batch || image_blocks) && p.a_cs == 1 && kk.micro_a_rows != nullptr;
  // B with unit stride along the columns, rows evenly spaced across the batch, summed over the
  // batch (the channels_last weight gradient's X) is read in place where the micro-kernel can
  // (Kernels::micro_b_rows, AVX-512), not packed per K block by every item; a short last
  // column panel is still packed. Only where B has at least as many columns as A has rows:
  // 1 thread, CPU time, batch 8, packed -> in place: 256x56x56 -> 64 11.3 -> 10.0 ms, 512x28x28
  // -> 128 11.4 -> 9.4 ms, 1024x14x14 -> 256 10.9 -> 10.1 ms, but 64x56x56 -> 256 11.4 -> 12.0
  // ms (A, packed by every item, is the larger operand there). (A read in place as well, six
  // floats per step a_cs apart: no gain at 256 -> 64, 8.0 -> 12.1 ms at 512x7x7 -> 2048, whose
  // 8 KiB steps alias in L1.) FASTCONV_CPU_GEMM_B_ROWS=0 packs B as before.
  const bool b_in_place = kk.micro_b_rows != nullptr && !shared_b && !a_in_place && p.reduce_batch &&
                          p.b_cs == 1 && p.n_group == 0 && (p.batch == 1 || p.b_batch == p.K * p.b_rs) &&
                          p.N >= p.M && b_rows_enabled();
  float* apre = shared_a ? buffer(2, Mpad * Ktot) : nullptr;
  float* bpre = shared_b ? buffer(3, Npad * Ktot) : nullptr;
  const int64_t npre = nk * ((shared_a ? mt : 0) + (shared_b ? nt : 0));
  if (npre > 0) {
    at::parallel_for(0, npre, 8, [&](int64_t begin, int64_t end) {
      for (int64_t it = begin; it < end; ++it) {
        const int64_t kb = it % nk, panel = it / nk;
        const auto [k0, kc] = block(kb);
        if (shared_a && panel < mt) {
          const int64_t i = panel * MR;
          kk.pack_a(p.a + i * p.a_rs + k0 * p.a_cs, p.a_rs, p.a_cs, static_cast<int>(std::min(MR, p.M - i)), kc,
                    apre + k0 * Mpad + i * kc);
        } else {
          const int64_t j = (panel - (shared_a ? mt : 0)) * NR;
          pack_b_panel(p.b + k0 * p.b_rs, j, static_cast<int>(std::min(NR, p.N - j)), kc, bpre + k0 * Npad + j * kc);
        }
      }
    });
  }

  at::parallel_for(0, nout * pm * pn, 1, [&](int64_t begin, int64_t end) {
    float* bpack = shared_b ? nullptr : buffer(0, tile_n * kc_len);
    float* apack = shared_a ? nullptr : buffer(1, MC * kc_len);
    for (int64_t it = begin; it < end; ++it) {
      const int64_t in = it % pn, im = (it / pn) % pm, bo = it / (pn * pm);
      const int64_t m0 = im * tile_m, m1 = std::min(p.M, m0 + tile_m);
      const int64_t n0 = in * tile_n, n1 = std::min(p.N, n0 + tile_n);
      if (m0 >= m1 || n0 >= n1) continue;
      float* c = p.c + (p.reduce_batch ? 0 : bo * p.c_batch);
      // Row blocks of equal size (<= MC): a short last block would stream all of B's panels
      // from L2/L3 for a few rows (128 rows: 66 + 62, not 120 + 8).
      const int64_t mc_step = ceil_div(ceil_div(m1 - m0, ceil_div(m1 - m0, MC)), MR) * MR;
      // Rows [ic, ic + mc) x the item's columns for K block kb, B's panels at bk + (j - n0) * kc.
      auto row_block = [&](int64_t kb, int64_t ic, const float* bk) {
        const auto [k0, kc] = block(kb);
        const int64_t mc = std::min(mc_step, m1 - ic);
        const float* ak = shared_a ? apre + k0 * Mpad + ic * kc : apack;  // A's panels: ak + i * kc
        // A's rows in place (full panels), else packed
        const int64_t a_image = p.reduce_batch ? k0 / p.K : bo;  // (one image per block, see block())
        const float* arows = a_in_place ? p.a + a_image * p.a_batch + ic * p.a_rs + (k0 - (p.reduce_batch ? a_image * p.K : 0)) : nullptr;
        if (!shared_a && !a_in_place) {
          for_pieces(p, bo, k0, kc, [&](int64_t b, int64_t k, int64_t len, int64_t off) {
            // (all panels of the block; each piece of the reduction at its offset in the panels,
            // whose panel q then starts at apack + q * kc * MR)
            const float* src = p.a + b * p.a_batch + ic * p.a_rs + k * p.a_cs;
            if (len == kc) {
              kk.pack_a_panels(src, p.a_rs, p.a_cs, static_cast<int>(mc), kc, apack);
              return;
            }
            for (int64_t i = 0; i < mc; i += MR) {
              kk.pack_a(src + i * p.a_rs, p.a_rs, p.a_cs, static_cast<int>(std::min(MR, mc - i)), len,
                        apack + i * kc + off * MR);
            }
          });
        } else if (a_in_place && mc % MR != 0) {  // the short last panel
          const int64_t i = mc / MR * MR;
          kk.pack_a(arows + i * p.a_rs, p.a_rs, 1, static_cast<int>(mc - i), kc, apack + i * kc);
        }
        for (int64_t j = n0; j < n1; j += NR) {
          const int n = static_cast<int>(std::min(NR, n1 - j));
          const bool b_rows = b_in_place && n == NR;
          const float* bp = b_rows ? p.b + k0 * p.b_rs + j : bk + (j - n0) * kc;
          for (int64_t i = 0; i < mc; i += MR) {
            const int m = static_cast<int>(std::min(MR, mc - i));
            const float* bias = (kb == 0 && p.bias) ? p.bias + (p.bias_per_row ? ic + i : j) : nullptr;
            // A tile across column groups goes through a small buffer (written, not added to:
            // then added to C as the micro-kernel adds, c + tile).
            const bool across = !c_uniform && j % p.n_group + n > p.n_group;
            alignas(32) float tile[kMaxTile];
            float* ct = across ? tile : c + (ic + i) * p.c_rs + c_col(j);
            const int64_t rs = across ? NR : p.c_rs, cs = across ? 1 : p.c_cs;
            const bool add = kb > 0 && !across;
            if (b_rows) {
              kk.micro_b_rows(kc, ak + i * kc, MR, bp, p.b_rs, ct, rs, cs, m, n, add, bias, p.bias_per_row);
            } else if (a_in_place && m == MR) {
              kk.micro_a_rows(kc, arows + i * p.a_rs, p.a_rs, bp, ct, rs, cs, n, add, bias, p.bias_per_row);
            } else {
              kk.micro(kc, ak + i * kc, bp, ct, rs, cs, m, n, add, bias, p.bias_per_row);
            }
            for (int ii = 0; across && ii < m; ++ii) {
              for (int jj = 0; jj < n; ++jj) {
                float& e = c[(ic + i + ii) * p.c_rs + c_col(j + jj)];
                e = kb > 0 ? e + tile[ii * NR + jj] : tile[ii * NR + jj];
              }
            }
          }
        }
      };
      if (shared_b) {
        // All of B is packed: K blocks innermost, so a row block of C stays in L1/L2 while
        // all K blocks add to it (same order of the sums as below).
        for (int64_t ic = m0; ic < m1; ic += mc_step) {
          for (int64_t kb = 0; kb < nk; ++kb) {
            const auto [k0, kc] = block(kb);
            row_block(kb, ic, bpre + k0 * Npad + n0 * kc);
          }
        }
        continue;
      }
      for (int64_t kb = 0; kb < nk; ++kb) {  // B's panels for this K block, then the row blocks
        const auto [k0, kc] = block(kb);
        for (int64_t j = n0; j < n1; j += NR) {
          float* dst = bpack + (j - n0) * kc;
          const int n = static_cast<int>(std::min(NR, n1 - j));
          if (b_in_place && n == NR) continue;  // read in place by micro_b_rows
          for_pieces(p, bo, k0, kc, [&](int64_t b, int64_t k, int64_t len, int64_t off) {
            pack_b_panel(p.b + b * p.b_batch + k * p.b_rs, j, n, len, dst + off * NR);
          });
        }
        for (int64_t ic = m0; ic < m1; ic += mc_step) row_block(kb, ic, bpack);
      }
    }
  });
}

const Kernels& kernels() {
  const fastk::Kernels* direct = fastk::pick_kernels();
  return direct != nullptr && std::strcmp(direct->isa, "avx512") == 0 ? avx512_kernels()
                                                                       : avx2_kernels();
}

// 2 threads, batch 8, 6 x 32 -> 6 x 64 tile (each with its own KC): 1x1 channels_last forward
// 512x28x28 -> 128 7.60 -> 6.14 ms, 1024x14x14 -> 256 6.69 -> 5.88, 2048x7x7 -> 512 6.99 ->
// 6.25; input gradient 1024x14x14 -> 256 6.48 -> 5.58, 2048x7x7 -> 512 7.22 -> 5.97; weight
// gradient 256x56x56 -> 512 stride 2 17.7 -> 15.3 (channels_last), 512x7x7 -> 2048 8.70 -> 7.23
// (NCHW); but the NCHW weight gradient with per-image K blocks, 256x56x56 -> 64 9.15 -> 11.3
// and 64x56x56 -> 256 8.10 -> 11.3 (twice the K blocks per image at the wide tile's KC).
const Kernels& kernels_for_columns(int64_t n) {
  const Kernels& base = kernels();
  if (&base != &avx512_kernels()) return base;
  const char* env = std::getenv("FASTCONV_CPU_GEMM_NR");
  if (env != nullptr && std::strcmp(env, "32") == 0) return base;
  if (env != nullptr && std::strcmp(env, "64") == 0) return avx512_wide_kernels();
  return n % 64 == 0 || n % 64 > 32 ? avx512_wide_kernels() : base;
}

const Kernels& kernels_for(const Problem& p) {
  const char* env = std::getenv("FASTCONV_CPU_GEMM_NR");
  return image_blocks_apply(p) && env == nullptr ? kernels() : kernels_for_columns(p.N);
}

// ---------------------------------------------------------------------------------------------
// The 1x1 convolution drivers.

namespace {

std::atomic<int64_t> calls[3];  // forward, input gradient, weight gradient

// FASTCONV_CPU_GEMM=0 turns the GEMM path off (1x1 layers then take the direct kernels of
// cpu/conv2d_fast*.cpp), for measuring one against the other.
bool gemm_enabled() {
  const char* env = std::getenv("FASTCONV_CPU_GEMM");
  return env == nullptr || env[0] != '0';
}
// FASTCONV_CPU_GEMM=all also sends the channels_last forward passes that keep the direct kernel
// (forward_applies) to the GEMM, for measuring one against the other.
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
// -> 512 stride 2 8.08 -> 8.98 ms.
bool forward_applies(const ConvGeometry& g, const at::Tensor& input) {
  const bool wide_tile_few_channels = kernels().nr >= 32 && g.c <= 64;
  return applies(g, input) &&
         (input.is_contiguous() || g.h * g.w < 56 * 56 || wide_tile_few_channels || gemm_everywhere());
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
