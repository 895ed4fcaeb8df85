// Reference causal attention of a batch of sequences' new tokens over their
// KV, f32. Parallel over (sequence, token, head) on the given pool.
#pragma once

#include <cstdint>
#include <span>

#include "base/thread_pool.h"

namespace tetra {

struct AttentionShape {
  int num_heads = 0;
  int num_kv_heads = 0;  // divides num_heads (GQA)
  int head_dim = 0;
  float scale = 0.0f;    // usually 1 / sqrt(head_dim)
};

// One sequence's part of a batched attention call. Token t sits at position
// first_position + t and attends to positions [0, first_position + t].
struct AttentionSequence {
  const float* q = nullptr;  // [num_tokens, num_heads, head_dim]
  int64_t num_tokens = 0;
  int64_t first_position = 0;
  const float* k = nullptr;  // [first_position + num_tokens, num_kv_heads, head_dim]
  const float* v = nullptr;
  float* out = nullptr;      // [num_tokens, num_heads, head_dim]
};

// Every (sequence, token, head) of a batch in one parallel loop.
void CausalAttentionBatch(const AttentionShape& shape, std::span<const AttentionSequence> sequences,
                          ThreadPool& pool);

}  // namespace tetra
