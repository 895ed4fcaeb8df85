// 4-bit weights packed for the W4A8 kernels (gemm.h).
//
// A weight w[r, c] of a [rows, cols] matrix is stored as
//   w[r, c] = q[r, c] * scale[r, g] + min[r, g],   q an unsigned nibble 0..15,
// with one f16 scale per row and group g = c / group_size, and either one f16
// min per row and group (asymmetric: 5 bits a weight at group size 32) or
// none, min = -8 * scale (symmetric, as GGUF Q4_0: 4.5 bits a weight). Q4_0
// (symmetric) and Q4_1 (d, m) are held bit for bit when group_size is 32;
// Q4_K's per-group d*sc and -dmin*m are rounded to f16 (relative error
// <= 2^-11 of the scale, far below the 4-bit step); every other type is
// dequantized and requantized per group with its own min and max.
//
// Layout (see doc/kernels.md): rows are interleaved in tiles of kTileRows = 16
// (the last tile padded with zero weights). Tiles are stored one after the
// other, each as
//   nibbles  [num_groups][group_size / 32 sub-blocks][4 chunks][16 rows][4 bytes]
//            byte k of (sub-block s, chunk j, row r): low nibble holds input
//            32s + 4j + k, high nibble input 32s + 16 + 4j + k
//   scales   [num_groups][16 rows] f16
//   mins     [num_groups][16 rows] f16   (asymmetric packs only)
// so one 64-byte load is 16 rows x 4 inputs (x2 nibbles): one vpdpbusd each
// for the low and high nibbles, and one 32-byte load converts to 16 scales.
//
// PackedW4 owns its 64-byte aligned buffer; it is immutable after PackW4 and
// may be read from any number of threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "base/status.h"
#include "base/thread_pool.h"
#include "tensor/matrix_view.h"

namespace tetra {

// An owned, zero-initialised, 64-byte aligned byte buffer.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  // Empty buffer with size() == 0 when the allocation fails.
  static AlignedBuffer Zeroed(size_t num_bytes);
  uint8_t* data() { return data_.get(); }
  const uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> data_;
  size_t size_ = 0;
};

struct PackedW4 {
  static constexpr int kTileRows = 16;
  static constexpr int kSubBlockInputs = 32;  // inputs per 256-byte sub-block of a tile's group
  static constexpr int kMinGroupSize = 32;
  static constexpr int kMaxGroupSize = 128;

  int64_t rows = 0;
  int64_t cols = 0;
  int group_size = 32;
  int64_t num_groups = 0;   // cols / group_size
  int64_t num_tiles = 0;    // ceil(rows / kTileRows)
  bool has_mins = true;     // false: min = -8 * scale (symmetric)
  size_t nibble_bytes = 0;  // one group's nibbles in a tile: group_size * 8
  size_t tile_bytes = 0;    // nibbles, scales and mins of one tile
  bool is_lossless = false; // repacked exactly from Q4_0 / Q4_1
  AlignedBuffer data;       // [num_tiles] tiles

  const uint8_t* tile(int64_t t) const { return data.data() + static_cast<size_t>(t) * tile_bytes; }
  const uint8_t* nibbles(int64_t t, int64_t g) const { return tile(t) + static_cast<size_t>(g) * nibble_bytes; }
  // [16] f16 scales (mins) of group g of tile t.
  const uint16_t* scales(int64_t t, int64_t g) const {
    return reinterpret_cast<const uint16_t*>(tile(t) + num_groups * nibble_bytes) + g * kTileRows;
  }
  const uint16_t* mins(int64_t t, int64_t g) const { return scales(t, g) + num_groups * kTileRows; }
};

// Packs a stored weight matrix. Errors (naming row and column) for: group_size
// not a multiple of 32 in [32, 128]; cols not a positive multiple of
// group_size or of the type's block size; a type tetra cannot dequantize;
// a null view or a row stride shorter than a row; non-finite values or scales.
// Q4_0 / Q4_1 with group_size 32 are repacked losslessly and Q4_K with f16
// rounding of its group parameters; other types (and those with other group
// sizes) are quantized per group asymmetrically (scale = (max - min) / 15 and
// min rounded to f16, then q = round((x - min) / scale)). Errors when a
// group's parameters do not fit f16.
// With a pool, tiles are packed in parallel on it.
StatusOr<PackedW4> PackW4(const MatrixView& weights, int group_size = 32, ThreadPool* pool = nullptr);

// 8-bit weights as two 4-bit planes sharing one activation input: each
// group's values become q8 * scale + min with q8 = 16 * high + low in
// [0, 255], so W x = high_plane x + low_plane x where the high plane has
// scale 16 * scale and the group's min, the low plane scale and min 0. Runs
// on the W4A8 kernels at 8-bit weight precision (Q8_0 exactly; Q6_K and
// wider types re-rounded to 8 bits per group), for layers where 4 bits cost
// too much accuracy (the output head).
struct PackedW8Planes {
  PackedW4 high;
  PackedW4 low;
};
StatusOr<PackedW8Planes> PackW8Planes(const MatrixView& weights, int group_size = 32,
                                      ThreadPool* pool = nullptr);

// Writes the values row r represents, q * scale + min, into out[w.cols].
// For a lossless pack this equals DequantizeRow of the source row exactly.
void UnpackW4Row(const PackedW4& w, int64_t r, float* out);

}  // namespace tetra
