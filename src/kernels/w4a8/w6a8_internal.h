// The per-ISA W6A8 kernels behind GemmW6A8 (w6a8.cc), same contract,
// arguments validated. Only w6a8.cc calls them, after checking the CPU.
#pragma once

#include <cstdint>

#include "kernels/w4a8/w6a8.h"

namespace tetra::w6a8_internal {

// offsets: [a.num_tokens, w.cols / 16], -32 * Σ a[t, c] over each 16 inputs
// (the Q6_K code's -32 folded into the starting value of each dot product).
void GemmRowsScalar(const PackedW6& w, const QuantizedActivations& a, const int32_t* offsets, float* y,
                    int64_t y_stride, int64_t row_begin, int64_t row_end);
void GemmRowsAvx2(const PackedW6& w, const QuantizedActivations& a, const int32_t* offsets, float* y,
                  int64_t y_stride, int64_t row_begin, int64_t row_end);
void GemmRowsAvx512Vnni(const PackedW6& w, const QuantizedActivations& a, const int32_t* offsets, float* y,
                        int64_t y_stride, int64_t row_begin, int64_t row_end);

}  // namespace tetra::w6a8_internal
