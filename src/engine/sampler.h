// Picks the next token from logits: greedy, or temperature + top-k + top-p
// with a seeded generator. One sampler per sequence; not thread-safe.
// (Interim: the serving sampler with penalties, min-p, logit bias and
// logprobs replaces this; SamplingParams already has its fields.)
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "base/status.h"

namespace tetra {

struct SamplingParams {
  float temperature = 1.0f;  // <= 0: greedy
  int top_k = 0;             // <= 0: all tokens
  float top_p = 1.0f;        // >= 1: no nucleus cut
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::vector<std::pair<int32_t, float>> logit_bias;
  std::optional<uint64_t> seed;
  int top_logprobs = -1;  // -1: no logprobs
};

Status ValidateSamplingParams(const SamplingParams& params, int64_t vocab_size);

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;
  bool logits_were_all_invalid = false;
};

class SamplerScratch {
 public:
  std::vector<std::pair<float, int32_t>> candidates;
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

// One sequence's sampler (one per parallel sample): its generator, seeded
// from (seed, stream).
class SequenceSampler {
 public:
  SequenceSampler(const SamplingParams& params, uint64_t stream, std::span<const int32_t> prompt);
  SampleResult Sample(const float* logits, int64_t vocab_size, SamplerScratch& scratch);

 private:
  Sampler sampler_;
};

// Index of the largest logit; the lowest index wins ties (as torch.argmax).
int32_t Argmax(const float* logits, int64_t n);

}  // namespace tetra
