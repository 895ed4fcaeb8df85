// Picks the next token from logits: greedy, or temperature + top-k + top-p
// with a seeded generator. One sampler per sequence; not thread-safe.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace tetra {

struct SamplingParams {
  float temperature = 0.8f;  // <= 0: greedy
  int top_k = 40;            // <= 0: all tokens
  float top_p = 0.95f;       // >= 1: no nucleus cut
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // logits: [vocab_size]
  int32_t Sample(const float* logits, int64_t vocab_size);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

// Index of the largest logit; the lowest index wins ties (as torch.argmax).
int32_t Argmax(const float* logits, int64_t n);

}  // namespace tetra
