// The paged KV layout that attention reads, shared by the KV cache (which
// writes it) and the attention kernels (which read it). No ownership here:
// plain views over memory owned by model/kv_cache.h.
//
// One layer's storage is an array of fixed-size blocks shared by every
// sequence. A sequence's keys for positions [0, length) live in
//   - its full blocks, block_table[0 .. length / block_tokens), each stored in
//     the layer's dtype (FP8 E4M3 with one f32 scale per block per KV head,
//     BF16, or F32), and
//   - its open block: the last length % block_tokens positions, kept in f32
//     until the block fills, when the cache quantizes it into a full block
//     with a scale fixed from then on.
// Values are laid out the same way.
#pragma once

#include <cstdint>

namespace tetra {

enum class KvDtype : uint8_t { kF32, kBf16, kFp8E4M3 };

inline int KvDtypeBytes(KvDtype dtype) {
  return dtype == KvDtype::kF32 ? 4 : dtype == KvDtype::kBf16 ? 2 : 1;
}

// The largest finite E4M3 magnitude; a block's scale is amax / kFp8E4M3Max.
inline constexpr float kFp8E4M3Max = 448.0f;

// One layer of the shared block storage.
struct KvLayerView {
  KvDtype dtype = KvDtype::kF32;
  int block_tokens = 0;  // positions per block
  int num_kv_heads = 0;
  int head_dim = 0;
  // Element (block b, KV head h, slot s, dim i) sits at element index
  //   ((b * num_kv_heads + h) * block_tokens + s) * head_dim + i
  // of keys / values, each element KvDtypeBytes(dtype) bytes:
  // [num_blocks, num_kv_heads, block_tokens, head_dim]
  const uint8_t* keys = nullptr;
  const uint8_t* values = nullptr;
  // FP8 only: the dequantized element is fp8 * scale.
  const float* key_scales = nullptr;    // [num_blocks, num_kv_heads]
  const float* value_scales = nullptr;  // [num_blocks, num_kv_heads]

  int64_t block_elements() const { return static_cast<int64_t>(num_kv_heads) * block_tokens * head_dim; }
};

// One sequence's part of a layer.
struct KvSequenceView {
  int64_t length = 0;                  // positions held, open block included
  const int32_t* block_table = nullptr;  // [length / block_tokens] full blocks, in order
  // The open block, f32: [num_kv_heads, block_tokens, head_dim]; positions
  // block_start .. length - 1 sit in slots 0 .. length - block_start - 1,
  // where block_start = length / block_tokens * block_tokens.
  const float* open_keys = nullptr;
  const float* open_values = nullptr;
};

}  // namespace tetra
