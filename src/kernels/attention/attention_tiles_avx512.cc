// The attention tile kernel compiled for avx512 (flags in src/kernels/CMakeLists.txt).
#define TETRA_ATTEND_FN AttendAvx512
#include "kernels/attention/attention_tiles_impl.h"
