// Block layouts (little-endian, one block = block_size elements):
//   Q8_0 [d:f16][q:int8 x32]                       x = d*q
//   Q4_0 [d:f16][qs:16 bytes]                      element i<16: low nibble of qs[i], i>=16: high nibble of qs[i-16]; x = d*(q-8)
//   Q4_1 [d:f16][m:f16][qs:16]                     x = d*q + m
//   Q5_0 [d:f16][qh:u32][qs:16]                    q = nibble | bit i of qh << 4; x = d*(q-16)
//   Q5_1 [d:f16][m:f16][qh:u32][qs:16]             x = d*q + m
//   Q2_K [scales:16][qs:64][d:f16][dmin:f16]       16 groups of 16; scale low nibble, min high nibble
//   Q3_K [hmask:32][qs:64][scales:12][d:f16]       16 groups of 16, 6-bit signed scales (-32)
//   Q4_K [d][dmin][scales:12][qs:128]              8 groups of 32, 6-bit scales and mins
//   Q5_K [d][dmin][scales:12][qh:32][qs:128]       as Q4_K plus a fifth bit from qh
//   Q6_K [ql:128][qh:64][scales:int8 x16][d:f16]   16 groups of 16; q in [-32, 31]
// Every product and sum is a separate float operation in the same order as
// the oracle (no fused multiply-add), so results are bit-exact.
#include "kernels/reference/dequantize.h"

#include <cstring>

