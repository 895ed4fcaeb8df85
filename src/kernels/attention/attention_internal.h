// Internals of PagedAttention shared by attention.cc (planning, threading,
// merging) and the per-ISA tile kernels (attention_tiles_*.cc, all compiled
// from attention_tiles_impl.h with different -m flags). Not a public API.
#pragma once

#include <cstdint>

#include "kernels/attention/paged_kv.h"

namespace tetra::attention_internal {

// One work item: the queries of `num_tokens` consecutive new tokens of one
// sequence, all `group` q heads of KV head `kv_head`, against the keys
// [key_begin, key_end) of the sequence (key_begin a multiple of
// block_tokens), each token seeing only keys at or before its position
// (token t's position is first_position + t).
//
// A shared-prefix item (SharedPrefixGroup) stacks instead the one new token
// of each of `num_tokens` sequences whose q rows lie back to back, over keys
// [0, prefix_tokens) that all of them share; `kv` is the first sequence's
// (the prefix is full blocks of every member), first_position is
// prefix_tokens, past every key, so nothing is masked, and the rows always go
// to `partial` (its row t * group + g is sequence t's q head g).
struct AttendTask {
  const KvLayerView* layer = nullptr;
  const KvSequenceView* kv = nullptr;
  int kv_head = 0;
  int group = 0;      // q heads per KV head
  int num_heads = 0;  // q heads in total (the row stride of q and out)
  float log2_scale = 0.0f;  // the softmax scale times log2(e): scores are kept in base 2
  const float* q = nullptr;  // [num_tokens, num_heads, head_dim], the task's first token
  int num_tokens = 0;
  int64_t first_position = 0;  // of the task's first token
  int64_t key_begin = 0;
  int64_t key_end = 0;
  // Exactly one of:
  float* out = nullptr;  // [num_tokens, num_heads, head_dim], normalized
  // [num_tokens * group, 2 + head_dim]: per row (token t, q head g of the
  // group, row t * group + g) the running max m (base 2; -inf when the row saw
  // no key), the sum l of 2^(s - m), and the unnormalized sum of 2^(s - m) v.
  float* partial = nullptr;
  // AttentionMath::kInt8Scores: full FP8 blocks score with int8 dot products.
  bool int8_scores = false;
};

using AttendFn = void (*)(const AttendTask& task);

// The largest number of query rows (tokens x group) one task may hold.
inline constexpr int kMaxTaskRows = 256;

void AttendGeneric(const AttendTask& task);
#if defined(TETRA_ATTENTION_HAVE_X86_KERNELS)
void AttendAvx2(const AttendTask& task);
void AttendAvx512(const AttendTask& task);
void AttendAvx512Vnni(const AttendTask& task);  // needs AVX-512 F, BW, VL, VNNI and VBMI
#endif

// The fastest kernel this CPU runs for f32 scores or for int8 scores.
AttendFn BestAttendFn(bool int8_scores);

}  // namespace tetra::attention_internal
