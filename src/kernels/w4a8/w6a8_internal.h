// The per-ISA W6A8 kernels behind GemmW6A8 (w6a8.cc), same contract,
// arguments validated. Only w6a8.cc calls them, after checking the CPU.
#pragma once

#include <cstdint>

#include "kernels/w4a8/w6a8.h"

namespace tetra::w6a8_internal {

// Each 16-input dot product starts at -32 * a.token_sub_sums (the Q6_K
// code's -32 folded into its starting value).
void GemmRowsScalar(const PackedW6& w, const QuantizedActivations& a, float* y,
                    int64_t y_stride, int64_t row_begin, int64_t row_end);
void GemmRowsAvx2(const PackedW6& w, const QuantizedActivations& a, float* y,
                  int64_t y_stride, int64_t row_begin, int64_t row_end);
void GemmRowsAvx512Vnni(const PackedW6& w, const QuantizedActivations& a, float* y,
                        int64_t y_stride, int64_t row_begin, int64_t row_end);

}  // namespace tetra::w6a8_internal
