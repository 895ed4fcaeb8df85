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

// How a kernel groups tokens and tiles into passes (ForEachTilePass).
struct PassShape {
  int max_tokens = 4;           // tokens per pass, at most 4
  int max_tokens_for_four = 1;  // four tiles per pass for up to this many tokens
  int max_tokens_for_two = 4;   // two tiles per pass for up to this many tokens
};

// The pass loop of the 16-row-tile kernels: the tiles covering rows
// [row_begin, row_end) in blocks of 8 (~190 KB of 4-bit weights at 2048
// columns, which stay in L2 while every group of up to shape.max_tokens
// tokens passes over them). Each pass `run(tile, tiles, t0, n, out)` computes
// `tiles` consecutive tiles (4 where 4 remain in the block and n <=
// max_tokens_for_four, else 2 where 2 remain and n <= max_tokens_for_two,
// else 1) for tokens [t0, t0 + n) into out[i * n + t][16] (at most 8 rows),
// which is then stored into y.
template <typename Run>
static inline void ForEachTilePass(int64_t row_begin, int64_t row_end, int64_t num_tokens, PassShape shape,
                                   float* y, int64_t y_stride, Run&& run) {
  constexpr int kRows = 16;
  constexpr int64_t kTilesPerBlock = 8;
  alignas(64) float out[8][kRows];  // e.g. 2 tiles x 4 tokens, 4 tiles x 2
  const int64_t tile_begin = row_begin / kRows;
  const int64_t tile_end = (row_end + kRows - 1) / kRows;
  for (int64_t block = tile_begin; block < tile_end; block += kTilesPerBlock) {
    const int64_t block_end = std::min(tile_end, block + kTilesPerBlock);
    for (int64_t t0 = 0; t0 < num_tokens; t0 += shape.max_tokens) {
      const int64_t n = std::min<int64_t>(shape.max_tokens, num_tokens - t0);
      for (int64_t tile = block; tile < block_end;) {
        const int tiles = n <= shape.max_tokens_for_four && tile + 3 < block_end  ? 4
                          : n <= shape.max_tokens_for_two && tile + 1 < block_end ? 2
                                                                                  : 1;
        run(tile, tiles, t0, n, out);
        for (int i = 0; i < tiles; ++i) {
          for (int64_t t = 0; t < n; ++t) {
            StoreTileRows(out[i * n + t], tile + i, row_begin, row_end, y + (t0 + t) * y_stride);
          }
        }
        tile += tiles;
      }
    }
  }
}

}  // namespace tetra::w4a8_internal
