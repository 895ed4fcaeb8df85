// Causal attention of a batch of sequences' new tokens over their paged KV
// cache (kernels/attention/paged_kv.h), GQA. Sequences with many new tokens
// (prefill chunks) run FlashAttention-style: query tiles against key tiles
// with an online softmax, no full score matrix. Sequences with few new tokens
// (decode) split their KV across threads when that keeps the threads busy
// (split-KV), each part producing a partial softmax state that is merged
// after. Decode sequences that share a prefix of KV blocks (parallel samples
// of one prompt, SharedPrefixGroup) read that prefix once per KV head for all
// of them. Everything runs on the given pool; scratch is reused across calls,
// so steady decode allocates nothing. One caller at a time (the pool's rule).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/attention/paged_kv.h"
#include "kernels/reference/attention.h"  // AttentionShape

namespace tetra {

// One sequence's part of a batched call. The new tokens are the last
// num_tokens positions the cache holds: token t sits at position
// kv.length - num_tokens + t and attends to positions [0, that position].
struct PagedAttentionSequence {
  const float* q = nullptr;  // [num_tokens, num_heads, head_dim]
  int64_t num_tokens = 0;
  KvSequenceView kv;
  float* out = nullptr;  // [num_tokens, num_heads, head_dim]
};

// How scores (q . k) are computed over full FP8 blocks.
//   kF32: keys dequantized to f32 (and every block of every dtype).
//   kInt8Scores: int8 dot products (SageAttention-style): each query row
//     quantized to int8 (per row, symmetric) once per work item, each key
//     code mapped by a fixed table to int8 at the block's scale x 448 / 127.
//     Softmax and P.V stay f32. Open (f32) blocks and BF16/F32 layers score
//     in f32 either way. Every ISA build computes the same integers:
//     kAvx512Vnni with vpdpbusd (about 1.8x faster decode), the others with
//     f32 FMAs on exact integers (about their f32 speed).
// doc/attention.md has the math and its accuracy.
enum class AttentionMath : uint8_t { kF32, kInt8Scores };
const char* AttentionMathName(AttentionMath math);

void PagedAttention(const AttentionShape& shape, const KvLayerView& layer,
                    std::span<const PagedAttentionSequence> sequences, ThreadPool& pool,
                    AttentionMath math = AttentionMath::kF32);

// Decode sequences [first, first + count) of a call that share their first
// prefix_tokens positions: the same block ids over block_table[0,
// prefix_tokens / block_tokens) (parallel samples of one prompt). The shared
// blocks are read once per KV head for all of them: the samples' query rows
// (count x the GQA group) are stacked into one work item over keys [0,
// prefix_tokens) (no key there is masked: every sample's position is at
// least prefix_tokens - 1), cut into parts across threads as split-KV cuts a
// long sequence; each sample attends to its own keys [prefix_tokens,
// kv.length) as usual; per sample the parts merge by their log-sum-exp
// weights. The outputs equal the ungrouped call's up to f32 summation order.
// Requirements (TETRA_CHECK):
//   - groups lie in [0, sequences.size()) and do not overlap;
//   - each member has exactly one new token, and the members' q rows are back
//     to back: sequences[first + i].q == sequences[first].q + i * num_heads *
//     head_dim (true when the caller lays the group's tokens out together);
//   - prefix_tokens is a multiple of the layer's block_tokens, at most every
//     member's kv.length, and the members' block tables agree over it (so the
//     prefix never includes an open block).
// A group of count <= 1 or prefix_tokens 0 is attended as if ungrouped; the
// outputs (`out`) may lie anywhere.
struct SharedPrefixGroup {
  int first = 0;  // index into sequences
  int count = 0;
  int64_t prefix_tokens = 0;
};

void PagedAttention(const AttentionShape& shape, const KvLayerView& layer,
                    std::span<const PagedAttentionSequence> sequences, std::span<const SharedPrefixGroup> groups,
                    ThreadPool& pool, AttentionMath math = AttentionMath::kF32);

// The instruction sets the tile kernel is built for; kBest is the fastest
// this CPU runs for the math (for kF32 the avx512 build, for kInt8Scores the
// avx512vnni one, when the CPU has them). The overload below pins one (tests
// run every supported one). kAvx512Vnni needs AVX-512 F, BW, VL, VNNI and VBMI.
enum class AttentionIsa : uint8_t { kBest, kGeneric, kAvx2, kAvx512, kAvx512Vnni };
std::vector<AttentionIsa> SupportedAttentionIsas();  // kGeneric first, then by ISA level
// True when the CPU runs the int8 score build (vpdpbusd): there int8 scores
// are faster than f32; elsewhere they cost about the same or more.
bool HasFastInt8Scores();
const char* AttentionIsaName(AttentionIsa isa);
void PagedAttention(const AttentionShape& shape, const KvLayerView& layer,
                    std::span<const PagedAttentionSequence> sequences, ThreadPool& pool, AttentionIsa isa,
                    AttentionMath math = AttentionMath::kF32);
void PagedAttention(const AttentionShape& shape, const KvLayerView& layer,
                    std::span<const PagedAttentionSequence> sequences, std::span<const SharedPrefixGroup> groups,
                    ThreadPool& pool, AttentionIsa isa, AttentionMath math = AttentionMath::kF32);

// The split-KV plan for decode sequences (exposed for tests): how many parts
// each sequence's KV is cut into, given the KV lengths and thread count.
// Short sequences get 1; long ones get more, so that the total work is cut
// into enough similar-sized pieces for every thread, and no piece is shorter
// than a minimum worth its merge.
std::vector<int> PlanKvSplits(std::span<const int64_t> kv_lengths, int num_kv_heads, int num_threads);
// The same plan written into parts[kv_lengths.size()], allocating nothing.
void PlanKvSplitsInto(std::span<const int64_t> kv_lengths, int num_kv_heads, int num_threads, std::span<int> parts);

// The plan's constants: no part is shorter than kMinKvPartTokens, and the
// work is cut into about kKvPiecesPerThread pieces per thread.
inline constexpr int64_t kMinKvPartTokens = 256;
inline constexpr int kKvPiecesPerThread = 8;
// Sequences with at most this many new tokens are decoded (split-KV); more
// new tokens run as a tiled prefill.
inline constexpr int64_t kMaxDecodeTokens = 4;
// The most query heads one KV head may serve (GQA group); model loading
// refuses configs beyond it.
inline constexpr int kMaxQueryHeadsPerKvHead = 256;
// The largest head_dim kInt8Scores takes: its integer dot products (at most
// 127 x 127 x head_dim) stay exact in f32.
inline constexpr int kMaxInt8ScoresHeadDim = 1024;

}  // namespace tetra
