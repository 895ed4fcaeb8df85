// Placeholder: replaced by the dequantizer implementation.
#include "kernels/reference/dequantize.h"
