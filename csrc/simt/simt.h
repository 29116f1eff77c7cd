// simt: a header-only CUDA emulator that runs fastconv's CUDA kernel source on the CPU
// (design: shared/SIMT.md). Include order in an emulated translation unit: torch headers, then
// this header, then the kernel .cuh files. Build flags: -DSIMT_EMULATION -O1 -g
// -fno-strict-aliasing -Wno-unknown-pragmas, csrc/simt before the CUDA include directory.
//
//   config.h      qualifiers, built-in variables, policy (SIMT_ORDER, ...), targets, errors
//   fiber.h       ucontext fibers on guard-paged pooled stacks
//   scheduler.h   passes, block barriers, deadlock reports; the block's state in
//                 block_state.h, warp-collective completion in warp_collectives.h
//   launcher.h    simt::launch: argument conversion, validation, block order, dynamic smem
//   builtins.h    __syncthreads*, __shfl*_sync, votes, match, reduce, __syncwarp, traps
//   atomics.h     atomicAdd/CAS/... (integer, float, double, half, bf16)
//   intrinsics.h  __ldg, bit and float intrinsics, min/max
//   fp16.h        cuda_fp16/cuda_bf16 plus the device-only functions g++ lacks
//   async_copy.h  __pipeline_memcpy_async/_commit/_wait_prior (cp.async), deferred + checked
//   mma.h         nvcuda::wmma (what <mma.h> gives nvcc): fragments, load/store/mma/fill
#pragma once
#include "config.h"
#include "fp16.h"
#include "fiber.h"
#include "scheduler.h"
#include "launcher.h"
#include "builtins.h"
#include "atomics.h"
#include "intrinsics.h"
#include "mma.h"
#include "async_copy.h"
