// The attention tile kernel compiled for avx512vnni (flags in src/kernels/CMakeLists.txt):
// the avx512 build plus BW, VL, VNNI and VBMI, which its int8 scores use.
#define TETRA_ATTEND_FN AttendAvx512Vnni
#include "kernels/attention/attention_tiles_impl.h"
