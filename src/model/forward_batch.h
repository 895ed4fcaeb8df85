// One forward step of the model over several sequences (cross-query
// batching): every sequence's new tokens back to back, where each sequence's
// KV lives, and which rows need logits. Plain views; the caller owns the
// memory until Forward returns.
//
//   tokens       [num_tokens]         flat: sequence i's new tokens are
//                                      tokens[first_token, first_token + num_tokens)
//   sequences    [num_sequences]      in the order of their tokens
//   logits       [num_logit_rows, vocab], rows in sequence order: per sequence
//                                      none, its last token's, or all of its tokens'
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "base/status.h"
#include "kernels/attention/attention.h"  // SharedPrefixGroup
#include "kvcache/block_pool.h"

namespace tetra {

enum class LogitsRows : uint8_t {
  kNone,  // an intermediate prefill chunk: no logits at all (no head product)
  kLast,  // a last prefill chunk or a decode step: the next token's
  kAll,   // scoring (perplexity): every position's
};

struct ForwardSequence {
  int64_t first_token = 0;     // index of its first new token in ForwardBatch::tokens
  int64_t num_tokens = 0;      // new tokens, at least 1
  int64_t start_position = 0;  // positions its KV already holds (the first new token's position)
  std::span<const BlockId> block_table;  // covers start_position + num_tokens positions
  int slot = -1;               // its sequence slot (kvcache/kv_manager.h)
  LogitsRows logits = LogitsRows::kLast;

  int64_t num_logit_rows() const {
    return logits == LogitsRows::kNone ? 0 : logits == LogitsRows::kLast ? 1 : num_tokens;
  }
};

// Decode sequences whose KV starts with the same full blocks (parallel
// samples of one prompt) are grouped by SharedPrefixGroup
// (kernels/attention/attention.h): attention reads that prefix once for the
// whole group.

struct ForwardBatch {
  std::span<const int32_t> tokens;
  std::span<const ForwardSequence> sequences;
  std::span<const SharedPrefixGroup> shared_prefixes;  // groups of sequences, in order
  std::span<float> logits;  // [num_logit_rows(), vocab]
  // Called (on the calling thread) once each layer's KV of this batch is in
  // the cache, before that layer's attention: what is written can be read
  // from then on (a disaggregated prefill streams it to the decode side).
  std::function<void(int layer)> on_layer_written;

  int64_t num_logit_rows() const {
    int64_t rows = 0;
    for (const ForwardSequence& s : sequences) rows += s.num_logit_rows();
    return rows;
  }
};

// What a forward pass can check before it touches anything: every sequence
// has tokens inside `tokens` (in order, no gaps or overlaps), token ids are
// in the vocabulary, positions fit the context, block tables cover the new
// positions with ids inside the pool, slots exist, groups are consistent,
// and the logits span has exactly num_logit_rows() * vocab floats. The
// message names the sequence and the problem.
struct ForwardLimits {
  int64_t vocab_size = 0;
  int64_t max_position = 0;
  int block_tokens = 0;
  int num_blocks = 0;
  int num_slots = 0;
};
Status ValidateForwardBatch(const ForwardBatch& batch, const ForwardLimits& limits);

}  // namespace tetra
