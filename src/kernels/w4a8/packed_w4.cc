#include "kernels/w4a8/packed_w4.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/check.h"
#include "kernels/reference/dequantize.h"
#include "kernels/reference/quantize.h"
#include "kernels/w4a8/pack_util.h"

namespace tetra {

using pack_util::kHalfMax;
using pack_util::RoundToHalf;

AlignedBuffer AlignedBuffer::Zeroed(size_t num_bytes) {
  AlignedBuffer buffer;
  if (num_bytes == 0) return buffer;
  const size_t rounded = (num_bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) return buffer;
  std::memset(p, 0, rounded);
  buffer.data_.reset(static_cast<uint8_t*>(p));
  buffer.size_ = num_bytes;
  return buffer;
}

namespace {

// Byte offset of input c (0 <= c < group_size) of tile row `row` inside a
// group record, and whether it is the high nibble.
inline size_t NibbleByte(int c, int row, bool* is_high) {
  const int sub_block = c / PackedW4::kSubBlockInputs;
  const int within = c % PackedW4::kSubBlockInputs;
  *is_high = within >= 16;
  const int chunk = (within % 16) / 4;
  return static_cast<size_t>(sub_block) * 256 + static_cast<size_t>(chunk) * 64 +
         static_cast<size_t>(row) * 4 + static_cast<size_t>(within % 4);
}

// One row's codes and per-group parameters before they are scattered.
struct RowCodes {
  std::vector<uint8_t> q;      // [cols], 0..15
  std::vector<float> scales;   // [num_groups]
  std::vector<float> mins;     // [num_groups]
};

void ScatterRow(const RowCodes& codes, int64_t r, PackedW4* w) {
  const int64_t tile = r / PackedW4::kTileRows;
  const int row = static_cast<int>(r % PackedW4::kTileRows);
  // The pack's own buffer, written through the read accessors' offsets.
  auto writable = [w](const void* p) { return w->data.data() + (static_cast<const uint8_t*>(p) - w->data.data()); };
  for (int64_t g = 0; g < w->num_groups; ++g) {
    uint8_t* group = writable(w->nibbles(tile, g));
    const uint8_t* q = codes.q.data() + g * w->group_size;
    // Each byte holds inputs c (low nibble) and c + 16 (high) of one sub-block
    // (see NibbleByte): written whole, once.
    for (int sub_block = 0; sub_block < w->group_size / PackedW4::kSubBlockInputs; ++sub_block) {
      const uint8_t* sq = q + sub_block * PackedW4::kSubBlockInputs;
      uint8_t* dst = group + static_cast<size_t>(sub_block) * 256 + static_cast<size_t>(row) * 4;
      for (int chunk = 0; chunk < 4; ++chunk) {
        for (int i = 0; i < 4; ++i) {
          const int c = chunk * 4 + i;
          dst[chunk * 64 + i] = static_cast<uint8_t>(sq[c] | (sq[c + 16] << 4));
        }
      }
    }
    const uint16_t scale = FloatToHalf(codes.scales[g]);
    std::memcpy(writable(w->scales(tile, g) + row), &scale, sizeof(uint16_t));
    if (w->has_mins) {
      const uint16_t min = FloatToHalf(codes.mins[g]);
      std::memcpy(writable(w->mins(tile, g) + row), &min, sizeof(uint16_t));
    }
  }
}

float ReadHalfAt(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return HalfToFloat(h);
}

Status CheckGroupParameters(float scale, float min, int64_t r, int64_t c) {
  if (!std::isfinite(scale) || !std::isfinite(min)) {
    return Status::Errorf("row {}, column {}: block scale or min is not finite (scale {}, min {})", r, c,
                          scale, min);
  }
  if (std::fabs(scale) > kHalfMax || std::fabs(min) > kHalfMax) {
    return Status::Errorf("row {}, column {}: block scale {} or min {} is beyond the f16 range of packed weights",
                          r, c, scale, min);
  }
  return Status::Ok();
}


// Q4_0 [d:f16][qs:16]: x = d*(q-8) = q*d + (-8d), exact in f32.
Status CodesFromQ4_0(const uint8_t* src, int64_t r, int64_t cols, RowCodes* out) {
  for (int64_t b = 0; b < cols / 32; ++b) {
    const uint8_t* block = src + b * 18;
    const float d = ReadHalfAt(block);
    out->scales[b] = d;
    out->mins[b] = -8.0f * d;
    TETRA_RETURN_IF_ERROR(CheckGroupParameters(out->scales[b], out->mins[b], r, b * 32));
    for (int i = 0; i < 16; ++i) {
      out->q[b * 32 + i] = block[2 + i] & 0x0F;
      out->q[b * 32 + 16 + i] = block[2 + i] >> 4;
    }
  }
  return Status::Ok();
}

// Q4_1 [d:f16][m:f16][qs:16]: x = d*q + m.
Status CodesFromQ4_1(const uint8_t* src, int64_t r, int64_t cols, RowCodes* out) {
  for (int64_t b = 0; b < cols / 32; ++b) {
    const uint8_t* block = src + b * 20;
    out->scales[b] = ReadHalfAt(block);
    out->mins[b] = ReadHalfAt(block + 2);
    TETRA_RETURN_IF_ERROR(CheckGroupParameters(out->scales[b], out->mins[b], r, b * 32));
    for (int i = 0; i < 16; ++i) {
      out->q[b * 32 + i] = block[4 + i] & 0x0F;
      out->q[b * 32 + 16 + i] = block[4 + i] >> 4;
    }
  }
  return Status::Ok();
}

// Q4_K [d:f16][dmin:f16][scales:12][qs:128], 8 groups of 32:
// x = (d*sc)*q - dmin*m = q*(d*sc) + (-(dmin*m)), the same two roundings.
Status CodesFromQ4_K(const uint8_t* src, int64_t r, int64_t cols, RowCodes* out) {
  for (int64_t b = 0; b < cols / 256; ++b) {
    const uint8_t* block = src + b * 144;
    const float d = ReadHalfAt(block);
    const float dmin = ReadHalfAt(block + 2);
    const uint8_t* packed_scales = block + 4;
    const uint8_t* qs = block + 16;
    for (int j = 0; j < 8; ++j) {
      int scale, min;
      if (j < 4) {
        scale = packed_scales[j] & 0x3F;
        min = packed_scales[j + 4] & 0x3F;
      } else {
        scale = (packed_scales[j + 4] & 0x0F) | ((packed_scales[j - 4] >> 2) & 0x30);
        min = (packed_scales[j + 4] >> 4) | ((packed_scales[j] >> 2) & 0x30);
      }
      const int64_t g = b * 8 + j;
      out->scales[g] = d * static_cast<float>(scale);
      out->mins[g] = -(dmin * static_cast<float>(min));
      TETRA_RETURN_IF_ERROR(CheckGroupParameters(out->scales[g], out->mins[g], r, g * 32));
      for (int l = 0; l < 32; ++l) {
        out->q[g * 32 + l] = (qs[(j / 2) * 32 + l] >> (4 * (j % 2))) & 0x0F;
      }
    }
  }
  return Status::Ok();
}

// Squared error of a group coded with (scale, min) rounded to f16: writes the
// codes (each the nearest to its value) when `codes` is not null.
double GroupError(const float* v, int n, float scale, float min, uint8_t* codes) {
  const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
  double error = 0.0;
  for (int i = 0; i < n; ++i) {
    const float q = std::clamp(std::nearbyint((v[i] - min) * inverse), 0.0f, 15.0f);
    const double d = static_cast<double>(q) * scale + min - v[i];
    error += d * d;
    if (codes != nullptr) codes[i] = static_cast<uint8_t>(q);
  }
  return error;
}

// Asymmetric 4-bit codes of f32 values, one (scale, min) per group: the
// min/max rounding, refined by a small search. Each candidate spreads the
// group's range over 15 +- a little steps, rounds, and fits the (scale, min)
// that minimise the squared error for those codes (least squares); the best
// candidate, after rounding to f16, is kept. Outliers may end up clipped by
// a fraction of a step when that lowers the group's total error.
Status CodesFromFloats(const float* x, int64_t r, int64_t cols, int group_size, RowCodes* out) {
  std::vector<uint8_t> candidate(static_cast<size_t>(group_size));
  for (int64_t g = 0; g < cols / group_size; ++g) {
    const float* v = x + g * group_size;
    float lo = v[0], hi = v[0];
    for (int i = 0; i < group_size; ++i) {
      if (!std::isfinite(v[i])) {
        return Status::Errorf("row {}, column {}: value {} is not finite", r, g * group_size + i, v[i]);
      }
      lo = std::min(lo, v[i]);
      hi = std::max(hi, v[i]);
    }
    if (!std::isfinite(hi - lo)) {
      return Status::Errorf("row {}, column {}: group range {}..{} overflows f32", r, g * group_size, lo, hi);
    }
    TETRA_RETURN_IF_ERROR(CheckGroupParameters((hi - lo) / 15.0f, lo, r, g * group_size));
    // The codes are chosen against the f16 values the kernels will use.
    float best_scale = RoundToHalf((hi - lo) / 15.0f);
    float best_min = RoundToHalf(lo);
    double best_error = GroupError(v, group_size, best_scale, best_min, nullptr);
    for (int step = -4; step <= 4 && hi > lo; ++step) {
      const float steps = 15.0f + 0.25f * static_cast<float>(step);
      GroupError(v, group_size, (hi - lo) / steps, lo, candidate.data());
      double sum_q = 0, sum_qq = 0, sum_x = 0, sum_qx = 0;
      for (int i = 0; i < group_size; ++i) {
        const double q = candidate[i];
        sum_q += q;
        sum_qq += q * q;
        sum_x += v[i];
        sum_qx += q * v[i];
      }
      const double det = group_size * sum_qq - sum_q * sum_q;
      if (det <= 0.0) continue;
      const double scale = (group_size * sum_qx - sum_q * sum_x) / det;
      const double min = (sum_qq * sum_x - sum_q * sum_qx) / det;
      if (!(scale > 0.0) || std::fabs(scale) > kHalfMax || std::fabs(min) > kHalfMax) continue;
      const float scale16 = RoundToHalf(static_cast<float>(scale));
      const float min16 = RoundToHalf(static_cast<float>(min));
      const double error = GroupError(v, group_size, scale16, min16, nullptr);
      if (error < best_error) {
        best_error = error;
        best_scale = scale16;
        best_min = min16;
      }
    }
    out->scales[g] = best_scale;
    out->mins[g] = best_min;
    GroupError(v, group_size, best_scale, best_min, &out->q[g * group_size]);
  }
  return Status::Ok();
}

}  // namespace

namespace {

// PackW4, with mins stored even where the source is symmetric when
// `always_mins` (the 8-bit planes overwrite them).
StatusOr<PackedW4> PackW4Impl(const MatrixView& weights, int group_size, ThreadPool* pool, bool always_mins) {
  if (group_size < PackedW4::kMinGroupSize || group_size > PackedW4::kMaxGroupSize ||
      group_size % PackedW4::kSubBlockInputs != 0) {
    return Status::Errorf("PackW4: group size {} is not a multiple of 32 in [32, 128]", group_size);
  }
  TETRA_RETURN_IF_ERROR(pack_util::CheckWeights(weights, group_size, "PackW4"));

  PackedW4 w;
  w.rows = weights.rows;
  w.cols = weights.cols;
  w.group_size = group_size;
  w.num_groups = weights.cols / group_size;
  w.num_tiles = (weights.rows + PackedW4::kTileRows - 1) / PackedW4::kTileRows;
  // Q4_0 at group 32 is symmetric (min = -8 * scale): no mins stored.
  w.has_mins = always_mins || !(weights.dtype == DType::kQ4_0 && group_size == 32);
  w.nibble_bytes = static_cast<size_t>(group_size) * 8;
  const size_t parameter_bytes = (w.has_mins ? 2 : 1) * PackedW4::kTileRows * sizeof(uint16_t);
  // Rounded up so that every tile starts 64-byte aligned.
  w.tile_bytes = (static_cast<size_t>(w.num_groups) * (w.nibble_bytes + parameter_bytes) + 63) / 64 * 64;
  const size_t total_bytes = static_cast<size_t>(w.num_tiles) * w.tile_bytes;
  if (total_bytes > 0) {
    w.data = AlignedBuffer::Zeroed(total_bytes);
    if (w.data.size() != total_bytes) {
      return Status::Errorf("PackW4: cannot allocate {} bytes for [{}, {}] weights", total_bytes,
                            weights.rows, weights.cols);
    }
  }

  const DType dtype = weights.dtype;
  // Q4_K keeps its codes; only its group parameters are rounded to f16.
  const bool keeps_codes = group_size == 32 && (dtype == DType::kQ4_0 || dtype == DType::kQ4_1 || dtype == DType::kQ4_K);
  w.is_lossless = keeps_codes && dtype != DType::kQ4_K;
  const Status status = pack_util::ForTileChunks(w.num_tiles, pool, [&](int64_t tile_begin, int64_t tile_end) {
    RowCodes codes;
    codes.q.resize(static_cast<size_t>(w.cols));
    codes.scales.resize(static_cast<size_t>(w.num_groups));
    codes.mins.resize(static_cast<size_t>(w.num_groups));
    std::vector<float> dequantized;
    if (!keeps_codes) dequantized.resize(static_cast<size_t>(w.cols));
    for (int64_t r = tile_begin * PackedW4::kTileRows; r < std::min(w.rows, tile_end * PackedW4::kTileRows); ++r) {
      const uint8_t* src = weights.row(r);
      if (!keeps_codes) {
        DequantizeRow(dtype, src, dequantized.data(), w.cols);
        TETRA_RETURN_IF_ERROR(CodesFromFloats(dequantized.data(), r, w.cols, group_size, &codes));
      } else if (dtype == DType::kQ4_0) {
        TETRA_RETURN_IF_ERROR(CodesFromQ4_0(src, r, w.cols, &codes));
      } else if (dtype == DType::kQ4_1) {
        TETRA_RETURN_IF_ERROR(CodesFromQ4_1(src, r, w.cols, &codes));
      } else {
        TETRA_RETURN_IF_ERROR(CodesFromQ4_K(src, r, w.cols, &codes));
      }
      ScatterRow(codes, r, &w);
    }
    return Status::Ok();
  });
  if (!status.ok()) return status.WithPrefix(fmt::format("PackW4 ({}): ", DTypeName(dtype)));
  return w;
}

}  // namespace

StatusOr<PackedW4> PackW4(const MatrixView& weights, int group_size, ThreadPool* pool) {
  return PackW4Impl(weights, group_size, pool, /*always_mins=*/false);
}

StatusOr<PackedW8Planes> PackW8Planes(const MatrixView& weights, int group_size, ThreadPool* pool) {
  // Validate and size both planes as PackW4 does (same shape and type rules),
  // then overwrite their codes with the two nibbles of 8-bit codes.
  PackedW8Planes planes;
  TETRA_ASSIGN_OR_RETURN(planes.high, PackW4Impl(weights, group_size, pool, /*always_mins=*/true));
  TETRA_ASSIGN_OR_RETURN(planes.low, PackW4Impl(weights, group_size, pool, /*always_mins=*/true));
  planes.high.is_lossless = planes.low.is_lossless = false;
  auto pack_rows = [&](int64_t row_begin, int64_t row_end) {
    RowCodes high, low;
    for (RowCodes* c : {&high, &low}) {
      c->q.resize(static_cast<size_t>(weights.cols));
      c->scales.resize(static_cast<size_t>(planes.high.num_groups));
      c->mins.resize(static_cast<size_t>(planes.high.num_groups));
    }
    std::vector<float> row(static_cast<size_t>(weights.cols));
    for (int64_t r = row_begin; r < row_end; ++r) {
      DequantizeRow(weights.dtype, weights.row(r), row.data(), weights.cols);
      for (int64_t g = 0; g < planes.high.num_groups; ++g) {
        const float* v = row.data() + g * group_size;
        const float lo = *std::min_element(v, v + group_size);
        const float hi = *std::max_element(v, v + group_size);
        // Both planes' parameters are exact in f16: 16 * scale is a power-of-two multiple.
        const float scale = RoundToHalf((hi - lo) / 255.0f);
        const float min = RoundToHalf(lo);
        const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
        high.scales[g] = 16.0f * scale;
        high.mins[g] = min;
        low.scales[g] = scale;
        low.mins[g] = 0.0f;
        for (int i = 0; i < group_size; ++i) {
          const int code = static_cast<int>(std::clamp(std::nearbyint((v[i] - min) * inverse), 0.0f, 255.0f));
          high.q[g * group_size + i] = static_cast<uint8_t>(code >> 4);
          low.q[g * group_size + i] = static_cast<uint8_t>(code & 15);
        }
      }
      ScatterRow(high, r, &planes.high);
      ScatterRow(low, r, &planes.low);
    }
  };
  // Whole tiles per chunk: rows of one tile share no bytes, but keep chunks tile-aligned anyway.
  if (pool != nullptr) {
    pool->ParallelFor(weights.rows, 4 * PackedW4::kTileRows, pack_rows);
  } else {
    pack_rows(0, weights.rows);
  }
  return planes;
}

void UnpackW4Row(const PackedW4& w, int64_t r, float* out) {
  TETRA_CHECK(r >= 0 && r < w.rows, "row {} of {}", r, w.rows);
  const int64_t tile = r / PackedW4::kTileRows;
  const int row = static_cast<int>(r % PackedW4::kTileRows);
  for (int64_t g = 0; g < w.num_groups; ++g) {
    const uint8_t* group = w.nibbles(tile, g);
    const float scale = HalfToFloat(w.scales(tile, g)[row]);
    const float min = w.has_mins ? HalfToFloat(w.mins(tile, g)[row]) : -8.0f * scale;
    for (int c = 0; c < w.group_size; ++c) {
      bool is_high;
      const uint8_t byte = group[NibbleByte(c, row, &is_high)];
      const int q = is_high ? byte >> 4 : byte & 0x0F;
      const float scaled = static_cast<float>(q) * scale;  // exact for lossless packs
      out[g * w.group_size + c] = scaled + min;
    }
  }
}

}  // namespace tetra
