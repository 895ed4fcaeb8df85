// AVX-VNNI kernel (VEX vpdpbusd on ymm); compiled with -mavx2 -mfma -mavxvnni
// and called by dispatch.cc only on CPUs with AVX-VNNI. See gemm_256.inc.
#define TETRA_W4A8_256_USE_VNNI 1
#define TETRA_W4A8_256_ENTRY GemmRowsAvxVnni
#include "kernels/w4a8/gemm_256.inc"
