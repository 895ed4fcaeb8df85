// 4-bit weights packed for the W4A8 kernels (gemm.h).
//
// A weight w[r, c] of a [rows, cols] matrix is stored as
//   w[r, c] = q[r, c] * scale[r, g] + min[r, g],   q an unsigned nibble 0..15,
// with one f32 scale and one f32 min per row and group g = c / group_size.
// This form holds GGUF Q4_0 (scale d, min -8d), Q4_1 (d, m) and Q4_K (per
// 32-group d*sc, -dmin*m) bit for bit when group_size is 32; every other type
// is dequantized and requantized per group with its own min and max (lossy).
//
// Layout (see doc/kernels.md): rows are interleaved in tiles of kTileRows = 16
// (the last tile padded with zero weights). Tiles are stored one after the
// other, each as num_groups group records of group_bytes:
//   nibbles  [group_size / 32 sub-blocks][4 chunks][16 rows][4 bytes]
//            byte k of (sub-block s, chunk j, row r): low nibble holds input
//            32s + 4j + k, high nibble input 32s + 16 + 4j + k
//   scales   [16] f32
//   mins     [16] f32
// so one 64-byte load is 16 rows x 4 inputs (x2 nibbles): one vpdpbusd each
// for the low and high nibbles.
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
  size_t group_bytes = 0;   // group_size * 8 nibble bytes + 16 scales + 16 mins
  size_t tile_bytes = 0;    // num_groups * group_bytes
  bool is_lossless = false; // repacked exactly from Q4_0 / Q4_1 / Q4_K
  AlignedBuffer data;       // [num_tiles][num_groups] group records

  const uint8_t* tile(int64_t t) const { return data.data() + static_cast<size_t>(t) * tile_bytes; }
  const uint8_t* group(int64_t t, int64_t g) const { return tile(t) + static_cast<size_t>(g) * group_bytes; }
  // Offsets inside a group record.
  size_t scales_offset() const { return static_cast<size_t>(group_size) * 8; }
  size_t mins_offset() const { return scales_offset() + kTileRows * sizeof(float); }
};

// Packs a stored weight matrix. Errors (naming row and column) for: group_size
// not a multiple of 32 in [32, 128]; cols not a positive multiple of
// group_size or of the type's block size; a type tetra cannot dequantize;
// a null view or a row stride shorter than a row; non-finite values or scales.
// Q4_0 / Q4_1 / Q4_K with group_size 32 are repacked losslessly; other
// types (and those with other group sizes) are quantized per group
// asymmetrically (scale = (max - min) / 15, q = round((x - min) / scale)).
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
