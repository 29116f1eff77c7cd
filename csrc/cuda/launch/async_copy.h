// Asynchronous global-to-shared copies (cp.async, sm_80+) for fastconv's kernels: the one API
// is CUDA's pipeline primitives, which both builds provide:
//   __pipeline_memcpy_async(dst_shared, src_global, 4|8|16, zfill = 0)
//   __pipeline_commit()
//   __pipeline_wait_prior(n)   then __syncthreads() before other threads read the copies
// nvcc: the toolkit's <cuda_pipeline_primitives.h> (LDGSTS in the SASS). Emulated:
// csrc/simt/async_copy.h, deferred copies with poisoned destinations and pairing checks.
// Not used: cuda::pipeline / cuda::memcpy_async (libcu++, not emulated) and inline PTX.
#pragma once
#if defined(SIMT_EMULATION)
#include "simt/simt.h"
#else
#include <cuda_pipeline_primitives.h>
#endif
