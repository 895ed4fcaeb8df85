#include "tensor/dtype.h"

namespace tetra {

namespace {
struct Entry {
  DType dtype;
  DTypeTraits traits;
};
// Block layouts follow ggml: QK = 32 for the legacy types, 256 for K-quants.
constexpr Entry kEntries[] = {
    {DType::kF32, {"F32", 1, 4, true}},
    {DType::kF16, {"F16", 1, 2, true}},
    {DType::kQ4_0, {"Q4_0", 32, 2 + 16, true}},
    {DType::kQ4_1, {"Q4_1", 32, 2 + 2 + 16, true}},
    {DType::kQ5_0, {"Q5_0", 32, 2 + 4 + 16, true}},
    {DType::kQ5_1, {"Q5_1", 32, 2 + 2 + 4 + 16, true}},
    {DType::kQ8_0, {"Q8_0", 32, 2 + 32, true}},
    {DType::kQ8_1, {"Q8_1", 32, 4 + 32, false}},
    {DType::kQ2_K, {"Q2_K", 256, 256 / 16 + 256 / 4 + 2 + 2, true}},
    {DType::kQ3_K, {"Q3_K", 256, 256 / 8 + 256 / 4 + 12 + 2, true}},
    {DType::kQ4_K, {"Q4_K", 256, 2 + 2 + 12 + 256 / 2, true}},
    {DType::kQ5_K, {"Q5_K", 256, 2 + 2 + 12 + 256 / 8 + 256 / 2, true}},
    {DType::kQ6_K, {"Q6_K", 256, 256 / 2 + 256 / 4 + 256 / 16 + 2, true}},
    {DType::kQ8_K, {"Q8_K", 256, 4 + 256 + 16 * 2, false}},
    {DType::kI8, {"I8", 1, 1, false}},
    {DType::kI16, {"I16", 1, 2, false}},
    {DType::kI32, {"I32", 1, 4, false}},
    {DType::kI64, {"I64", 1, 8, false}},
    {DType::kF64, {"F64", 1, 8, false}},
    {DType::kBF16, {"BF16", 1, 2, true}},
};
}  // namespace

std::optional<DType> DTypeFromGgufId(uint32_t id) {
  for (const Entry& e : kEntries) {
    if (static_cast<uint32_t>(e.dtype) == id) return e.dtype;
  }
  return std::nullopt;
}

const DTypeTraits& GetDTypeTraits(DType dtype) {
  for (const Entry& e : kEntries) {
    if (e.dtype == dtype) return e.traits;
  }
  static const DTypeTraits kUnknown{"?", 1, 0, false};
  return kUnknown;
}

}  // namespace tetra
