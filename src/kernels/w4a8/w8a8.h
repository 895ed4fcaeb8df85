// 8-bit weights times int8 activations: the output head's path where the CPU
// has AVX-512 VNNI (elsewhere the head runs as two 4-bit planes on the W4A8
// kernels, because plain AVX2's vpmaddubsw saturates on 8-bit x 8-bit pairs).
//
// A weight is w[r, c] = q[r, c] * scale[r, g] + min[r, g], q an unsigned
// byte 0..255, one f16 scale per row and group of 32 inputs, and either one
// f16 min (asymmetric, 9 bits a weight) or none, min = -128 * scale (GGUF
// Q8_0 held bit for bit: q = q8 + 128, scale d; 8.5 bits a weight). Other
// types are dequantized and rounded per group (scale (max - min) / 255 and min
// in f16).
//
// Layout: tiles of 16 rows (the last padded with zeros), each
//   bytes   [num_groups][8 chunks][16 rows][4 bytes]: byte k of (chunk j, row r)
//           is input 4j + k of the group
//   scales  [num_groups][16] f16
//   mins    [num_groups][16] f16   (asymmetric only)
// so one 64-byte load is 16 rows x 4 inputs: one vpdpbusd per token.
//
// The product follows gemm.h's formula with the same QuantizedActivations
// (group size 32); every ISA computes the same integers and the same float
// operations as the scalar reference. PackedW8 is immutable after PackW8; any
// thread may read it; GemmW8A8 on disjoint row ranges may run concurrently.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kernels/w4a8/gemm.h"
#include "kernels/w4a8/packed_w4.h"  // AlignedBuffer
#include "tensor/matrix_view.h"

namespace tetra {

struct PackedW8 {
  static constexpr int kTileRows = 16;
  static constexpr int kGroupSize = 32;
  static constexpr size_t kGroupBytes = kGroupSize * kTileRows;  // 512

  int64_t rows = 0;
  int64_t cols = 0;
  int64_t num_groups = 0;
  int64_t num_tiles = 0;
  bool has_mins = true;      // false: min = -128 * scale (symmetric)
  bool is_lossless = false;  // repacked exactly from Q8_0
  size_t tile_bytes = 0;
  AlignedBuffer data;

  const uint8_t* tile(int64_t t) const { return data.data() + static_cast<size_t>(t) * tile_bytes; }
  const uint8_t* bytes(int64_t t, int64_t g) const { return tile(t) + static_cast<size_t>(g) * kGroupBytes; }
  const uint16_t* scales(int64_t t, int64_t g) const {
    return reinterpret_cast<const uint16_t*>(tile(t) + num_groups * kGroupBytes) + g * kTileRows;
  }
  const uint16_t* mins(int64_t t, int64_t g) const { return scales(t, g) + num_groups * kTileRows; }
};

// Errors (naming row and column) for: cols not a positive multiple of 32 or of
// the type's block size, a type tetra cannot dequantize, a null view or short
// row stride, non-finite values, group parameters beyond f16. With a pool,
// tiles are packed in parallel.
StatusOr<PackedW8> PackW8(const MatrixView& weights, ThreadPool* pool = nullptr);

// Row r's values, q * scale + min, into out[w.cols].
void UnpackW8Row(const PackedW8& w, int64_t r, float* out);

// The ISAs with a W8A8 kernel on this CPU: kScalar, and kAvx512Vnni where
// the CPU has it.
std::vector<Isa> SupportedW8A8Isas();
// True when the CPU has a fast W8A8 kernel (else use two 4-bit planes).
bool HasFastW8A8();

// As GemmW4A8: y[t * y_stride + r] for r in [row_begin, row_end); requires
// a.cols == w.cols and a.group_size == 32 (checked).
void GemmW8A8(const PackedW8& w, const QuantizedActivations& a, float* y, int64_t y_stride, int64_t row_begin,
              int64_t row_end, Isa isa = Isa::kBest);

}  // namespace tetra
