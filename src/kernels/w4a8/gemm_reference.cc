// The scalar reference: the same integer math as the SIMD kernels, one
// (token, row, group) at a time. Slow; the truth the fast paths are tested
// against.
#include <cmath>
#include <cstring>

#include "kernels/reference/dequantize.h"
#include "kernels/w4a8/gemm_internal.h"

namespace tetra::w4a8_internal {

void GemmRowsScalar(const PackedW4& w, const QuantizedActivations& a, float* y, int64_t y_stride,
                    int64_t row_begin, int64_t row_end) {
  constexpr int kRows = PackedW4::kTileRows;
  const int64_t tile_begin = row_begin / kRows;
  const int64_t tile_end = (row_end + kRows - 1) / kRows;
  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    for (int64_t t = 0; t < a.num_tokens; ++t) {
      const int8_t* x = a.token_values(t);
      const float* token_scales = a.token_scales(t);
      const float* scaled_group_sums = a.token_scaled_group_sums(t);
      float out[kRows] = {};
      for (int64_t g = 0; g < w.num_groups; ++g) {
        const uint8_t* group = w.nibbles(tile, g);
        const int8_t* xg = x + g * w.group_size;
        int32_t dot[kRows] = {};
        for (int s = 0; s < w.group_size / PackedW4::kSubBlockInputs; ++s) {
          for (int chunk = 0; chunk < 4; ++chunk) {
            const uint8_t* bytes = group + s * 256 + chunk * 64;
            const int8_t* low_inputs = xg + s * 32 + chunk * 4;
            const int8_t* high_inputs = low_inputs + 16;
            for (int r = 0; r < kRows; ++r) {
              for (int k = 0; k < 4; ++k) {
                const uint8_t byte = bytes[r * 4 + k];
                dot[r] += (byte & 0x0F) * low_inputs[k] + (byte >> 4) * high_inputs[k];
              }
            }
          }
        }
        const uint16_t* scales = w.scales(tile, g);
        const uint16_t* mins = w.mins(tile, g);
        for (int r = 0; r < kRows; ++r) {
          // The SIMD kernels' multiply and two fused multiply-adds, in the same order.
          const float scale = HalfToFloat(scales[r]) * token_scales[g];
          const float min = w.has_mins ? HalfToFloat(mins[r]) : -8.0f * HalfToFloat(scales[r]);
          out[r] = std::fma(static_cast<float>(dot[r]), scale, out[r]);
          out[r] = std::fma(min, scaled_group_sums[g], out[r]);
        }
      }
      StoreTileRows(out, tile, row_begin, row_end, y + t * y_stride);
    }
  }
}

}  // namespace tetra::w4a8_internal
