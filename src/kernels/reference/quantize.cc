// Every product and sum is a separate float operation in the oracle's order
// (no fused multiply-add), so results are bit-exact with numpy's.
#include "kernels/reference/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/check.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace tetra {
namespace {

constexpr int64_t kBlock = 32;

uint32_t FloatBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}

void StoreHalf(uint8_t* dst, uint16_t h) {
  dst[0] = static_cast<uint8_t>(h & 0xFF);
  dst[1] = static_cast<uint8_t>(h >> 8);
}

// numpy's np_roundf in gguf.quants: floor(|x|) + floor(2 * frac), signed;
// i.e. round half away from zero. Below 128 the floors are integer
// truncations of non-negative values (exact, and much faster than floorf).
// |x| >= 128, inf and NaN only come from non-finite inputs: clamped to
// [-128, 127], NaN -> 0, so the int8 conversion is always defined.
int8_t RoundToInt8(float x) {
  const float a = std::fabs(x);
  if (!(a < 128.0f)) {
    if (std::isnan(a)) return 0;
    return x < 0.0f ? -128 : 127;
  }
  const int32_t floored = static_cast<int32_t>(a);
  const float twice_fraction = 2.0f * (a - static_cast<float>(floored));  // exact, in [0, 2)
  const int32_t rounded = floored + static_cast<int32_t>(twice_fraction);
  const int32_t v = x < 0.0f ? -rounded : rounded;
  return static_cast<int8_t>(v > 127 ? 127 : v);
}

void QuantizeBlockQ8_0(const float* x, uint8_t* dst) {
  float max_abs = 0.0f;
  for (int64_t i = 0; i < kBlock; ++i) max_abs = std::fmax(max_abs, std::fabs(x[i]));
  const float d = max_abs / 127.0f;
  const float inverse = d == 0.0f ? 0.0f : 1.0f / d;
  StoreHalf(dst, FloatToHalf(d));
  for (int64_t i = 0; i < kBlock; ++i) {
    const int8_t q = RoundToInt8(x[i] * inverse);
    std::memcpy(dst + 2 + i, &q, 1);
  }
}

// q = trunc(x * inverse + 8.5) clipped to [0, 15] (NaN -> 0); the truncation
// of a value in [0, 16) is an integer conversion.
uint8_t QuantizeNibble(float x, float inverse) {
  const float v = x * inverse + 8.5f;
  if (!(v >= 0.0f)) return 0;
  return v >= 16.0f ? 15 : static_cast<uint8_t>(std::min(15, static_cast<int32_t>(v)));
}

void QuantizeBlockQ4_0(const float* x, uint8_t* dst) {
  // The signed value of largest magnitude (first one on ties, as argmax).
  float max_abs = -1.0f;
  float max_value = 0.0f;
  for (int64_t i = 0; i < kBlock; ++i) {
    if (std::fabs(x[i]) > max_abs) {
      max_abs = std::fabs(x[i]);
      max_value = x[i];
    }
  }
  const float d = max_value / -8.0f;
  const float inverse = d == 0.0f ? 0.0f : 1.0f / d;
  StoreHalf(dst, FloatToHalf(d));
  for (int64_t i = 0; i < kBlock / 2; ++i) {
    const uint8_t low = QuantizeNibble(x[i], inverse);
    const uint8_t high = QuantizeNibble(x[i + kBlock / 2], inverse);
    dst[2 + i] = static_cast<uint8_t>(low | (high << 4));
  }
}

}  // namespace

uint16_t FloatToHalf(float f) {
  const uint32_t bits = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t abs_bits = bits & 0x7FFFFFFF;
  if (abs_bits >= 0x7F800000) {  // inf or NaN
    if (abs_bits == 0x7F800000) return sign | 0x7C00;
    return sign | 0x7E00 | static_cast<uint16_t>((abs_bits >> 13) & 0x3FF);
  }
  if (abs_bits >= 0x477FF000) return sign | 0x7C00;  // rounds to >= 65520: overflow
  const int32_t exponent = static_cast<int32_t>(abs_bits >> 23) - 127;
  if (exponent >= -14) {  // a normal half
    // Round the 23-bit mantissa to 10 bits, nearest even; a carry bumps the
    // exponent correctly because the fields are adjacent.
    const uint32_t rebased = abs_bits - (static_cast<uint32_t>(127 - 15) << 23);
    const uint32_t round_bit = 1u << 12;
    const uint32_t lsb = (rebased >> 13) & 1;
    return sign | static_cast<uint16_t>((rebased + round_bit - 1 + lsb) >> 13);
  }
  if (exponent < -25) return sign;  // below half the smallest subnormal: zero
  // Subnormal half: value = mantissa_with_implicit_one * 2^(exponent-23);
  // in units of 2^-24 that is mantissa >> (-exponent - 1).
  const uint32_t mantissa = (abs_bits & 0x7FFFFF) | 0x800000;
  const int shift = -exponent - 1;  // 14..24
  const uint32_t truncated = mantissa >> shift;
  const uint32_t remainder = mantissa & ((1u << shift) - 1);
  const uint32_t halfway = 1u << (shift - 1);
  uint32_t result = truncated;
  if (remainder > halfway || (remainder == halfway && (truncated & 1))) ++result;
  return sign | static_cast<uint16_t>(result);
}

uint16_t FloatToBFloat16(float f) {
  uint32_t bits = FloatBits(f);
  if ((bits & 0x7FFFFFFF) > 0x7F800000) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  const uint64_t rounded = (static_cast<uint64_t>(bits) + 0x7FFF + ((bits >> 16) & 1)) >> 16;
  return static_cast<uint16_t>(rounded);
}

bool CanQuantizeTo(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ8_0:
    case DType::kQ4_0:
      return true;
    default:
      return false;
  }
}

void QuantizeRow(DType dtype, const float* src, uint8_t* dst, int64_t n) {
  TETRA_CHECK(CanQuantizeTo(dtype), "cannot quantize to {}", DTypeName(dtype));
  TETRA_CHECK(n % GetDTypeTraits(dtype).block_size == 0, "{} values are not whole {} blocks", n, DTypeName(dtype));
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) StoreHalf(dst + 2 * i, FloatToHalf(src[i]));
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) StoreHalf(dst + 2 * i, FloatToBFloat16(src[i]));
      return;
    case DType::kQ8_0:
      for (int64_t b = 0; b < n / kBlock; ++b) QuantizeBlockQ8_0(src + b * kBlock, dst + b * 34);
      return;
    case DType::kQ4_0:
      for (int64_t b = 0; b < n / kBlock; ++b) QuantizeBlockQ4_0(src + b * kBlock, dst + b * 18);
      return;
    default:
      return;
  }
}

}  // namespace tetra
