// 6-bit weights times int8 activations: GGUF Q6_K held bit for bit at its own
// 6.5625 bits a weight, for the output head on CPUs with AVX2 or AVX-512 VNNI
// (decode at batch 1 streams the head every token, so its bytes are the cost;
// PackW8 holds a Q6_K head at 9 bits a weight).
//
// A weight is Q6_K's w[r, c] = d[r, s] * sc[r, h] * (q[r, c] - 32), q in
// 0..63, one int8 sub-scale sc per row and sub-block h = c / 16, one f16 d per
// row and super-block s = c / 256. Only Q6_K packs; every other type is an
// error (the caller packs those with PackW8).
//
// Layout: tiles of 16 rows (the last padded with zeros), each
//   codes   [num_super_blocks][16 sub-blocks][3 lines][16 rows][4 bytes]
//   scales  [num_super_blocks][16 sub-blocks][16 rows] int8
//   d       [num_super_blocks][16 rows] f16
// padded to 64 bytes. A sub-block's 16 inputs are 4 chunks of 4 (chunk k:
// inputs 16h + 4k + 0..3); byte j of (line l, row r) holds chunk l's code for
// input j in bits 0..5 and 2 bits of chunk 3's code in bits 6..7 (line 0:
// bits 0..1, line 1: bits 2..3, line 2: bits 4..5). So three 64-byte loads
// and nine shift/and/ternlog ops rebuild 16 rows x 16 inputs as bytes 0..63:
// four vpdpbusd per token.
//
// Product, per row r, token t and group g of 32 inputs (two sub-blocks):
//   acc = Σ_{h in g} sc[r, h] * (Σ_{c in h} q[r, c] * a[t, c] - 32 * Σ_{c in h} a[t, c])
//   y[t, r] = Σ_g fma(float(acc), d[r, s] * sa[t, g], y)
// |acc| <= 2 * 128 * 16 * 32 * 128 = 2^24, so acc is exact in int32 and in its
// conversion to float. Every ISA computes the same integers and the same float
// operations in the same order as the scalar reference.
//
// PackedW6 is immutable after PackW6; any thread may read it. GemmW6A8 on
// disjoint row ranges may run concurrently.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kernels/w4a8/gemm.h"
#include "kernels/w4a8/packed_w4.h"  // AlignedBuffer
#include "tensor/matrix_view.h"

namespace tetra {

struct PackedW6 {
  static constexpr int kTileRows = 16;
  static constexpr int kSuperBlock = 256;  // inputs per d
  static constexpr int kSubBlock = 16;     // inputs per sub-scale
  static constexpr int kSubBlocks = kSuperBlock / kSubBlock;
  static constexpr int kGroupSize = 32;    // the activations' group
  static constexpr int kLinesPerSubBlock = 3;
  static constexpr size_t kSubBlockBytes = kLinesPerSubBlock * 64;                        // 192
  static constexpr size_t kCodeBytes = kSubBlocks * kSubBlockBytes;                       // 3072
  static constexpr size_t kScaleBytes = kSubBlocks * kTileRows;                           // 256
  static constexpr size_t kDBytes = kTileRows * sizeof(uint16_t);                         // 32

  int64_t rows = 0;
  int64_t cols = 0;
  int64_t num_super_blocks = 0;
  int64_t num_tiles = 0;
  size_t tile_bytes = 0;
  AlignedBuffer data;

  const uint8_t* tile(int64_t t) const { return data.data() + static_cast<size_t>(t) * tile_bytes; }
  const uint8_t* codes(int64_t t, int64_t s) const { return tile(t) + static_cast<size_t>(s) * kCodeBytes; }
  // [16 sub-blocks][16 rows]
  const int8_t* scales(int64_t t, int64_t s) const {
    return reinterpret_cast<const int8_t*>(tile(t) + num_super_blocks * kCodeBytes) + s * kScaleBytes;
  }
  // [16 rows]
  const uint16_t* d(int64_t t, int64_t s) const {
    return reinterpret_cast<const uint16_t*>(tile(t) + num_super_blocks * (kCodeBytes + kScaleBytes)) +
           s * kTileRows;
  }
};

// Errors for: a type other than Q6_K, cols not a positive multiple of 256, a
// null view or short row stride, a non-finite d (naming row and column).
// With a pool, tiles are packed in parallel.
StatusOr<PackedW6> PackW6(const MatrixView& weights, ThreadPool* pool = nullptr);

// Row r's values, (d * sc) * (q - 32) as the Q6_K dequantizer computes them
// (bit for bit), into out[w.cols].
void UnpackW6Row(const PackedW6& w, int64_t r, float* out);

// The ISAs with a W6A8 kernel on this CPU: kScalar, kAvx2 where the CPU has
// AVX2, FMA and F16C, and kAvx512Vnni where it has AVX-512 VNNI.
std::vector<Isa> SupportedW6A8Isas();
// True when the CPU has a SIMD W6A8 kernel, AVX2 or AVX-512 VNNI (else use W8
// or two 4-bit planes).
bool HasFastW6A8();

// As GemmW8A8: y[t * y_stride + r] for r in [row_begin, row_end); requires
// a.cols == w.cols and a.group_size == 32 (checked). The activations' sums
// per 16 inputs come with them (QuantizedActivations::token_sub_sums).
void GemmW6A8(const PackedW6& w, const QuantizedActivations& a, float* y, int64_t y_stride, int64_t row_begin,
              int64_t row_end, Isa isa = Isa::kBest);

}  // namespace tetra
