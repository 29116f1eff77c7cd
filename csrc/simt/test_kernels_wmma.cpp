// WMMA kernels that test the emulator's nvcuda::wmma (tests/test_simt_wmma.py), registered as
// torch.ops.fastconv_simt._test_wmma*: a tiled GEMM for every emulated shape and type, and
// planted misuse the emulator must report.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "simt/simt.h"
#include "cuda/launch/launch.h"

#include <mma.h>  // csrc/simt/mma.h in this build, as the real header is under nvcc

namespace simt_tests {
namespace wmma = nvcuda::wmma;

// Planted misuse in gemm (0: none).
enum Planted : int {
  kNone = 0,
  kLaneSkipsLoad = 1,      // lane 5 skips the load of B and goes on to mma_sync
  kMisaligned = 2,         // A's pointer moved by one element
  kLanePointer = 3,        // lane 3 loads A from another address
  kLaneFragment = 4,       // lane 7 negates one element of its A fragment
  kLaneExits = 5,          // lane 9 returns before the first collective
  kNoTf32Convert = 6,      // not planted misuse: tf32 operands without __float_to_tf32
  kLaneBarrier = 7,        // lane 11 waits at __syncthreads while its warp loads: deadlock
};

// D = A * B + C, one warp per M x N output tile, K in steps of K. A, B, C, D are given with
// their leading dimensions; A and B in the memory layout of LA / LB, C and D row- or
// col-major. tf32: the A and B fragments go through __float_to_tf32, as CUDA asks.
template <typename T, int M, int N, int K, typename LA, typename LB>
__global__ void gemm(const typename wmma::fragment<wmma::matrix_a, M, N, K, T, LA>::storage_element_type* a,
                     const typename wmma::fragment<wmma::matrix_b, M, N, K, T, LB>::storage_element_type* b,
                     const float* c, float* d, int mt, int nt, int kt, int lda, int ldb, int ldc,
                     int ldd, bool c_col, bool d_col, int planted) {
  constexpr bool a_col = std::is_same_v<LA, wmma::col_major>;
  constexpr bool b_col = std::is_same_v<LB, wmma::col_major>;
  const unsigned lane = threadIdx.x % 32;
  const int tile = int(blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32);
  if (tile >= mt * nt) return;  // whole warps
  if (planted == kLaneExits && lane == 9) return;
  if (planted == kLaneBarrier && lane == 11) __syncthreads();
  const int ti = tile / nt, tj = tile % nt;
  wmma::fragment<wmma::accumulator, M, N, K, float> acc;
  const float* c_tile = c + (c_col ? size_t(tj) * N * ldc + ti * M : size_t(ti) * M * ldc + tj * N);
  wmma::load_matrix_sync(acc, c_tile, unsigned(ldc), c_col ? wmma::mem_col_major : wmma::mem_row_major);
  for (int tk = 0; tk < kt; ++tk) {
    wmma::fragment<wmma::matrix_a, M, N, K, T, LA> fa;
    wmma::fragment<wmma::matrix_b, M, N, K, T, LB> fb;
    auto a_tile = a + (a_col ? size_t(tk) * K * lda + ti * M : size_t(ti) * M * lda + tk * K);
    const auto b_tile = b + (b_col ? size_t(tj) * N * ldb + tk * K : size_t(tk) * K * ldb + tj * N);
    if (planted == kMisaligned) a_tile += 1;
    if (planted == kLanePointer && lane == 3) a_tile += 16;
    wmma::load_matrix_sync(fa, a_tile, unsigned(lda));
    if (!(planted == kLaneSkipsLoad && lane == 5)) wmma::load_matrix_sync(fb, b_tile, unsigned(ldb));
    if constexpr (std::is_same_v<T, wmma::precision::tf32>) {
      if (planted != kNoTf32Convert)
        for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
      if (planted != kNoTf32Convert)
        for (int i = 0; i < fb.num_elements; ++i) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
    }
    if (planted == kLaneFragment && lane == 7) fa.x[0] = -fa.x[0];
    wmma::mma_sync(acc, fa, fb, acc);
  }
  float* d_tile = d + (d_col ? size_t(tj) * N * ldd + ti * M : size_t(ti) * M * ldd + tj * N);
  wmma::store_matrix_sync(d_tile, acc, unsigned(ldd), d_col ? wmma::mem_col_major : wmma::mem_row_major);
}

// Warp 1 stages a 16x16 half tile of A in dynamic shared memory, warp 0 multiplies it by B
// (16x16, row-major) into D. barrier = false plants the missing __syncthreads between the two.
__global__ void staged(const __half* a, const __half* b, float* d, bool barrier) {
  FC_DYNAMIC_SHARED(__half, tile);
  if (threadIdx.x >= 32)
    for (int i = int(threadIdx.x) - 32; i < 256; i += 32) tile[i] = a[i];
  if (barrier) __syncthreads();
  if (threadIdx.x < 32) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    // the load is warp 0's first collective: under the forward schedule the last lane to
    // arrive completes it before warp 1 has run at all
    wmma::load_matrix_sync(fa, tile, 16);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::fill_fragment(acc, 0.0f);
    wmma::mma_sync(acc, fa, fb, acc);
    wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
  }
}

}  // namespace simt_tests

