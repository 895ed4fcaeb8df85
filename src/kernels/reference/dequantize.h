// Reference dequantization of stored weight types to f32, bit-exact with the
// `gguf` Python package's dequantizer (the oracle the tests compare against).
// Pure functions; any thread.
#pragma once

#include <cstdint>

#include "tensor/dtype.h"

namespace tetra {

// f16 / bf16 bit patterns to f32 (exact).
float HalfToFloat(uint16_t h);
float BFloat16ToFloat(uint16_t h);

// Converts n elements starting at src into dst. n must be a multiple of the
// type's block size and GetDTypeTraits(dtype).can_dequantize must be true
// (checked: callers validate tensors at load time).
void DequantizeRow(DType dtype, const uint8_t* src, float* dst, int64_t n);

}  // namespace tetra
