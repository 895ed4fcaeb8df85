#include "model/forward_batch.h"

namespace tetra {

Status ValidateForwardBatch(const ForwardBatch& batch, const ForwardLimits& limits) {
  if (batch.sequences.empty()) return Status::Error("forward batch has no sequences");
  int64_t next_token = 0;
  for (size_t i = 0; i < batch.sequences.size(); ++i) {
    const ForwardSequence& s = batch.sequences[i];
    if (s.num_tokens < 1) return Status::Errorf("forward batch sequence {} has no new tokens", i);
    if (s.first_token != next_token) {
      return Status::Errorf("forward batch sequence {} starts at token {}, expected {}", i, s.first_token, next_token);
    }
    next_token += s.num_tokens;
    if (next_token > static_cast<int64_t>(batch.tokens.size())) {
      return Status::Errorf("forward batch sequence {} ends at token {} past the {} tokens", i, next_token,
                            batch.tokens.size());
    }
    if (s.start_position < 0 || s.start_position + s.num_tokens > limits.max_position) {
      return Status::Errorf("forward batch sequence {}: positions [{}, {}) exceed the context of {}", i,
                            s.start_position, s.start_position + s.num_tokens, limits.max_position);
    }
    const int64_t blocks_needed = (s.start_position + s.num_tokens + limits.block_tokens - 1) / limits.block_tokens;
    if (static_cast<int64_t>(s.block_table.size()) < blocks_needed) {
      return Status::Errorf("forward batch sequence {}: {} positions need {} KV blocks, the table has {}", i,
                            s.start_position + s.num_tokens, blocks_needed, s.block_table.size());
    }
    for (int64_t b = 0; b < blocks_needed; ++b) {
      if (s.block_table[b] < 0 || s.block_table[b] >= limits.num_blocks) {
        return Status::Errorf("forward batch sequence {}: block {} is {}, outside the pool of {}", i, b,
                              s.block_table[b], limits.num_blocks);
      }
    }
    if (s.slot < 0 || s.slot >= limits.num_slots) {
      return Status::Errorf("forward batch sequence {}: slot {} outside [0, {})", i, s.slot, limits.num_slots);
    }
  }
  if (next_token != static_cast<int64_t>(batch.tokens.size())) {
    return Status::Errorf("forward batch has {} tokens but its sequences cover {}", batch.tokens.size(), next_token);
  }
  for (size_t t = 0; t < batch.tokens.size(); ++t) {
    if (batch.tokens[t] < 0 || batch.tokens[t] >= limits.vocab_size) {
      return Status::Errorf("forward batch token {} is id {}, outside the vocabulary of {}", t, batch.tokens[t],
                            limits.vocab_size);
    }
  }
  const int64_t logit_floats = batch.num_logit_rows() * limits.vocab_size;
  if (static_cast<int64_t>(batch.logits.size()) != logit_floats) {
    return Status::Errorf("forward batch logits hold {} floats, {} rows of {} need {}", batch.logits.size(),
                          batch.num_logit_rows(), limits.vocab_size, logit_floats);
  }
  int previous_end = 0;
  for (size_t g = 0; g < batch.shared_prefixes.size(); ++g) {
    const SharedPrefixGroup& group = batch.shared_prefixes[g];
    if (group.first < previous_end || group.count < 1 ||
        group.first + group.count > static_cast<int>(batch.sequences.size())) {
      return Status::Errorf("forward batch shared-prefix group {} covers sequences [{}, {}) out of order or range", g,
                            group.first, group.first + group.count);
    }
    previous_end = group.first + group.count;
    if (group.prefix_tokens < 0 || group.prefix_tokens % limits.block_tokens != 0) {
      return Status::Errorf("forward batch shared-prefix group {}: prefix of {} tokens is not whole blocks of {}", g,
                            group.prefix_tokens, limits.block_tokens);
    }
    const ForwardSequence& lead = batch.sequences[group.first];
    const int64_t prefix_blocks = group.prefix_tokens / limits.block_tokens;
    for (int i = group.first; i < group.first + group.count; ++i) {
      const ForwardSequence& s = batch.sequences[i];
      if (s.num_tokens != 1 || s.start_position < group.prefix_tokens) {
        return Status::Errorf("forward batch shared-prefix group {}: sequence {} is not one decode token past the prefix",
                              g, i);
      }
      for (int64_t b = 0; b < prefix_blocks; ++b) {
        if (s.block_table[b] != lead.block_table[b]) {
          return Status::Errorf("forward batch shared-prefix group {}: sequence {} has block {} at {}, not {}", g, i,
                                s.block_table[b], b, lead.block_table[b]);
        }
      }
    }
  }
  return Status::Ok();
}

}  // namespace tetra