namespace {
namespace K = simt_tests;
namespace wmma = nvcuda::wmma;

// Memory with `layout`'s storage of the logical matrix x, and its leading dimension.
std::pair<at::Tensor, int> stored(const at::Tensor& x, bool col) {
  return col ? std::make_pair(x.t().contiguous(), int(x.size(0)))
             : std::make_pair(x.contiguous(), int(x.size(1)));
}

template <typename T, int M, int N, int K_, typename LA, typename LB, typename S>
void run_gemm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, at::Tensor& d,
              bool c_col, bool d_col, int64_t warps, int64_t planted) {
  const auto [as, lda] = stored(a, std::is_same_v<LA, wmma::col_major>);
  const auto [bs, ldb] = stored(b, std::is_same_v<LB, wmma::col_major>);
  const auto [cs, ldc] = stored(c, c_col);
  at::Tensor ds = d_col ? at::full({d.size(1), d.size(0)}, std::nan(""), d.options())
                        : at::full_like(d, std::nan(""));
  const int mt = int(a.size(0) / M), nt = int(b.size(1) / N), kt = int(a.size(1) / K_);
  const int blocks = int((mt * nt + warps - 1) / warps);
  ::simt::launch(K::gemm<T, M, N, K_, LA, LB>, dim3(unsigned(blocks)), dim3(unsigned(32 * warps)), 0,
                 reinterpret_cast<const S*>(as.const_data_ptr()),
                 reinterpret_cast<const S*>(bs.const_data_ptr()), cs.const_data_ptr<float>(),
                 ds.mutable_data_ptr<float>(), mt, nt, kt, lda, ldb, ldc, int(ds.size(1)), c_col,
                 d_col, int(planted));
  d.copy_(d_col ? ds.t() : ds);
}

template <typename T, int M, int N, int K_, typename S>
void dispatch_layouts(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
                      at::Tensor& d, bool a_col, bool b_col, bool c_col, bool d_col,
                      int64_t warps, int64_t planted) {
  using R = wmma::row_major;
  using C = wmma::col_major;
  if (!a_col && !b_col) run_gemm<T, M, N, K_, R, R, S>(a, b, c, d, c_col, d_col, warps, planted);
  if (!a_col && b_col) run_gemm<T, M, N, K_, R, C, S>(a, b, c, d, c_col, d_col, warps, planted);
  if (a_col && !b_col) run_gemm<T, M, N, K_, C, R, S>(a, b, c, d, c_col, d_col, warps, planted);
  if (a_col && b_col) run_gemm<T, M, N, K_, C, C, S>(a, b, c, d, c_col, d_col, warps, planted);
}

