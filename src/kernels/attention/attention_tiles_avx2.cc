// The attention tile kernel compiled for avx2 (flags in src/kernels/CMakeLists.txt).
#define TETRA_ATTEND_FN AttendAvx2
#include "kernels/attention/attention_tiles_impl.h"
