#include "kernels/w4a8/w6a8.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "base/cpu_features.h"
#include "kernels/reference/dequantize.h"
#include "kernels/w4a8/gemm_internal.h"  // StoreTileRows
#include "kernels/w4a8/pack_util.h"
#include "kernels/w4a8/w6a8_internal.h"

namespace tetra {

namespace {

constexpr int kRows = PackedW6::kTileRows;
constexpr size_t kQ6_KBlockBytes = 210;  // ql[128] qh[64] scales[16] d

// The largest |acc| of one group (two sub-blocks, |sc| <= 128, |q - 32| <= 32,
// |a| <= 128) must fit int32 and convert to float exactly.
static_assert(2 * 128 * PackedW6::kSubBlock * 32 * 128 <= (1 << 24));

// Code 0..63 of element e of a Q6_K block (bit positions as the reference
// dequantizer reads them).
int Q6_KCode(const uint8_t* block, int e) {
  const uint8_t* ql = block;
  const uint8_t* qh = block + 128;
  const int half = e / 128;
  const int within = e % 128;
  const int low = (ql[half * 64 + within % 64] >> (4 * (within / 64))) & 0x0F;
  const int high = (qh[half * 32 + within % 32] >> (2 * (within / 32))) & 3;
  return low | (high << 4);
}

// Code of (row, chunk, byte j) of one sub-block's three lines (w6a8.h).
int CodeAt(const uint8_t* lines, int row, int chunk, int j) {
  const int at = row * 4 + j;
  if (chunk < 3) return lines[chunk * 64 + at] & 0x3F;
  return (lines[at] >> 6) | ((lines[64 + at] >> 6) << 2) | ((lines[128 + at] >> 6) << 4);
}

uint8_t* Writable(PackedW6* w, const void* p) {
  return w->data.data() + (static_cast<const uint8_t*>(p) - w->data.data());
}

// Copies row r's Q6_K blocks into its tile: codes regrouped, sc and d as is.
Status ScatterRow(const uint8_t* src, int64_t r, PackedW6* w) {
  const int64_t tile = r / kRows;
  const int row = static_cast<int>(r % kRows);
  for (int64_t s = 0; s < w->num_super_blocks; ++s) {
    const uint8_t* block = src + s * kQ6_KBlockBytes;
    uint16_t d_bits;
    std::memcpy(&d_bits, block + 208, 2);
    const float d = HalfToFloat(d_bits);
    if (!std::isfinite(d)) {
      return Status::Errorf("row {}, column {}: super-block scale {} is not finite", r, s * PackedW6::kSuperBlock, d);
    }
    uint8_t* codes = Writable(w, w->codes(tile, s));
    for (int h = 0; h < PackedW6::kSubBlocks; ++h) {
      uint8_t* lines = codes + h * PackedW6::kSubBlockBytes;
      for (int j = 0; j < 4; ++j) {
        const int q3 = Q6_KCode(block, h * 16 + 12 + j);
        for (int line = 0; line < 3; ++line) {
          const int q = Q6_KCode(block, h * 16 + 4 * line + j);
          lines[line * 64 + row * 4 + j] = static_cast<uint8_t>(q | (((q3 >> (2 * line)) & 3) << 6));
        }
      }
    }
    int8_t* scales = reinterpret_cast<int8_t*>(Writable(w, w->scales(tile, s)));
    for (int h = 0; h < PackedW6::kSubBlocks; ++h) scales[h * kRows + row] = static_cast<int8_t>(block[192 + h]);
    std::memcpy(Writable(w, w->d(tile, s) + row), &d_bits, 2);
  }
  return Status::Ok();
}

}  // namespace

StatusOr<PackedW6> PackW6(const MatrixView& weights, ThreadPool* pool) {
  if (weights.dtype != DType::kQ6_K) {
    return Status::Errorf("PackW6: weights of type {} are not Q6_K (pack them with PackW8)",
                          DTypeName(weights.dtype));
  }
  TETRA_RETURN_IF_ERROR(pack_util::CheckWeights(weights, PackedW6::kSuperBlock, "PackW6"));
  PackedW6 w;
  w.rows = weights.rows;
  w.cols = weights.cols;
  w.num_super_blocks = weights.cols / PackedW6::kSuperBlock;
  w.num_tiles = (weights.rows + kRows - 1) / kRows;
  const size_t super_block_bytes = PackedW6::kCodeBytes + PackedW6::kScaleBytes + PackedW6::kDBytes;
  w.tile_bytes = (static_cast<size_t>(w.num_super_blocks) * super_block_bytes + 63) / 64 * 64;
  const size_t total = static_cast<size_t>(w.num_tiles) * w.tile_bytes;
  if (total > 0) {
    w.data = AlignedBuffer::Zeroed(total);
    if (w.data.size() != total) return Status::Errorf("PackW6: cannot allocate {} bytes", total);
  }
  const Status status = pack_util::ForTileChunks(w.num_tiles, pool, [&](int64_t tile_begin, int64_t tile_end) {
    for (int64_t r = tile_begin * kRows; r < std::min(w.rows, tile_end * kRows); ++r) {
      TETRA_RETURN_IF_ERROR(ScatterRow(weights.row(r), r, &w));
    }
    return Status::Ok();
  });
  if (!status.ok()) return status.WithPrefix("PackW6 (Q6_K): ");
  return w;
}

void UnpackW6Row(const PackedW6& w, int64_t r, float* out) {
  TETRA_CHECK(r >= 0 && r < w.rows, "row {} of {}", r, w.rows);
  const int64_t tile = r / kRows;
  const int row = static_cast<int>(r % kRows);
  for (int64_t s = 0; s < w.num_super_blocks; ++s) {
    const float d = HalfToFloat(w.d(tile, s)[row]);
    for (int h = 0; h < PackedW6::kSubBlocks; ++h) {
      const uint8_t* lines = w.codes(tile, s) + h * PackedW6::kSubBlockBytes;
      // The dequantizer's two roundings: d * sc, then times (q - 32).
      const float dl = d * static_cast<float>(w.scales(tile, s)[h * kRows + row]);
      for (int c = 0; c < PackedW6::kSubBlock; ++c) {
        const int q = CodeAt(lines, row, c / 4, c % 4);
        out[s * PackedW6::kSuperBlock + h * PackedW6::kSubBlock + c] = dl * static_cast<float>(q - 32);
      }
    }
  }
}

namespace w6a8_internal {

void GemmRowsScalar(const PackedW6& w, const QuantizedActivations& a, float* y,
                    int64_t y_stride, int64_t row_begin, int64_t row_end) {
  for (int64_t tile = row_begin / kRows; tile < (row_end + kRows - 1) / kRows; ++tile) {
    for (int64_t t = 0; t < a.num_tokens; ++t) {
      const int8_t* x = a.token_values(t);
      const int32_t* token_sums = a.token_sub_sums(t);  // Σ a per 16 inputs
      float out[kRows] = {};
      for (int64_t s = 0; s < w.num_super_blocks; ++s) {
        const int8_t* scales = w.scales(tile, s);
        const uint16_t* d = w.d(tile, s);
        for (int g = 0; g < PackedW6::kSuperBlock / PackedW6::kGroupSize; ++g) {
          int32_t acc[kRows] = {};
          for (int h = 2 * g; h < 2 * g + 2; ++h) {
            const uint8_t* lines = w.codes(tile, s) + h * PackedW6::kSubBlockBytes;
            const int8_t* xh = x + s * PackedW6::kSuperBlock + h * PackedW6::kSubBlock;
            for (int r = 0; r < kRows; ++r) {
              int32_t dot = -32 * token_sums[s * PackedW6::kSubBlocks + h];
              for (int c = 0; c < PackedW6::kSubBlock; ++c) dot += CodeAt(lines, r, c / 4, c % 4) * xh[c];
              acc[r] += scales[h * kRows + r] * dot;
            }
          }
          const float sa = a.token_scales(t)[s * (PackedW6::kSuperBlock / PackedW6::kGroupSize) + g];
          for (int r = 0; r < kRows; ++r) {
            // The SIMD kernel's multiply and fused multiply-add, in the same order.
            out[r] = std::fma(static_cast<float>(acc[r]), HalfToFloat(d[r]) * sa, out[r]);
          }
        }
      }
      w4a8_internal::StoreTileRows(out, tile, row_begin, row_end, y + t * y_stride);
    }
  }
}

}  // namespace w6a8_internal

std::vector<Isa> SupportedW6A8Isas() {
  std::vector<Isa> isas = {Isa::kScalar};
#if defined(TETRA_W4A8_HAVE_X86_KERNELS)
  const CpuFeatures& cpu = GetCpuFeatures();
  if (cpu.avx2 && cpu.fma && cpu.f16c) isas.push_back(Isa::kAvx2);
  if (cpu.avx512f && cpu.avx512bw && cpu.avx512vnni) isas.push_back(Isa::kAvx512Vnni);
#endif
  return isas;
}

bool HasFastW6A8() {
  static const bool fast = SupportedW6A8Isas().back() != Isa::kScalar;
  return fast;
}

void GemmW6A8(const PackedW6& w, const QuantizedActivations& a, float* y, int64_t y_stride, int64_t row_begin,
              int64_t row_end, Isa isa) {
  TETRA_CHECK(a.cols == w.cols && a.group_size == PackedW6::kGroupSize,
              "activations [{}, {}] group {} do not match W6 weights [{}, {}]", a.num_tokens, a.cols, a.group_size,
              w.rows, w.cols);
  TETRA_CHECK(0 <= row_begin && row_begin <= row_end && row_end <= w.rows, "rows [{}, {}) of {}", row_begin,
              row_end, w.rows);
  if (row_begin == row_end || a.num_tokens == 0) return;
  static const std::vector<Isa> supported = SupportedW6A8Isas();  // once, not per call
  isa = ResolveIsa(isa, supported, "W6A8");

#if defined(TETRA_W4A8_HAVE_X86_KERNELS)
  if (isa == Isa::kAvx512Vnni) {
    return w6a8_internal::GemmRowsAvx512Vnni(w, a, y, y_stride, row_begin, row_end);
  }
  if (isa == Isa::kAvx2) return w6a8_internal::GemmRowsAvx2(w, a, y, y_stride, row_begin, row_end);
#endif
  w6a8_internal::GemmRowsScalar(w, a, y, y_stride, row_begin, row_end);
}

}  // namespace tetra
