// Element types of weights and activations. The numeric values of the GGML
// types equal their GGUF type ids, so a GGUF tensor type maps by value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace tetra {

enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
};

struct DTypeTraits {
  std::string_view name;   // "Q4_K", "F32", as GGUF tools print them
  int64_t block_size;      // elements per block (1 for plain types)
  size_t block_bytes;      // bytes per block
  bool can_dequantize;     // tetra can turn it into f32
};

// nullopt for ids tetra does not know.
std::optional<DType> DTypeFromGgufId(uint32_t id);
const DTypeTraits& GetDTypeTraits(DType dtype);
inline std::string_view DTypeName(DType dtype) { return GetDTypeTraits(dtype).name; }

// True for types of 8 or more bits a weight (F32, F16, BF16, Q8_0, ...).
inline bool HoldsEightBitsOrMore(DType dtype) {
  const DTypeTraits& t = GetDTypeTraits(dtype);
  return static_cast<int64_t>(t.block_bytes) * 8 >= 8 * t.block_size;
}

// Bytes of a row of n elements; n must be a multiple of the block size.
inline size_t RowBytes(DType dtype, int64_t n) {
  const DTypeTraits& t = GetDTypeTraits(dtype);
  return static_cast<size_t>(n / t.block_size) * t.block_bytes;
}

}  // namespace tetra