#include "base/check.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace tetra {

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf or NaN (payload kept)
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);  // 112 = 127 - 15
  } else if (mantissa == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal half: normalize into a float.
    int shift = 0;
    while ((mantissa & 0x400) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= 0x3FF;
    bits = sign | (static_cast<uint32_t>(113 - shift) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float BFloat16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

namespace {

constexpr int kQK = 32;    // legacy block size
constexpr int kQK_K = 256;  // K-quant super-block size

float ReadHalf(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return HalfToFloat(h);
}

void DequantizeQ8_0(const uint8_t* block, float* out) {
  const float d = ReadHalf(block);
  const int8_t* q = reinterpret_cast<const int8_t*>(block + 2);
  for (int i = 0; i < kQK; ++i) out[i] = static_cast<float>(q[i]) * d;
}

void DequantizeQ4_0(const uint8_t* block, float* out) {
  const float d = ReadHalf(block);
  const uint8_t* qs = block + 2;
  for (int i = 0; i < kQK / 2; ++i) {
    out[i] = d * static_cast<float>((qs[i] & 0x0F) - 8);
    out[i + kQK / 2] = d * static_cast<float>((qs[i] >> 4) - 8);
  }
}

void DequantizeQ4_1(const uint8_t* block, float* out) {
  const float d = ReadHalf(block);
  const float m = ReadHalf(block + 2);
  const uint8_t* qs = block + 4;
  for (int i = 0; i < kQK / 2; ++i) {
    out[i] = d * static_cast<float>(qs[i] & 0x0F) + m;
    out[i + kQK / 2] = d * static_cast<float>(qs[i] >> 4) + m;
  }
}

// Shared by Q5_0 and Q5_1: the 5-bit code of element i.
int Q5Code(uint32_t qh, const uint8_t* qs, int i) {
  const int low = i < kQK / 2 ? (qs[i] & 0x0F) : (qs[i - kQK / 2] >> 4);
  return low | static_cast<int>(((qh >> i) & 1u) << 4);
}

void DequantizeQ5_0(const uint8_t* block, float* out) {
  const float d = ReadHalf(block);
  uint32_t qh;
  std::memcpy(&qh, block + 2, 4);
  const uint8_t* qs = block + 6;
  for (int i = 0; i < kQK; ++i) out[i] = d * static_cast<float>(Q5Code(qh, qs, i) - 16);
}

void DequantizeQ5_1(const uint8_t* block, float* out) {
  const float d = ReadHalf(block);
  const float m = ReadHalf(block + 2);
  uint32_t qh;
  std::memcpy(&qh, block + 4, 4);
  const uint8_t* qs = block + 8;
  for (int i = 0; i < kQK; ++i) out[i] = d * static_cast<float>(Q5Code(qh, qs, i)) + m;
}

// In Q2_K and Q3_K the 2-bit codes of 256 elements sit in 64 bytes: element
// e = half*128 + shift*32 + l is bits [2*shift, 2*shift+2) of qs[half*32 + l].
int TwoBitCode(const uint8_t* qs, int e) {
  const int half = e / 128;
  const int shift = (e % 128) / 32;
  const int l = e % 32;
  return (qs[half * 32 + l] >> (2 * shift)) & 3;
}

void DequantizeQ2_K(const uint8_t* block, float* out) {
  const uint8_t* scales = block;
  const uint8_t* qs = block + 16;
  const float d = ReadHalf(block + 80);
  const float dmin = ReadHalf(block + 82);
  for (int group = 0; group < 16; ++group) {
    const float dl = d * static_cast<float>(scales[group] & 0x0F);
    const float ml = dmin * static_cast<float>(scales[group] >> 4);
    for (int k = 0; k < 16; ++k) {
      const int e = group * 16 + k;
      out[e] = dl * static_cast<float>(TwoBitCode(qs, e)) - ml;
    }
  }
}

void DequantizeQ3_K(const uint8_t* block, float* out) {
  const uint8_t* hmask = block;
  const uint8_t* qs = block + 32;
  const uint8_t* scales = block + 96;
  const float d = ReadHalf(block + 108);
  for (int group = 0; group < 16; ++group) {
    // Low 4 bits: nibbles of bytes 0..7 (low nibbles first); high 2 bits: bytes 8..11.
    const int low = group < 8 ? (scales[group] & 0x0F) : (scales[group - 8] >> 4);
    const int high = (scales[8 + group % 4] >> (2 * (group / 4))) & 3;
    const float dl = d * static_cast<float>((low | (high << 4)) - 32);
    for (int k = 0; k < 16; ++k) {
      const int e = group * 16 + k;
      const int high_bit_set = (hmask[e % 32] >> (e / 32)) & 1;
      const int q = TwoBitCode(qs, e) - (high_bit_set ? 0 : 4);
      out[e] = dl * static_cast<float>(q);
    }
  }
}

// The 6-bit scale and min of sub-block j (0..7) in the 12-byte Q4_K/Q5_K field.
void GetScaleMinK4(const uint8_t* scales, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = scales[j] & 0x3F;
    *min = scales[j + 4] & 0x3F;
  } else {
    *scale = (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 2) & 0x30);
    *min = (scales[j + 4] >> 4) | ((scales[j] >> 2) & 0x30);
  }
}

// Q4_K and Q5_K: element e = chunk*64 + nibble*32 + l takes nibble `nibble`
// of qs[chunk*32 + l]; Q5_K adds bit (e/32) of qh[l] as the fifth bit.
void DequantizeQ4OrQ5_K(const uint8_t* block, bool has_fifth_bit, float* out) {
  const float d = ReadHalf(block);
  const float dmin = ReadHalf(block + 2);
  const uint8_t* scales = block + 4;
  const uint8_t* qh = block + 16;
  const uint8_t* qs = has_fifth_bit ? block + 48 : block + 16;
  for (int j = 0; j < 8; ++j) {
    int scale, min;
    GetScaleMinK4(scales, j, &scale, &min);
    const float dl = d * static_cast<float>(scale);
    const float ml = dmin * static_cast<float>(min);
    const int chunk = j / 2;
    const int nibble = j % 2;
    for (int l = 0; l < 32; ++l) {
      int q = (qs[chunk * 32 + l] >> (4 * nibble)) & 0x0F;
      if (has_fifth_bit) q |= ((qh[l] >> j) & 1) << 4;
      out[j * 32 + l] = dl * static_cast<float>(q) - ml;
    }
  }
}

void DequantizeQ6_K(const uint8_t* block, float* out) {
  const uint8_t* ql = block;
  const uint8_t* qh = block + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(block + 192);
  const float d = ReadHalf(block + 208);
  for (int e = 0; e < kQK_K; ++e) {
    const int half = e / 128;
    const int within = e % 128;
    const int low = (ql[half * 64 + within % 64] >> (4 * (within / 64))) & 0x0F;
    const int high = (qh[half * 32 + within % 32] >> (2 * (within / 32))) & 3;
    const float dl = d * static_cast<float>(scales[e / 16]);
    out[e] = dl * static_cast<float>((low | (high << 4)) - 32);
  }
}

}  // namespace

void DequantizeRow(DType dtype, const uint8_t* src, float* dst, int64_t n) {
  const DTypeTraits& traits = GetDTypeTraits(dtype);
  TETRA_CHECK(traits.can_dequantize, "cannot dequantize {}", traits.name);
  TETRA_CHECK(n >= 0 && n % traits.block_size == 0, "{} elements is not a multiple of the {} block size {}",
              n, traits.name, traits.block_size);
  const int64_t num_blocks = n / traits.block_size;
  const size_t block_bytes = traits.block_bytes;
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = ReadHalf(src + 2 * i);
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = BFloat16ToFloat(h);
      }
      return;
    default:
      break;
  }
  using BlockFn = void (*)(const uint8_t*, float*);
  BlockFn fn = nullptr;
  switch (dtype) {
    case DType::kQ8_0: fn = DequantizeQ8_0; break;
    case DType::kQ4_0: fn = DequantizeQ4_0; break;
    case DType::kQ4_1: fn = DequantizeQ4_1; break;
    case DType::kQ5_0: fn = DequantizeQ5_0; break;
    case DType::kQ5_1: fn = DequantizeQ5_1; break;
    case DType::kQ2_K: fn = DequantizeQ2_K; break;
    case DType::kQ3_K: fn = DequantizeQ3_K; break;
    case DType::kQ4_K: fn = [](const uint8_t* b, float* o) { DequantizeQ4OrQ5_K(b, false, o); }; break;
    case DType::kQ5_K: fn = [](const uint8_t* b, float* o) { DequantizeQ4OrQ5_K(b, true, o); }; break;
    case DType::kQ6_K: fn = DequantizeQ6_K; break;
    default: TETRA_CHECK(false, "no dequantizer for {}", traits.name);
  }
  for (int64_t b = 0; b < num_blocks; ++b) {
    fn(src + b * block_bytes, dst + b * traits.block_size);
  }
}

}  // namespace tetra
