// The serving sampler: turns one sequence's logits row into the next token.
//
// Called on the engine's runner thread once per sequence per step, so it never
// sorts the vocabulary and does not allocate in steady state: candidates are
// found by threshold passes over the row (vectorised), top-k by a one-pass
// selection, top-p by splitting the candidates into buckets of logit until
// the cut is found, and only a few dozen tokens are ever sorted. Scratch
// buffers live in a SamplerScratch the caller reuses for every sequence
// (allocated once, at the first row of a vocabulary size); a sampler's
// penalty table grows geometrically with its distinct tokens.
//
// Semantics (OpenAI's API, with vLLM's and transformers' meaning of each knob):
//
// Order of processing, each step:
//   1. logit_bias:   logit[id] += bias.
//   2. penalties:    repetition_penalty over every token of the prompt and of the
//                    generated text (each distinct token once: a logit > 0 is
//                    divided by it, else multiplied by it); then
//                    logit -= frequency_penalty * count + presence_penalty * (count > 0)
//                    with count = occurrences in the generated text only.
//   3. temperature < kGreedyTemperature: greedy, the argmax of the processed
//      logits (lowest id on ties); steps 4-7 are skipped.
//   4. temperature:  logit / temperature.
//   5. top_k:        keep the tokens whose logit is >= the k-th largest (ties at
//                    the k-th value are all kept, as transformers' TopKLogitsWarper).
//   6. top_p:        over the softmax of what top-k kept, in order of decreasing
//                    logit (equal logits: lower id first), keep each token while the
//                    mass of the tokens before it is < top_p (the smallest prefix
//                    whose mass reaches top_p; the most likely token always stays).
//   7. min_p:        keep the tokens with p >= min_p * p_max (p over what top-p kept;
//                    the ratio does not depend on the normalisation).
//   8. sample from the softmax of the kept logits.
// Steps 4-7 follow transformers' generate (temperature, top-k, top-p, min-p
// warpers in that order); the tests compare against those warpers. Step 2's
// order (repetition, then frequency and presence) is vLLM's.
// Softmax weights come from a polynomial exp good to ~2e-7 relative; a token
// more than 86 nats (after temperature) below the most likely has weight 0
// (float's range), so it is never drawn.
//
// Invalid logits: NaN counts as -inf. A -inf token is never chosen. If any
// processed logit is +inf, the +inf tokens share all the probability equally
// (the limit of softmax) and steps 5-7 apply to that uniform distribution
// (greedy: the lowest such id). If every logit is -inf or NaN, Sample returns
// token 0 with logits_were_all_invalid set: the caller ends the request with
// an error.
//
// Logprobs (top_logprobs >= 0): from the model's raw row, before any of the
// steps above (vLLM's default "raw_logprobs"): logprob = log_softmax(raw)[token].
// NaN counts as -inf there too; if the raw row has +inf entries, each has
// logprob -log(count) and every other token -inf. `top` holds the
// top_logprobs tokens of highest raw logprob, descending (lower id first on
// ties), leaving out tokens whose logprob is -inf (so it is shorter when
// fewer tokens have a finite logit, and empty when none has).
//
// Randomness: each SequenceSampler owns a xoshiro256** generator seeded from
// (seed, stream), so a sequence's tokens depend only on its own request and
// logits, never on the rest of the batch; for n parallel samples of one
// request, sample i passes stream = i. Without a seed, a random one (see
// seed()). Deterministic: the same seed, parameters, stream and logits give
// the same tokens on a machine. The vectorised passes are built for AVX-512,
// AVX2+FMA and baseline x86-64, picked at load time; across those builds the
// last bits of a probability may differ, which moves a draw only when it
// falls within rounding of a boundary.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "base/status.h"

namespace tetra {

// temperature below this is greedy (vLLM's sampling epsilon).
inline constexpr float kGreedyTemperature = 1e-5f;
inline constexpr int kMaxTopLogprobs = 20;

struct SamplingParams {
  float temperature = 1.0f;  // [0, 100]; < kGreedyTemperature: greedy. OpenAI allows [0, 2], vLLM more.
  int top_k = 0;             // 0 or -1: off; otherwise >= 1 (values above the vocabulary are off).
  float top_p = 1.0f;        // (0, 1]; 1: off.
  float min_p = 0.0f;        // [0, 1]; 0: off.
  float repetition_penalty = 1.0f;  // (0, 10]; 1: off. Prompt and generated tokens.
  float presence_penalty = 0.0f;    // [-2, 2]; generated tokens only.
  float frequency_penalty = 0.0f;   // [-2, 2]; generated tokens only.
  // token id -> bias in [-100, 100], added to the raw logit; ids distinct and in the vocabulary.
  std::vector<std::pair<int32_t, float>> logit_bias;
  std::optional<uint64_t> seed;  // none: a random seed per SequenceSampler.
  int top_logprobs = -1;         // -1: no logprobs; 0: the chosen token's; 1..20: and that many alternatives.
};

// Ok, or an error naming the field and the value: "top_p must be in (0, 1], got 1.5".
// The server calls it before building samplers; SequenceSampler itself never
// crashes or returns an out-of-range token on parameters this rejects, but
// what it then samples is unspecified.
Status ValidateSamplingParams(const SamplingParams& params, int64_t vocab_size);

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token = 0;
  float logprob = 0.0f;  // raw log-softmax of `token`; set when top_logprobs >= 0
  std::array<TokenLogprob, kMaxTopLogprobs> top_storage{};
  int num_top = 0;
  bool logits_were_all_invalid = false;  // every processed logit was NaN or -inf; token is 0

