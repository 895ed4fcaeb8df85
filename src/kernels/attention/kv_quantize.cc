#include "kernels/attention/kv_quantize.h"

#include "kernels/reference/dequantize.h"
#include "kernels/reference/quantize.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "base/check.h"

namespace tetra {

namespace {

constexpr uint32_t kF32SignBit = 0x80000000u;
constexpr uint32_t kF32Infinity = 0x7f800000u;
// E4M3: exponent bias 7, 3 mantissa bits; the smallest normal is 2^-6 and a
// subnormal code m (1..7) stands for m * 2^-9.
constexpr int kFp8ExponentBias = 7;
constexpr uint8_t kFp8MaxFinite = 0x7e;  // 448
constexpr uint8_t kFp8NaN = 0x7f;

float DecodeFp8E4M3(uint8_t code) {
  const float sign = (code & 0x80) ? -1.0f : 1.0f;
  const int exponent = (code >> 3) & 0xf;
  const int mantissa = code & 0x7;
  if (exponent == 0xf && mantissa == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -9);
  return sign * std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - kFp8ExponentBias);
}

const std::array<float, 256>& Fp8E4M3Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int code = 0; code < 256; ++code) t[code] = DecodeFp8E4M3(static_cast<uint8_t>(code));
    return t;
  }();
  return table;
}

}  // namespace

uint8_t FloatToFp8E4M3(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint8_t sign = static_cast<uint8_t>((bits & kF32SignBit) >> 24);
  const uint32_t magnitude = bits & ~kF32SignBit;
  if (magnitude > kF32Infinity) return sign | kFp8NaN;
  if (magnitude >= std::bit_cast<uint32_t>(kFp8E4M3Max)) return sign | kFp8MaxFinite;  // saturate, inf included
  if (magnitude < std::bit_cast<uint32_t>(0x1p-6f)) {
    // Subnormal range: the code is |x| / 2^-9 rounded to nearest even (the
    // scaling is exact); 8 rounds up to the smallest normal, code 0x08.
    const float units = std::nearbyint(std::bit_cast<float>(magnitude) * 512.0f);
    return sign | static_cast<uint8_t>(units);
  }
  // Normal: drop 20 of the 23 mantissa bits, rounding to nearest even; a carry
  // into the exponent is the correct rounding. Then rebias 127 -> 7.
  const uint32_t rounded = magnitude + 0x7ffffu + ((magnitude >> 20) & 1u);
  return sign | static_cast<uint8_t>((rounded >> 20) - ((127u - kFp8ExponentBias) << 3));
}

float Fp8E4M3ToFloat(uint8_t x) { return Fp8E4M3Table()[x]; }

void StoreKvBlock(const KvLayerView& layer, const float* src, int32_t block, uint8_t* dst, float* scales) {
  TETRA_CHECK(block >= 0 && layer.block_tokens > 0 && layer.num_kv_heads > 0 && layer.head_dim > 0,
              "block {} of a layer with {} tokens x {} heads x {} dims", block, layer.block_tokens,
              layer.num_kv_heads, layer.head_dim);
  const int64_t block_elements = layer.block_elements();
  const int64_t head_elements = static_cast<int64_t>(layer.block_tokens) * layer.head_dim;
  uint8_t* block_dst = dst + block * block_elements * KvDtypeBytes(layer.dtype);
  switch (layer.dtype) {
    case KvDtype::kF32:
      std::memcpy(block_dst, src, static_cast<size_t>(block_elements) * sizeof(float));
      return;
    case KvDtype::kBf16: {
      uint16_t* out = reinterpret_cast<uint16_t*>(block_dst);
      for (int64_t i = 0; i < block_elements; ++i) out[i] = FloatToBFloat16(src[i]);
      return;
    }
    case KvDtype::kFp8E4M3:
      TETRA_CHECK(scales != nullptr, "FP8 KV block {} needs scales", block);
      for (int h = 0; h < layer.num_kv_heads; ++h) {
        const float* head_src = src + h * head_elements;
        uint8_t* head_dst = block_dst + h * head_elements;
        float amax = 0.0f;
        for (int64_t i = 0; i < head_elements; ++i) amax = std::max(amax, std::fabs(head_src[i]));
        const float scale = amax > 0.0f ? amax / kFp8E4M3Max : 1.0f;
        scales[static_cast<int64_t>(block) * layer.num_kv_heads + h] = scale;
        for (int64_t i = 0; i < head_elements; ++i) head_dst[i] = FloatToFp8E4M3(head_src[i] / scale);
      }
      return;
  }
}

void LoadKvBlockRows(const KvLayerView& layer, const uint8_t* base, const float* scales, int32_t block, int h,
                     int first_slot, int count, float* out) {
  TETRA_CHECK(block >= 0 && 0 <= h && h < layer.num_kv_heads && 0 <= first_slot && count >= 0 &&
                  first_slot + count <= layer.block_tokens,
              "slots [{}, {}) of head {} of block {} (block of {} tokens, {} heads)", first_slot,
              first_slot + count, h, block, layer.block_tokens, layer.num_kv_heads);
  const int64_t first_element =
      ((static_cast<int64_t>(block) * layer.num_kv_heads + h) * layer.block_tokens + first_slot) * layer.head_dim;
  const int64_t n = static_cast<int64_t>(count) * layer.head_dim;
  const uint8_t* src = base + first_element * KvDtypeBytes(layer.dtype);
  switch (layer.dtype) {
    case KvDtype::kF32:
      std::memcpy(out, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case KvDtype::kBf16: {
      const uint16_t* in = reinterpret_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) out[i] = BFloat16ToFloat(in[i]);
      return;
    }
    case KvDtype::kFp8E4M3: {
      const float scale = scales[static_cast<int64_t>(block) * layer.num_kv_heads + h];
      const std::array<float, 256>& table = Fp8E4M3Table();
      for (int64_t i = 0; i < n; ++i) out[i] = table[src[i]] * scale;
      return;
    }
  }
}

}  // namespace tetra
