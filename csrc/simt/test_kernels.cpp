// Small kernels that test the emulator itself (tests/test_simt.py), registered as private ops
// torch.ops.fastconv_simt._test_<name>. Some are correct (exact answers expected), some carry
// planted bugs the emulator must report: a detector that never fires is not a test.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "simt/simt.h"
#include "cuda/launch/launch.h"

namespace simt_tests {

// ---- correct kernels ------------------------------------------------------------------------
// Sum of each warp's 32 values (0 past n) by a shuffle butterfly (xor) or a down-tree; lane 0
// writes the warp's sum.
__global__ void warp_sum(const float* x, float* out, int64_t n, bool use_down) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  float v = i < n ? x[i] : 0.0f;
  for (int offset = 16; offset > 0; offset /= 2)
    v += use_down ? __shfl_down_sync(0xffffffffu, v, offset)
                  : __shfl_xor_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) out[i / 32] = v;
}

// Inclusive scan of each block's elements (Hillis-Steele in dynamic shared memory), for 1-D
// and 2-D blocks. omit = 1 drops the barrier after filling the tile (read before write),
// omit = 2 the one between reading a neighbour and overwriting (write before read).
__global__ void block_scan(const int64_t* x, int64_t* out, int64_t n, int omit) {
  FC_DYNAMIC_SHARED(int64_t, tile);
  const unsigned threads = blockDim.x * blockDim.y;
  const unsigned t = threadIdx.x + threadIdx.y * blockDim.x;
  const int64_t i = int64_t(blockIdx.x) * threads + t;
  tile[t] = i < n ? x[i] : 0;
  if (omit != 1) __syncthreads();
  for (unsigned offset = 1; offset < threads; offset *= 2) {
    const int64_t v = t >= offset ? tile[t - offset] : 0;
    if (omit != 2) __syncthreads();
    tile[t] += v;
    __syncthreads();
  }
  if (i < n) out[i] = tile[t];
}

// One warp-collective call per lane; lanes >= exit_from return first, lanes outside `mask`
// skip the call. kind: 0 shfl, 1 up, 2 down, 3 xor, 4 ballot, 5 any, 6 all, 7 match_any,
// 8 reduce_add, 9 reduce_min, 10 reduce_max, 11 activemask, 12 match_all (pred in bit 31),
// 13 a planted mismatch (lanes < 16 shuffle, the others vote, in one group), 14 a planted
// mask without the caller's own lane.
template <typename T>
__global__ void collective(int kind, const T* values, const int* args, T* out, int width,
                           unsigned mask, int exit_from) {
  const unsigned lane = threadIdx.x % 32;
  if (int(threadIdx.x) >= exit_from) return;
  if (!(mask >> lane & 1)) return;
  const T v = values[threadIdx.x];
  const int a = args[threadIdx.x];
  T r = T(0);
  switch (kind) {
    case 0: r = __shfl_sync(mask, v, a, width); break;
    case 1: r = __shfl_up_sync(mask, v, unsigned(a), width); break;
    case 2: r = __shfl_down_sync(mask, v, unsigned(a), width); break;
    case 3: r = __shfl_xor_sync(mask, v, a, width); break;
    case 4: r = T(int(__ballot_sync(mask, v != T(0)))); break;
    case 5: r = T(__any_sync(mask, v != T(0))); break;
    case 6: r = T(__all_sync(mask, v != T(0))); break;
    case 7: r = T(int(__match_any_sync(mask, v))); break;
    case 8: r = T(__reduce_add_sync(mask, int(v))); break;
    case 9: r = T(__reduce_min_sync(mask, int(v))); break;
    case 10: r = T(__reduce_max_sync(mask, int(v))); break;
    case 11: r = T(int(__activemask())); break;
    case 12: {
      int pred = 0;
      const unsigned m = __match_all_sync(mask, v, &pred);
      r = T(int(m | (unsigned(pred) << 31)));
      break;
    }
    case 13:  // planted: half the group shuffles, the other half votes
      r = lane < 16 ? __shfl_sync(mask, v, a, width) : T(int(__ballot_sync(mask, v != T(0))));
      break;
    case 14:  // planted: lane 0 leaves itself out of its mask
      r = __shfl_sync(lane == 0 ? mask & ~1u : mask, v, a, width);
      break;
  }
  out[threadIdx.x] = r;
}

