// Helpers for the W4A8 tests: fixture reading, random GGUF blocks with finite
// f16 scales, and normalised error.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/matrix_view.h"

namespace tetra::w4a8_testing {

inline std::vector<uint8_t> ReadFixture(const std::string& relative) {
  std::ifstream in(std::string(TETRA_FIXTURES_DIR) + "/" + relative, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A finite f16 bit pattern: normal values of moderate size, sometimes a
// subnormal or a zero, either sign.
inline uint16_t RandomHalf(std::mt19937& rng) {
  std::uniform_int_distribution<int> pick(0, 99);
  const uint16_t sign = (rng() & 1) ? 0x8000 : 0;
  const int kind = pick(rng);
  if (kind < 3) return sign;                                             // zero
  if (kind < 8) return static_cast<uint16_t>(sign | (rng() & 0x3FF));   // subnormal
  const uint16_t exponent = static_cast<uint16_t>(std::uniform_int_distribution<int>(5, 17)(rng));
  return static_cast<uint16_t>(sign | (exponent << 10) | (rng() & 0x3FF));
}

// Random blocks of a 4-bit GGUF type for a [rows, cols] matrix; the f16
// scale fields are finite, everything else random bytes.
inline std::vector<uint8_t> RandomBlocks(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng) {
  const DTypeTraits& traits = GetDTypeTraits(dtype);
  const int64_t num_blocks = rows * cols / traits.block_size;
  std::vector<uint8_t> bytes(static_cast<size_t>(num_blocks) * traits.block_bytes);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  std::vector<int> half_offsets;
  switch (dtype) {
    case DType::kQ4_0: half_offsets = {0}; break;
    case DType::kQ8_0: half_offsets = {0}; break;
    case DType::kQ4_1: half_offsets = {0, 2}; break;
    case DType::kQ4_K: half_offsets = {0, 2}; break;
    default: break;
  }
  for (int64_t b = 0; b < num_blocks; ++b) {
    for (int offset : half_offsets) {
      const uint16_t h = RandomHalf(rng);
      std::memcpy(bytes.data() + b * traits.block_bytes + offset, &h, 2);
    }
  }
  return bytes;
}

inline MatrixView ViewOf(DType dtype, int64_t rows, int64_t cols, const std::vector<uint8_t>& bytes) {
  return MatrixView::Contiguous(dtype, rows, cols, bytes.data());
}

inline std::vector<float> RandomFloats(size_t n, std::mt19937& rng, float stddev = 1.0f) {
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

// max |got - want| / max |want| (0 when both are all zero).
inline double NormalisedMaxError(const std::vector<float>& got, const std::vector<float>& want) {
  double max_error = 0.0, max_want = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_error = std::max(max_error, std::fabs(static_cast<double>(got[i]) - want[i]));
    max_want = std::max(max_want, std::fabs(static_cast<double>(want[i])));
  }
  return max_want > 0.0 ? max_error / max_want : max_error;
}

// ||got - want||_2 / ||want||_2.
inline double RelativeRmsError(const std::vector<float>& got, const std::vector<float>& want) {
  double error = 0.0, norm = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    error += d * d;
    norm += static_cast<double>(want[i]) * want[i];
  }
  return norm > 0.0 ? std::sqrt(error / norm) : std::sqrt(error);
}

}  // namespace tetra::w4a8_testing