template <typename T, typename S>
void dispatch_shapes(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
                     at::Tensor& d, at::IntArrayRef shape, bool a_col, bool b_col, bool c_col,
                     bool d_col, int64_t warps, int64_t planted) {
  const auto is = [&](int m, int n, int k) { return shape[0] == m && shape[1] == n && shape[2] == k; };
  if constexpr (std::is_same_v<T, wmma::precision::tf32>) {
    TORCH_CHECK(is(16, 16, 8), "tf32: m16n16k8 only");
    dispatch_layouts<T, 16, 16, 8, S>(a, b, c, d, a_col, b_col, c_col, d_col, warps, planted);
  } else if (is(16, 16, 16)) {
    dispatch_layouts<T, 16, 16, 16, S>(a, b, c, d, a_col, b_col, c_col, d_col, warps, planted);
  } else if (is(32, 8, 16)) {
    dispatch_layouts<T, 32, 8, 16, S>(a, b, c, d, a_col, b_col, c_col, d_col, warps, planted);
  } else {
    TORCH_CHECK(is(8, 32, 16), "unsupported shape");
    dispatch_layouts<T, 8, 32, 16, S>(a, b, c, d, a_col, b_col, c_col, d_col, warps, planted);
  }
}

// D = A @ B + C by the wmma gemm kernel. a: (Mt*m, Kt*k), b: (Kt*k, Nt*n), c: float (Mt*m, Nt*n);
// a and b half, bfloat16 or float (tf32). *_col: the memory layout each matrix is handed over in.
at::Tensor test_wmma_gemm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
                          at::IntArrayRef shape, bool a_col, bool b_col, bool c_col, bool d_col,
                          int64_t warps, int64_t planted) {
  TORCH_CHECK(shape.size() == 3 && a.scalar_type() == b.scalar_type() &&
              c.scalar_type() == at::kFloat, "bad arguments");
  at::Tensor d = at::empty_like(c);
  switch (a.scalar_type()) {
    case at::kHalf:
      dispatch_shapes<__half, __half>(a, b, c, d, shape, a_col, b_col, c_col, d_col, warps, planted);
      break;
    case at::kBFloat16:
      dispatch_shapes<__nv_bfloat16, __nv_bfloat16>(a, b, c, d, shape, a_col, b_col, c_col, d_col,
                                                    warps, planted);
      break;
    case at::kFloat:
      dispatch_shapes<wmma::precision::tf32, float>(a, b, c, d, shape, a_col, b_col, c_col, d_col,
                                                    warps, planted);
      break;
    default:
      TORCH_CHECK(false, "a: half, bfloat16 or float");
  }
  return d;
}

at::Tensor test_wmma_staged(const at::Tensor& a, const at::Tensor& b, bool barrier) {
  const at::Tensor ac = a.contiguous(), bc = b.contiguous();
  at::Tensor d = at::full({16, 16}, std::nan(""), at::kFloat);
  ::simt::launch(K::staged, dim3(1), dim3(64), 256 * sizeof(__half),
                 reinterpret_cast<const __half*>(ac.const_data_ptr()),
                 reinterpret_cast<const __half*>(bc.const_data_ptr()), d.mutable_data_ptr<float>(),
                 barrier);
  return d;
}

at::Tensor test_float_to_tf32(const at::Tensor& x) {
  at::Tensor out = x.contiguous().clone();
  float* p = out.mutable_data_ptr<float>();
  for (int64_t i = 0; i < out.numel(); ++i) p[i] = wmma::__float_to_tf32(p[i]);
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastconv_simt, m) {
  m.def("_test_wmma_gemm(Tensor a, Tensor b, Tensor c, int[3] shape, bool a_col, bool b_col, "
        "bool c_col, bool d_col, int warps, int planted) -> Tensor", &test_wmma_gemm);
  m.def("_test_wmma_staged(Tensor a, Tensor b, bool barrier) -> Tensor", &test_wmma_staged);
  m.def("_test_float_to_tf32(Tensor x) -> Tensor", &test_float_to_tf32);
}
