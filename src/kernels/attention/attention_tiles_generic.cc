// The attention tile kernel compiled for generic (flags in src/kernels/CMakeLists.txt).
#define TETRA_ATTEND_FN AttendGeneric
#include "kernels/attention/attention_tiles_impl.h"
