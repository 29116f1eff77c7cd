// cp.async kernels that test the emulator's pipeline primitives (tests/test_simt_async.py),
// registered as torch.ops.fastconv_simt._test_async_copy: a double-buffered pipeline and planted
// misuse the emulator must report.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "simt/simt.h"
#include "cuda/launch/async_copy.h"
#include "cuda/launch/launch.h"

namespace simt_tests {

enum AsyncMode : int {
  kPipeline = 0,          // correct double-buffered pipeline
  kReadBeforeWait = 1,    // reads stage s before waiting for it
  kWaitWithoutCommit = 2,
  kTooManyGroups = 3,     // commits a group per stage and never waits
  kExitUncommitted = 4,
  kExitUnwaited = 5,
  kMisaligned = 6,        // 16-byte copy to a 4-byte aligned address
  kBadSize = 7,           // 12-byte copy
  kZeroFill = 8,          // correct pipeline copying only the first 8 of 16 bytes (zfill 8)
};

// out[t] = sum over stages s of the 4 floats that thread (t + 1) % T copied in stage s: each
// thread copies 16 bytes per stage into a double buffer in dynamic shared memory, and reads its
// neighbour's after __pipeline_wait_prior and a barrier.
__global__ void async_pipeline(const float* src, float* out, int stages, int mode) {
  FC_DYNAMIC_SHARED(float, buf);  // 2 x blockDim.x x 4 floats
  const unsigned t = threadIdx.x, T = blockDim.x;
  const size_t zfill = mode == kZeroFill ? 8 : 0;
  const auto issue = [&](int s) {
    float* dst = buf + (s % 2) * T * 4 + t * 4;
    const float* from = src + (size_t(s) * T + t) * 4;
    if (mode == kMisaligned) dst += 1;
    __pipeline_memcpy_async(dst, from, mode == kBadSize ? 12 : 16, zfill);
  };
  issue(0);
  if (mode == kExitUncommitted) return;
  if (mode == kWaitWithoutCommit) {
    __pipeline_wait_prior(0);
    return;
  }
  __pipeline_commit();
  if (mode == kExitUnwaited) return;
  float acc = 0.0f;
  for (int s = 0; s < stages; ++s) {
    if (s + 1 < stages) issue(s + 1);
    __pipeline_commit();  // possibly empty: keeps "wait_prior(1)" meaning "stage s landed"
    if (mode != kReadBeforeWait && mode != kTooManyGroups) __pipeline_wait_prior(1);
    __syncthreads();
    const float* tile = buf + (s % 2) * T * 4 + ((t + 1) % T) * 4;
    acc += tile[0] + tile[1] + tile[2] + tile[3];
    if (mode == kReadBeforeWait) __pipeline_wait_prior(1);
    __syncthreads();  // everyone has read buffer s % 2 before stage s + 2 is issued into it
  }
  if (mode != kTooManyGroups) __pipeline_wait_prior(0);
  out[t] = acc;
}

}  // namespace simt_tests

namespace {

at::Tensor test_async_copy(const at::Tensor& src, int64_t threads, int64_t stages, int64_t mode) {
  TORCH_CHECK(src.numel() >= stages * threads * 4 && src.scalar_type() == at::kFloat,
              "src: float, stages * threads * 4 elements");
  const at::Tensor s = src.contiguous();
  at::Tensor out = at::full({threads}, -1.0f, s.options());
  ::simt::launch(simt_tests::async_pipeline, dim3(1), dim3(unsigned(threads)),
                 size_t(threads) * 8 * sizeof(float), s.const_data_ptr<float>(),
                 out.mutable_data_ptr<float>(), int(stages), int(mode));
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastconv_simt, m) {
  m.def("_test_async_copy(Tensor src, int threads, int stages, int mode) -> Tensor",
        &test_async_copy);
}
