// AVX2 kernel (vpmaddubsw + vpmaddwd); compiled with -mavx2 -mfma and called
// by dispatch.cc only on CPUs with AVX2 and FMA. See gemm_256.inc.
#define TETRA_W4A8_256_USE_VNNI 0
#define TETRA_W4A8_256_ENTRY GemmRowsAvx2
#include "kernels/w4a8/gemm_256.inc"
