// Conversions between f32 and the KV cache's storage types, and the
// quantization of a filled block (kernels/attention/paged_kv.h).
// Stateless; any thread.
#pragma once

#include <cstdint>

#include "kernels/attention/paged_kv.h"

namespace tetra {

// OCP FP8 E4M3 ("e4m3fn": no infinities, 0x7F/0xFF are NaN, max 448),
// round to nearest even; values beyond +-448 saturate to +-448.
uint8_t FloatToFp8E4M3(float x);
float Fp8E4M3ToFloat(uint8_t x);

// BF16 conversions: FloatToBFloat16 (kernels/reference/quantize.h) and
// BFloat16ToFloat (kernels/reference/dequantize.h).

// Stores one full block, src [num_kv_heads, block_tokens, head_dim] f32, into
// block `block` of a layer's keys or values (dst = the layer's base pointer).
// FP8: scales[block * num_kv_heads + h] = amax(head h) / kFp8E4M3Max (1 when
// the head is all zeros) and each element is stored as fp8(x / scale).
// scales is ignored for BF16 and F32.
void StoreKvBlock(const KvLayerView& layer, const float* src, int32_t block, uint8_t* dst, float* scales);

// Dequantizes `count` consecutive slots [first_slot, first_slot + count) of
// KV head h of a full block into out [count, head_dim] f32.
void LoadKvBlockRows(const KvLayerView& layer, const uint8_t* base, const float* scales, int32_t block, int h,
                     int first_slot, int count, float* out);

}  // namespace tetra
