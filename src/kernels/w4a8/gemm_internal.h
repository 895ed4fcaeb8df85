// Per-ISA entry points behind GemmW4A8 (dispatch.cc). Each lives in its own
// file compiled with its own -m flags; only dispatch.cc may call them, and only
// after checking GetCpuFeatures(). Same contract as GemmW4A8, with the
// arguments already validated.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/w4a8/packed_w4.h"
#include "kernels/w4a8/quantize_activations.h"

namespace tetra::w4a8_internal {

using GemmRowsFn = void (*)(const PackedW4& w, const QuantizedActivations& a, float* y,
                            int64_t y_stride, int64_t row_begin, int64_t row_end);

void GemmRowsScalar(const PackedW4& w, const QuantizedActivations& a, float* y, int64_t y_stride,
                    int64_t row_begin, int64_t row_end);
void GemmRowsAvx2(const PackedW4& w, const QuantizedActivations& a, float* y, int64_t y_stride,
                  int64_t row_begin, int64_t row_end);
void GemmRowsAvxVnni(const PackedW4& w, const QuantizedActivations& a, float* y, int64_t y_stride,
                     int64_t row_begin, int64_t row_end);
void GemmRowsAvx512Vnni(const PackedW4& w, const QuantizedActivations& a, float* y,
                        int64_t y_stride, int64_t row_begin, int64_t row_end);

// The 4 int8 activations at p as one int32, for a broadcast.
static inline int32_t Load32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Stores the 16 results of tile `tile` for one token into y_row, keeping only
// rows in [row_begin, row_end).
// static: each ISA file gets its own copy, compiled with its own flags, so
// the linker can never hand the AVX-512 build of it to the scalar path.
static inline void StoreTileRows(const float* tile_out, int64_t tile, int64_t row_begin, int64_t row_end,
                          float* y_row) {
  const int64_t first = std::max(row_begin, tile * PackedW4::kTileRows);
  const int64_t last = std::min(row_end, (tile + 1) * PackedW4::kTileRows);
  for (int64_t r = first; r < last; ++r) y_row[r] = tile_out[r - tile * PackedW4::kTileRows];
}

}  // namespace tetra::w4a8_internal
