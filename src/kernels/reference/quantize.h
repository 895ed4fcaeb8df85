// Reference quantization of f32 rows into GGML block types, bit-exact with
// the `gguf` Python package's quantizer (gguf.quants.quantize), which the
// tests use as the oracle. The inverse of dequantize.h for these types.
// Pure functions; any thread.
//
// Block layouts (as in dequantize.cc):
//   Q8_0 [d:f16][q:int8 x32]   d = max|x| / 127, q = round-half-away(x / d)
//   Q4_0 [d:f16][qs:16 bytes]  d = (the x of largest |x|) / -8,
//                              q = min(15, trunc(x / d + 8.5)); element i < 16 in the
//                              low nibble of qs[i], element i >= 16 in the high nibble of qs[i-16]
// Non-finite inputs give well-defined (meaningless) blocks, never undefined
// behaviour.
#pragma once

#include <cstdint>

#include "tensor/dtype.h"

namespace tetra {

// f32 -> f16 bit pattern, rounded to nearest even (as numpy's astype(float16)):
// overflow becomes +-inf, NaN stays NaN, tiny values become subnormals or zero.
uint16_t FloatToHalf(float f);
// f32 -> bf16 bit pattern, rounded to nearest even, NaN forced quiet (as gguf's BF16).
uint16_t FloatToBFloat16(float f);

// True for the types QuantizeRow can produce: F32, F16, BF16, Q8_0, Q4_0.
bool CanQuantizeTo(DType dtype);

// Converts n f32 values into RowBytes(dtype, n) bytes at dst. n must be a
// multiple of the type's block size and CanQuantizeTo(dtype) true (checked:
// callers choose types and shapes before quantizing).
void QuantizeRow(DType dtype, const float* src, uint8_t* dst, int64_t n);

}  // namespace tetra
