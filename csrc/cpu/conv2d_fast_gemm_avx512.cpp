// The AVX-512 6 x 32 micro-kernels of the packed fp32 GEMM (the code: conv2d_fast_gemm_avx512_tile.inc).
#define FC_NR 32
#define FC_KERNELS_NAME avx512_kernels
#include "cpu/conv2d_fast_gemm_avx512_tile.inc"