  std::span<const TokenLogprob> top() const { return {top_storage.data(), static_cast<size_t>(num_top)}; }
};

// One token's probability in the final distribution (what Sample draws from).
struct TokenProb {
  int32_t token = 0;
  double prob = 0.0;
};

// Buffers for one Sample call, sized to the vocabulary on first use and
// reused afterwards. One per thread; shared by all the sequences it samples.
class SamplerScratch {
 public:
  struct Candidate {
    float logit;   // processed logit; once scaled, t = (logit - max) * log2(e) / temperature
    float weight;  // 2^t: 1 for the largest
    int32_t id;
  };

 private:
  friend class SequenceSampler;
  std::vector<float> row;              // processed logits when bias or penalties apply
  std::vector<Candidate> candidates;   // survivors of the threshold passes
  std::vector<Candidate> spill;        // top-p's undecided bucket
  std::vector<Candidate> raw_top;      // top logprobs selection
  // Mass of the row per block (sampler.cc's kBlock tokens): each block's
  // maximum, its mass relative to it, the factor to the row's scale, the mass.
  std::vector<float> block_max, block_rel, block_scale;
  std::vector<double> block_sums;
  void ReserveBlocks(int64_t blocks) {
    if (block_sums.size() >= static_cast<size_t>(blocks)) return;
    block_max.resize(static_cast<size_t>(blocks));
    block_rel.resize(static_cast<size_t>(blocks));
    block_scale.resize(static_cast<size_t>(blocks));
    block_sums.resize(static_cast<size_t>(blocks));
  }
};

// Samples one sequence (one of a request's parallel samples). Not thread-safe;
// cheap to move. Penalty state is per sampler.
class SequenceSampler {
 public:
  // prompt: the sequence's prompt ids (for repetition_penalty; ids outside
  // the vocabulary are ignored at sampling time). stream: the parallel sample's
  // index within its request.
  SequenceSampler(const SamplingParams& params, uint64_t stream, std::span<const int32_t> prompt);

  // Picks the next token from logits[0, vocab) (not modified) and records it
  // for the penalties, as Accept does.
  SampleResult Sample(const float* logits, int64_t vocab, SamplerScratch& scratch);

  // Records a token appended without sampling (a forced token): it counts for
  // the penalties from the next step on.
  void Accept(int32_t token);

  // The distribution Sample would draw from for this row, as (token, p > 0)
  // sorted by token id; the same code path as Sample, without drawing or
  // recording anything. Greedy: the argmax with probability 1. All invalid:
  // empty. For tests and debugging (allocates).
  std::vector<TokenProb> Distribution(const float* logits, int64_t vocab, SamplerScratch& scratch) const;

  uint64_t seed() const { return seed_; }
  const SamplingParams& params() const { return params_; }

 private:
  struct PenaltyEntry {
    int32_t token;
    int32_t generated;  // occurrences in the generated text
    bool in_prompt;
  };
  struct Draw;  // the internal distribution representation (sampler.cc)

  void Record(int32_t token, bool from_prompt);
  // Points at the processed row: `logits` itself, or scratch.row with bias and penalties applied.
  const float* ProcessedRow(const float* logits, int64_t vocab, SamplerScratch& scratch) const;
  void BuildDraw(const float* row, int64_t vocab, SamplerScratch& scratch, Draw& draw) const;

  SamplingParams params_;  // sanitised: every value in its documented range
  bool greedy_ = false;
  bool track_prompt_ = false;
  bool track_generated_ = false;
  uint64_t seed_ = 0;
  std::array<uint64_t, 4> rng_{};
  std::vector<PenaltyEntry> entries_;  // distinct prompt / generated tokens
  std::vector<int32_t> index_;         // open addressing: token -> entries_ index, -1 empty
};

// Index of the largest value; the lowest index wins ties (as torch.argmax).
// NaN counts as -inf; 0 when every value is NaN or -inf, or n <= 0.
int32_t Argmax(const float* logits, int64_t n);

}  // namespace tetra
