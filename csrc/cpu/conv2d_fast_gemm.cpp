// The packed fp32 GEMM behind 1x1 convolutions (interface and the three GEMM forms in
// cpu/conv2d_fast_gemm.h), BLIS-style:
//  - the reduction (K, and the batch where it is summed over) is one concatenated index, cut
//    into nk equal blocks of at most KC steps (a KC x NR micro-panel of B, at most 32 KiB, stays in L1
//    while a whole MC-row block of A streams past it), or into blocks within each image (see
//    image_blocks); blocks and batches are summed in order, so the result depends on the
//    shape alone (and so do the reduction slices of a small C summed over many steps: runs
//    of K blocks into copies of C, added in order);
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

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "cpu/conv2d_fast_util.h"

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
constexpr int64_t kSharedAFloats = 1 << 20;  // a summed batch's A packed once up to this size (see run())
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

// Reduction slices (see run()): at most kMaxSlices, each of at least kSliceMinBlocks K blocks.
// FASTCONV_CPU_GEMM_SLICES=0 turns them off (measuring, tests).
constexpr int64_t kMaxSlices = 8, kSliceMinBlocks = 8;
bool reduce_slices_enabled() {
  const char* env = std::getenv("FASTCONV_CPU_GEMM_SLICES");
  return env == nullptr || env[0] != '0';
}

bool b_rows_enabled() {
  const char* env = std::getenv("FASTCONV_CPU_GEMM_B_ROWS");
  return env == nullptr || env[0] != '0';
}