// __syncthreads_count/_and/_or of pred[t] over one block; results per thread.
__global__ void barrier_predicates(const int* pred, int* out) {
  const unsigned t = threadIdx.x;
  const int p = pred[t];
  const int c = __syncthreads_count(p);
  const int a = __syncthreads_and(p);
  const int o = __syncthreads_or(p);
  out[3 * t] = c;
  out[3 * t + 1] = a;
  out[3 * t + 2] = o;
}

// Atomics with order-independent results: counts, exact float sums of small integers, max,
// bounded increments and a CAS-based add. out: int[6], float, double, __half.
__global__ void atomics(int* ints, float* f, double* d, __half* h, unsigned* inc) {
  const int t = int(blockIdx.x * blockDim.x + threadIdx.x);
  atomicAdd(&ints[0], 1);
  atomicMax(&ints[1], t);
  atomicMin(&ints[2], t);
  atomicSub(&ints[3], 2);
  atomicOr(&ints[4], 1 << (t % 31));
  int old = ints[5], assumed;  // CAS loop: ints[5] += t
  do {
    assumed = old;
    old = atomicCAS(&ints[5], assumed, assumed + t);
  } while (old != assumed);
  atomicAdd(f, float(t % 7));
  atomicAdd(d, double(t));
  atomicAdd(h, __float2half_rn(1.0f));
  atomicInc(inc, 9u);
}

__global__ void count_threads(unsigned long long* count) { atomicAdd(count, 1ull); }

__global__ void barriers(int rounds, int64_t* sink) {
  int64_t acc = threadIdx.x;
  for (int r = 0; r < rounds; ++r) {
    acc += r;
    __syncthreads();
  }
  if (threadIdx.x == 0 && blockIdx.x == 0) *sink = acc;
}

// The order in which threads run: each appends block * threads + tid to seq.
__global__ void record_order(int* seq, int* counter) {
  const unsigned block = blockIdx.x + blockIdx.y * gridDim.x + blockIdx.z * gridDim.x * gridDim.y;
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  const unsigned tid = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
  seq[atomicAdd(counter, 1)] = int(block * threads + tid);
}

// A direct 3x3 convolution (stride 1, padding 1, NCHW, float) sized like a real conv launch, to
// measure the emulator's cost (tests/test_simt.py): one block per (16x16 output tile, k, n);
// per input channel the block stages an 18x18 input tile and the 3x3 filter in shared memory
// (two barriers per channel), then each thread accumulates its output pixel.
__global__ void __launch_bounds__(256)
    direct_conv3x3(const float* x, const float* w, float* y, int C, int H, int W, int K) {
  __shared__ float tile[18][18];
  __shared__ float filt[9];
  const int tiles_x = (W + 15) / 16;
  const int ox0 = int(blockIdx.x) % tiles_x * 16, oy0 = int(blockIdx.x) / tiles_x * 16;
  const int k = int(blockIdx.y), n = int(blockIdx.z);
  const int tx = int(threadIdx.x), ty = int(threadIdx.y), t = ty * 16 + tx;
  float acc = 0.0f;
  for (int c = 0; c < C; ++c) {
    const float* plane = x + (int64_t(n) * C + c) * H * W;
    for (int i = t; i < 18 * 18; i += 256) {
      const int iy = oy0 + i / 18 - 1, ix = ox0 + i % 18 - 1;
      tile[i / 18][i % 18] = iy >= 0 && iy < H && ix >= 0 && ix < W ? plane[iy * W + ix] : 0.0f;
    }
    if (t < 9) filt[t] = w[(int64_t(k) * C + c) * 9 + t];
    __syncthreads();
    for (int r = 0; r < 3; ++r)
      for (int s = 0; s < 3; ++s) acc += tile[ty + r][tx + s] * filt[r * 3 + s];
    __syncthreads();
  }
  const int oy = oy0 + ty, ox = ox0 + tx;
  if (oy < H && ox < W) y[((int64_t(n) * K + k) * H + oy) * W + ox] = acc;
}

// ---- planted bugs ---------------------------------------------------------------------------
__global__ void divergent_barrier(int* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();  // the even threads wait here,
  } else {
    __syncthreads();  // the odd ones here: two different barriers
  }
  out[threadIdx.x] = 1;
}

