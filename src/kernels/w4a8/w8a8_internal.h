// The per-ISA W8A8 kernels behind GemmW8A8 (w8a8.cc), same contract,
// arguments validated. Only w8a8.cc calls them, after checking the CPU.
#pragma once

#include <cstdint>

#include "kernels/w4a8/w8a8.h"

namespace tetra::w8a8_internal {

void GemmRowsScalar(const PackedW8& w, const QuantizedActivations& a, float* y, int64_t y_stride,
                    int64_t row_begin, int64_t row_end);
void GemmRowsAvx512Vnni(const PackedW8& w, const QuantizedActivations& a, float* y, int64_t y_stride,
                        int64_t row_begin, int64_t row_end);

}  // namespace tetra::w8a8_internal