// Per-thread packing buffers, reused across calls: slots 0 and
// 1 for a worker's panels of B and A, 2 and 3 for the calling thread's shared A and B (2 also
// for the reduction slices' copies of C, which never come with a shared A), 4 for
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
  TORCH_INTERNAL_ASSERT(!p.accumulate || (p.reduce_batch && p.bias == nullptr));
  const int64_t nout = p.reduce_batch ? 1 : p.batch;
  if (p.M <= 0 || p.N <= 0 || nout <= 0) return;
  const int64_t Ktot = p.reduce_batch ? p.batch * p.K : p.K;
  // Offsets of column j in B and C (Problem::n_group).
  auto b_col = [&](int64_t j) { return p.n_group > 0 ? j / p.n_group * p.b_group + j % p.n_group * p.b_cs : j * p.b_cs; };
  auto c_col = [&](int64_t j) { return p.n_group > 0 ? j / p.n_group * p.c_group + j % p.n_group * p.c_cs : j * p.c_cs; };
  if (Ktot == 0 && p.accumulate) return;  // nothing to add
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
  // Reduction slices: where the batch is summed over and one thread tile would hold all of C (a
  // weight gradient of a layer with few channels over many pixels), the K blocks are cut into
  // nslice equal runs, each an item summing into a copy of C of its own (slice 0: C itself),
  // and the copies are then added to C in slice order. Otherwise the items split C's rows and
  // each reads all of the reduction's B (and packs it again). The count depends on the shape
  // alone, never on the threads, and so do the bits. 2 threads, batch 8, best of 8 interleaved,
  // 1 -> 8 slices: channels_last 64x56x56 -> 64 2.67 -> 1.95 ms, 256x56x56 -> 64 7.73 -> 6.22,
  // -> 128 13.7 -> 12.4, 64x56x56 -> 256 9.16 -> 8.71; NCHW 64x56x56 -> 64 3.28 -> 2.31.
  int64_t nslice = 1;
  if (p.reduce_batch && p.n_group == 0 && mt * MR * nt * NR <= kTileFloats && reduce_slices_enabled()) {
    while (nslice < kMaxSlices && nk / (2 * nslice) >= kSliceMinBlocks) nslice *= 2;
  }
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
  auto items = [&] { return nslice * nout * pm * pn; };
  while (items() % T != 0 && items() < 8 * T && split()) {
  }
  const int64_t tile_m = rows(), tile_n = cols();

  // An operand that does not change with the batch (the weights) and that several items read
  // is packed once for all of them, in parallel, before the items run: panel (kb, i) of A at
  // kb * kc_len * Mpad + i * kc * MR, likewise B. Otherwise each item packs what it reads.
  const int64_t Mpad = mt * MR, Npad = nt * NR;
  // A summed batch's A (the weight gradient's grad_output, all images) is fixed for the call
  // too, and is packed once where it is small (not read in place, at most kSharedAFloats
  // packed): items of other columns then read it from L2/L3 instead of packing it again. 2
  // threads, batch 8, best of 3-4 interleaved, packed per item -> shared, channels_last: 3x3
  // 512x14x14 -> 512 stride 2 (im2col) 11.8 -> 10.9 ms, batch 1 512x7x7 -> 512 1.54 -> 1.47;
  // 1x1 512x7x7 -> 2048 5.41 -> 4.96, 2048x7x7 -> 512 5.26 -> 4.86, 1024x14x14 -> 256 5.23 ->
  // 5.16. Larger ones measured slower, read from memory: 256x56x56 -> 512 stride 2 (3.2 M
  // floats) 11.8 -> 12.2 ms. (B shared likewise: res5a 11.8 -> 11.6 ms, within noise.)
  const bool small_summed_a = p.reduce_batch && nslice == 1 && !image_blocks && Mpad * Ktot <= kSharedAFloats;
  const bool shared_a = ((p.a_batch == 0 && !p.reduce_batch) || small_summed_a) && pn * nout > 1;
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
          for_pieces(p, 0, k0, kc, [&](int64_t b, int64_t k, int64_t len, int64_t off) {  // (a summed batch's A)
            kk.pack_a(p.a + b * p.a_batch + i * p.a_rs + k * p.a_cs, p.a_rs, p.a_cs,
                      static_cast<int>(std::min(MR, p.M - i)), len, apre + k0 * Mpad + i * kc + off * MR);
          });
        } else {
          const int64_t j = (panel - (shared_a ? mt : 0)) * NR;
          pack_b_panel(p.b + k0 * p.b_rs, j, static_cast<int>(std::min(NR, p.N - j)), kc, bpre + k0 * Npad + j * kc);
        }
      }
    });
  }

  float* slice_c = nslice > 1 ? buffer(2, (nslice - 1) * p.M * p.N) : nullptr;  // slices 1..: [M][N]
  at::parallel_for(0, items(), 1, [&](int64_t begin, int64_t end) {
    float* bpack = shared_b ? nullptr : buffer(0, tile_n * kc_len);
    float* apack = shared_a ? nullptr : buffer(1, MC * kc_len);
    for (int64_t it = begin; it < end; ++it) {
      const int64_t in = it % pn, im = (it / pn) % pm, bo = (it / (pn * pm)) % nout, sl = it / (pn * pm * nout);
      const int64_t m0 = im * tile_m, m1 = std::min(p.M, m0 + tile_m);
      const int64_t n0 = in * tile_n, n1 = std::min(p.N, n0 + tile_n);
      if (m0 >= m1 || n0 >= n1) continue;
      const int64_t kb_lo = sl * nk / nslice, kb_hi = (sl + 1) * nk / nslice;  // this slice's K blocks
      // C, or this slice's own dense copy of it
      const bool own = sl > 0;
      float* c = own ? slice_c + (sl - 1) * p.M * p.N : p.c + (p.reduce_batch ? 0 : bo * p.c_batch);
      const int64_t crs = own ? p.N : p.c_rs, ccs = own ? 1 : p.c_cs;
      auto ccol = [&](int64_t j) { return own ? j : c_col(j); };
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
        // (C's own earlier contents count as a first block when accumulating; a slice's copy
        // starts from zero and is added to C at the end)
        const bool add_prior = kb > kb_lo || (p.accumulate && !own);
        const float* bias_k = kb == 0 ? p.bias : nullptr;
        const bool bias_per_row = p.bias_per_row;
        const int64_t a_rs = p.a_rs;
        // (What the micro-kernel calls cannot change is kept in locals, not reloaded after each
        // call: with a reduction of a few dozen steps, as in a batch-1 weight gradient, this loop
        // took 6% of the samples. res5b_branch2b batch 1 channels_last, builds alternated, best
        // of 3 in 6 rounds: 1.46-1.65 -> 1.42-1.56 ms.)
        for (int64_t j = n0; j < n1; j += NR) {
          const int n = static_cast<int>(std::min(NR, n1 - j));
          const bool b_rows = b_in_place && n == NR;
          const float* bp = b_rows ? p.b + k0 * p.b_rs + j : bk + (j - n0) * kc;
          // A tile across column groups goes through a small buffer (written, not added to:
          // then added to C as the micro-kernel adds, c + tile).
          const bool across = !own && !c_uniform && j % p.n_group + n > p.n_group;
          alignas(32) float tile[kMaxTile];
          float* cj = across ? nullptr : c + ic * crs + ccol(j);
          const int64_t rs = across ? NR : crs, cs = across ? 1 : ccs;
          const bool add = add_prior && !across;
          for (int64_t i = 0; i < mc; i += MR) {
            const int m = static_cast<int>(std::min(MR, mc - i));
            const float* bias = bias_k ? bias_k + (bias_per_row ? ic + i : j) : nullptr;
            float* ct = across ? tile : cj + i * crs;
            if (b_rows) {
              kk.micro_b_rows(kc, ak + i * kc, MR, bp, p.b_rs, ct, rs, cs, m, n, add, bias, bias_per_row);
            } else if (a_in_place && m == MR) {
              kk.micro_a_rows(kc, arows + i * a_rs, a_rs, bp, ct, rs, cs, n, add, bias, bias_per_row);
            } else {
              kk.micro(kc, ak + i * kc, bp, ct, rs, cs, m, n, add, bias, bias_per_row);
            }
            for (int ii = 0; across && ii < m; ++ii) {
              for (int jj = 0; jj < n; ++jj) {
                float& e = c[(ic + i + ii) * crs + ccol(j + jj)];
                e = add_prior ? e + tile[ii * NR + jj] : tile[ii * NR + jj];
              }
            }
          }
        }
      };
      if (shared_b) {
        // All of B is packed: K blocks innermost, so a row block of C stays in L1/L2 while
        // all K blocks add to it (same order of the sums as below).
        for (int64_t ic = m0; ic < m1; ic += mc_step) {
          for (int64_t kb = kb_lo; kb < kb_hi; ++kb) {
            const auto [k0, kc] = block(kb);
            row_block(kb, ic, bpre + k0 * Npad + n0 * kc);
          }
        }
        continue;
      }
      for (int64_t kb = kb_lo; kb < kb_hi; ++kb) {  // B's panels for this K block, then the row blocks
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
  if (nslice > 1) {  // C += slices 1, 2, ... in order
    at::parallel_for(0, p.M, 16, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t sl = 1; sl < nslice; ++sl) {
          const float* part = slice_c + (sl - 1) * p.M * p.N + i * p.N;
          for (int64_t j = 0; j < p.N; ++j) p.c[i * p.c_rs + c_col(j)] += part[j];
        }
      }
    });
  }
}

const Kernels& kernels() {
  return fastk::avx512_picked() ? avx512_kernels() : avx2_kernels();
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

}  // namespace fastconv::cpu::gemm