__global__ void barrier_after_exit(int* out) {
  if (threadIdx.x >= 16) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void deadlock(int* out) {
  if (threadIdx.x == 0) {
    __syncwarp(0x3u);  // waits for lane 1, which waits for lane 0 at the block barrier
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void trap(int block, int thread, bool use_assert) {
  if (int(blockIdx.x) == block && int(threadIdx.x) == thread) {
    if (use_assert) SIMT_DEVICE_ASSERT(threadIdx.x != unsigned(thread));
    __trap();
  }
}

}  // namespace simt_tests

namespace {
namespace K = simt_tests;
constexpr auto kCountThreads = &K::count_threads;

at::Tensor test_warp_sum(const at::Tensor& x, bool use_down) {
  const at::Tensor xc = x.contiguous();
  const int64_t n = xc.numel();
  const int64_t blocks = (n + 127) / 128;
  at::Tensor out = at::full({blocks * 4}, std::nan(""), xc.options());
  ::simt::launch(K::warp_sum, dim3(unsigned(blocks)), dim3(128), 0, xc.const_data_ptr<float>(),
                 out.mutable_data_ptr<float>(), n, use_down);
  return out;
}

at::Tensor test_block_scan(const at::Tensor& x, int64_t bx, int64_t by, int64_t omit) {
  const at::Tensor xc = x.contiguous();
  const int64_t n = xc.numel(), threads = bx * by;
  at::Tensor out = at::full_like(xc, -1);
  ::simt::launch(K::block_scan, dim3(unsigned((n + threads - 1) / threads)),
                 dim3(unsigned(bx), unsigned(by)), size_t(threads) * sizeof(int64_t),
                 xc.const_data_ptr<int64_t>(), out.mutable_data_ptr<int64_t>(), n, int(omit));
  return out;
}

at::Tensor test_collective(int64_t kind, const at::Tensor& values, const at::Tensor& args,
                           int64_t width, int64_t mask, int64_t threads, int64_t exit_from) {
  TORCH_CHECK(values.numel() >= threads && args.numel() >= threads, "too few values");
  const at::Tensor v = values.contiguous(), a = args.to(at::kInt).contiguous();
  at::Tensor out = at::full_like(v, -7);
  const unsigned m = unsigned(uint64_t(mask) & 0xffffffffu);
  if (v.scalar_type() == at::kInt) {
    ::simt::launch(K::collective<int>, dim3(1), dim3(unsigned(threads)), 0, int(kind),
                   v.const_data_ptr<int>(), a.const_data_ptr<int>(), out.mutable_data_ptr<int>(),
                   int(width), m, int(exit_from));
  } else {
    TORCH_CHECK(v.scalar_type() == at::kDouble, "values: int32 or float64");
    ::simt::launch(K::collective<double>, dim3(1), dim3(unsigned(threads)), 0, int(kind),
                   v.const_data_ptr<double>(), a.const_data_ptr<int>(),
                   out.mutable_data_ptr<double>(), int(width), m, int(exit_from));
  }
  return out;
}

at::Tensor test_barrier_predicates(const at::Tensor& pred) {
  const at::Tensor p = pred.to(at::kInt).contiguous();
  at::Tensor out = at::full({p.numel(), 3}, -1, p.options());
  ::simt::launch(K::barrier_predicates, dim3(1), dim3(unsigned(p.numel())), 0,
                 p.const_data_ptr<int>(), out.mutable_data_ptr<int>());
  return out;
}

// [count, max, min, sub, or, cas-sum, float sum, double sum, half sum, inc]
std::vector<double> test_atomics(int64_t blocks, int64_t threads) {
  int ints[6] = {0, -1, 1 << 30, 0, 0, 0};
  float f = 0;
  double d = 0;
  __half h = __float2half_rn(0.0f);
  unsigned inc = 0;
  ::simt::launch(K::atomics, dim3(unsigned(blocks)), dim3(unsigned(threads)), 0, ints, &f, &d,
                 &h, &inc);
  return {double(ints[0]), double(ints[1]), double(ints[2]), double(ints[3]), double(ints[4]),
          double(ints[5]), double(f), d, double(__half2float(h)), double(inc)};
}

int64_t test_launch(at::IntArrayRef grid, at::IntArrayRef block, int64_t smem, int64_t optin) {
  if (optin > 0) ::fastconv::allow_dynamic_smem(kCountThreads, size_t(optin));  // launch.h
  unsigned long long count = 0;
  ::simt::launch(K::count_threads, dim3(unsigned(grid[0]), unsigned(grid[1]), unsigned(grid[2])),
                 dim3(unsigned(block[0]), unsigned(block[1]), unsigned(block[2])), size_t(smem),
                 &count);
  if (optin > 0) ::simt::smem_optin().erase(::simt::kernel_key(kCountThreads));
  return int64_t(count);
}

int64_t test_barriers(int64_t blocks, int64_t threads, int64_t rounds) {
  int64_t sink = -1;
  ::simt::launch(K::barriers, dim3(unsigned(blocks)), dim3(unsigned(threads)), 0, int(rounds),
                 &sink);
  return sink;
}

at::Tensor test_record_order(at::IntArrayRef grid, at::IntArrayRef block) {
  const int64_t n = grid[0] * grid[1] * grid[2] * block[0] * block[1] * block[2];
  at::Tensor seq = at::full({n}, -1, at::kInt);
  int counter = 0;
  ::simt::launch(K::record_order, dim3(unsigned(grid[0]), unsigned(grid[1]), unsigned(grid[2])),
                 dim3(unsigned(block[0]), unsigned(block[1]), unsigned(block[2])), 0,
                 seq.mutable_data_ptr<int>(), &counter);
  return seq;
}

at::Tensor test_direct_conv3x3(const at::Tensor& x, const at::Tensor& w) {
  const at::Tensor xc = x.contiguous(), wc = w.contiguous();
  const int N = int(xc.size(0)), C = int(xc.size(1)), H = int(xc.size(2)), W = int(xc.size(3));
  const int F = int(wc.size(0));  // output channels (K is the kernels' namespace here)
  at::Tensor y = at::full({N, F, H, W}, std::nan(""), xc.options());
  ::simt::launch(K::direct_conv3x3, dim3(unsigned((H + 15) / 16 * ((W + 15) / 16)), unsigned(F),
                                         unsigned(N)),
                 dim3(16, 16), 0, xc.const_data_ptr<float>(), wc.const_data_ptr<float>(),
                 y.mutable_data_ptr<float>(), C, H, W, F);
  return y;
}

// fastconv::launch_device() of the emulated target: [sm_count, max_threads_per_sm, smem_optin]
std::vector<int64_t> test_launch_device() {
  const ::fastconv::LaunchDevice d = ::fastconv::launch_device();
  return {d.sm_count, d.max_threads_per_sm, int64_t(d.smem_optin)};
}

void test_planted(c10::string_view which) {
  const std::string w(which.data(), which.size());
  int out[64] = {};
  if (w == "divergent_barrier") {
    ::simt::launch(K::divergent_barrier, dim3(1), dim3(64), 0, out);
  } else if (w == "barrier_after_exit") {
    ::simt::launch(K::barrier_after_exit, dim3(1), dim3(64), 0, out);
  } else if (w == "deadlock") {
    ::simt::launch(K::deadlock, dim3(1), dim3(64), 0, out);
  } else if (w == "trap") {
    ::simt::launch(K::trap, dim3(3), dim3(64), 0, 1, 5, false);
  } else if (w == "assert") {
    ::simt::launch(K::trap, dim3(3), dim3(64), 0, 2, 7, true);
  } else {
    TORCH_CHECK(false, "unknown planted bug ", w);
  }
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastconv_simt, m) {
  m.def("_test_warp_sum(Tensor x, bool use_down) -> Tensor", &test_warp_sum);
  m.def("_test_block_scan(Tensor x, int bx, int by, int omit) -> Tensor", &test_block_scan);
  m.def("_test_collective(int kind, Tensor values, Tensor args, int width, int mask, "
        "int threads, int exit_from) -> Tensor", &test_collective);
  m.def("_test_barrier_predicates(Tensor pred) -> Tensor", &test_barrier_predicates);
  m.def("_test_atomics(int blocks, int threads) -> float[]", &test_atomics);
  m.def("_test_launch(int[3] grid, int[3] block, int smem, int optin) -> int", &test_launch);
  m.def("_test_barriers(int blocks, int threads, int rounds) -> int", &test_barriers);
  m.def("_test_launch_device() -> int[]", &test_launch_device);
  m.def("_test_direct_conv3x3(Tensor x, Tensor w) -> Tensor", &test_direct_conv3x3);
  m.def("_test_planted(str which) -> ()", &test_planted);
  m.def("_test_record_order(int[3] grid, int[3] block) -> Tensor", &test_record_order);
}
