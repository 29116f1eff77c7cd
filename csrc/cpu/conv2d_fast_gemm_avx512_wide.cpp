// The AVX-512 6 x 64 micro-kernels of the packed fp32 GEMM (the code: conv2d_fast_gemm_avx512_tile.inc).
#define FC_NR 64
#define FC_KERNELS_NAME avx512_wide_kernels
#include "cpu/conv2d_fast_gemm_avx512_tile.inc"
