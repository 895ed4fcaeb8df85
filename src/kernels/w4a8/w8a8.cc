#include "kernels/w4a8/w8a8.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/check.h"
#include "base/cpu_features.h"
#include "kernels/reference/dequantize.h"
#include "kernels/reference/quantize.h"
#include "kernels/w4a8/gemm_internal.h"  // StoreTileRows
#include "kernels/w4a8/pack_util.h"
#include "kernels/w4a8/w8a8_internal.h"

namespace tetra {

namespace {

using pack_util::kHalfMax;
using pack_util::RoundToHalf;

// One row's codes and group parameters before they are scattered.
struct RowCodes8 {
  std::vector<uint8_t> q;     // [cols]
  std::vector<float> scales;  // [num_groups]
  std::vector<float> mins;    // [num_groups]
};

Status CodesFromQ8_0(const uint8_t* src, int64_t r, int64_t cols, RowCodes8* out) {
  for (int64_t b = 0; b < cols / 32; ++b) {
    const uint8_t* block = src + b * 34;
    uint16_t d_bits;
    std::memcpy(&d_bits, block, 2);
    const float d = HalfToFloat(d_bits);
    if (!std::isfinite(d)) return Status::Errorf("row {}, column {}: block scale {} is not finite", r, b * 32, d);
    out->scales[b] = d;
    out->mins[b] = -128.0f * d;
    for (int i = 0; i < 32; ++i) out->q[b * 32 + i] = static_cast<uint8_t>(static_cast<int8_t>(block[2 + i]) + 128);
  }
  return Status::Ok();
}

Status CodesFromFloats(const float* x, int64_t r, int64_t cols, RowCodes8* out) {
  for (int64_t g = 0; g < cols / PackedW8::kGroupSize; ++g) {
    const float* v = x + g * PackedW8::kGroupSize;
    float lo = v[0], hi = v[0];
    for (int i = 0; i < PackedW8::kGroupSize; ++i) {
      if (!std::isfinite(v[i])) {
        return Status::Errorf("row {}, column {}: value {} is not finite", r, g * PackedW8::kGroupSize + i, v[i]);
      }
      lo = std::min(lo, v[i]);
      hi = std::max(hi, v[i]);
    }
    const float step = (hi - lo) / 255.0f;
    if (!std::isfinite(step) || std::fabs(lo) > kHalfMax || step > kHalfMax) {
      return Status::Errorf("row {}, column {}: group range {}..{} is beyond the f16 range of packed weights", r,
                            g * PackedW8::kGroupSize, lo, hi);
    }
    // Codes against the f16 parameters the kernels use.
    const float scale = RoundToHalf(step);
    const float min = RoundToHalf(lo);
    const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
    out->scales[g] = scale;
    out->mins[g] = min;
    for (int i = 0; i < PackedW8::kGroupSize; ++i) {
      const float q = std::clamp(std::nearbyint((v[i] - min) * inverse), 0.0f, 255.0f);
      out->q[g * PackedW8::kGroupSize + i] = static_cast<uint8_t>(q);
    }
  }
  return Status::Ok();
}

void ScatterRow(const RowCodes8& codes, int64_t r, PackedW8* w) {
  const int64_t tile = r / PackedW8::kTileRows;
  const int row = static_cast<int>(r % PackedW8::kTileRows);
  auto writable = [w](const void* p) { return w->data.data() + (static_cast<const uint8_t*>(p) - w->data.data()); };
  for (int64_t g = 0; g < w->num_groups; ++g) {
    uint8_t* group = writable(w->bytes(tile, g));
    const uint8_t* q = codes.q.data() + g * PackedW8::kGroupSize;
    for (int chunk = 0; chunk < PackedW8::kGroupSize / 4; ++chunk) {
      std::memcpy(group + chunk * 64 + row * 4, q + chunk * 4, 4);
    }
    const uint16_t scale = FloatToHalf(codes.scales[g]);
    std::memcpy(writable(w->scales(tile, g) + row), &scale, 2);
    if (w->has_mins) {
      const uint16_t min = FloatToHalf(codes.mins[g]);
      std::memcpy(writable(w->mins(tile, g) + row), &min, 2);
    }
  }
}

}  // namespace

StatusOr<PackedW8> PackW8(const MatrixView& weights, ThreadPool* pool) {
  TETRA_RETURN_IF_ERROR(pack_util::CheckWeights(weights, PackedW8::kGroupSize, "PackW8"));
  PackedW8 w;
  w.rows = weights.rows;
  w.cols = weights.cols;
  w.num_groups = weights.cols / PackedW8::kGroupSize;
  w.num_tiles = (weights.rows + PackedW8::kTileRows - 1) / PackedW8::kTileRows;
  w.is_lossless = weights.dtype == DType::kQ8_0;
  w.has_mins = !w.is_lossless;
  const size_t parameter_bytes = (w.has_mins ? 2 : 1) * PackedW8::kTileRows * sizeof(uint16_t);
  w.tile_bytes = (static_cast<size_t>(w.num_groups) * (PackedW8::kGroupBytes + parameter_bytes) + 63) / 64 * 64;
  const size_t total = static_cast<size_t>(w.num_tiles) * w.tile_bytes;
  if (total > 0) {
    w.data = AlignedBuffer::Zeroed(total);
    if (w.data.size() != total) return Status::Errorf("PackW8: cannot allocate {} bytes", total);
  }
  const Status status = pack_util::ForTileChunks(w.num_tiles, pool, [&](int64_t tile_begin, int64_t tile_end) {
    RowCodes8 codes;
    codes.q.resize(static_cast<size_t>(w.cols));
    codes.scales.resize(static_cast<size_t>(w.num_groups));
    codes.mins.resize(static_cast<size_t>(w.num_groups));
    std::vector<float> row(w.is_lossless ? 0 : static_cast<size_t>(w.cols));
    for (int64_t r = tile_begin * PackedW8::kTileRows; r < std::min(w.rows, tile_end * PackedW8::kTileRows); ++r) {
      if (w.is_lossless) {
        TETRA_RETURN_IF_ERROR(CodesFromQ8_0(weights.row(r), r, w.cols, &codes));
      } else {
        DequantizeRow(weights.dtype, weights.row(r), row.data(), w.cols);
        TETRA_RETURN_IF_ERROR(CodesFromFloats(row.data(), r, w.cols, &codes));
      }
      ScatterRow(codes, r, &w);
    }
    return Status::Ok();
  });
  if (!status.ok()) return status.WithPrefix(fmt::format("PackW8 ({}): ", DTypeName(weights.dtype)));
  return w;
}

void UnpackW8Row(const PackedW8& w, int64_t r, float* out) {
  TETRA_CHECK(r >= 0 && r < w.rows, "row {} of {}", r, w.rows);
  const int64_t tile = r / PackedW8::kTileRows;
  const int row = static_cast<int>(r % PackedW8::kTileRows);
  for (int64_t g = 0; g < w.num_groups; ++g) {
    const uint8_t* group = w.bytes(tile, g);
    const float scale = HalfToFloat(w.scales(tile, g)[row]);
    const float min = w.has_mins ? HalfToFloat(w.mins(tile, g)[row]) : -128.0f * scale;
    for (int c = 0; c < PackedW8::kGroupSize; ++c) {
      const uint8_t q = group[(c / 4) * 64 + row * 4 + c % 4];
      out[g * PackedW8::kGroupSize + c] = static_cast<float>(q) * scale + min;
    }
  }
}

namespace w8a8_internal {

void GemmRowsScalar(const PackedW8& w, const QuantizedActivations& a, float* y, int64_t y_stride,
                    int64_t row_begin, int64_t row_end) {
  constexpr int kRows = PackedW8::kTileRows;
  for (int64_t tile = row_begin / kRows; tile < (row_end + kRows - 1) / kRows; ++tile) {
    for (int64_t t = 0; t < a.num_tokens; ++t) {
      const int8_t* x = a.token_values(t);
      float out[kRows] = {};
      for (int64_t g = 0; g < w.num_groups; ++g) {
        const uint8_t* group = w.bytes(tile, g);
        const int8_t* xg = x + g * PackedW8::kGroupSize;
        int32_t dot[kRows] = {};
        for (int chunk = 0; chunk < PackedW8::kGroupSize / 4; ++chunk) {
          for (int r = 0; r < kRows; ++r) {
            for (int k = 0; k < 4; ++k) dot[r] += group[chunk * 64 + r * 4 + k] * xg[chunk * 4 + k];
          }
        }
        const uint16_t* scales = w.scales(tile, g);
        const uint16_t* mins = w.mins(tile, g);
        for (int r = 0; r < kRows; ++r) {
          // The SIMD kernel's multiply and two fused multiply-adds, in the same order.
          const float scale = HalfToFloat(scales[r]);
          const float min = w.has_mins ? HalfToFloat(mins[r]) : -128.0f * scale;
          out[r] = std::fma(static_cast<float>(dot[r]), scale * a.token_scales(t)[g], out[r]);
          out[r] = std::fma(min, a.token_scaled_group_sums(t)[g], out[r]);
        }
      }
      w4a8_internal::StoreTileRows(out, tile, row_begin, row_end, y + t * y_stride);
    }
  }
}

}  // namespace w8a8_internal

std::vector<Isa> SupportedW8A8Isas() { return ScalarAndAvx512VnniIsas(); }

bool HasFastW8A8() {
  static const bool fast = SupportedW8A8Isas().back() == Isa::kAvx512Vnni;
  return fast;
}

void GemmW8A8(const PackedW8& w, const QuantizedActivations& a, float* y, int64_t y_stride, int64_t row_begin,
              int64_t row_end, Isa isa) {
  TETRA_CHECK(a.cols == w.cols && a.group_size == PackedW8::kGroupSize,
              "activations [{}, {}] group {} do not match W8 weights [{}, {}]", a.num_tokens, a.cols, a.group_size,
              w.rows, w.cols);
  TETRA_CHECK(0 <= row_begin && row_begin <= row_end && row_end <= w.rows, "rows [{}, {}) of {}", row_begin,
              row_end, w.rows);
  if (row_begin == row_end || a.num_tokens == 0) return;
  static const std::vector<Isa> supported = SupportedW8A8Isas();  // once, not per call
  isa = ResolveIsa(isa, supported, "W8A8");
#if defined(TETRA_W4A8_HAVE_X86_KERNELS)
  if (isa == Isa::kAvx512Vnni) return w8a8_internal::GemmRowsAvx512Vnni(w, a, y, y_stride, row_begin, row_end);
#endif
  w8a8_internal::GemmRowsScalar(w, a, y, y_stride, row_begin, row_end);
}

}  // namespace tetra
