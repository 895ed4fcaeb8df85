// Perplexity of a model over a token sequence, scored in windows of
// `context` tokens as llama.cpp's perplexity tool does: each window is a fresh
// sequence, and only its second half is scored so that every scored token
// sees at least context/2 tokens before it. Engine thread; kernels on pool.
#pragma once

#include <span>

#include "base/status.h"
#include "base/thread_pool.h"
#include "model/model.h"

namespace tetra {

struct PerplexityOptions {
  int64_t context = 512;       // tokens per window
  bool score_second_half = true;  // false: score every token after the first
};

struct PerplexityResult {
  double perplexity = 0.0;          // exp(mean negative log-likelihood)
  double mean_nll = 0.0;            // nats per scored token
  double nll_standard_error = 0.0;  // of the mean
  int64_t num_scored = 0;
  int64_t num_windows = 0;
};

// Negative log-likelihood of `next` under logits[vocab] (log-softmax in double).
double NegativeLogLikelihood(const float* logits, int64_t vocab, int32_t next);

StatusOr<PerplexityResult> ComputePerplexity(Model& model, std::span<const int32_t> tokens,
                                             const PerplexityOptions& options, ThreadPool& pool);

// How far a candidate (e.g. W4A8) is from the reference model on the same
// windows: both perplexities, and the mean KL(reference || candidate) of the
// next-token distributions at the scored positions.
struct ComparisonResult {
  PerplexityResult reference;
  PerplexityResult candidate;
  double mean_kl = 0.0;      // nats
  double max_kl = 0.0;
  double top1_agreement = 0.0;  // fraction of positions with the same argmax
};

// KL(p || q) of the softmax distributions of two logit rows, in nats.
double KlDivergence(const float* p_logits, const float* q_logits, int64_t vocab);

StatusOr<ComparisonResult> CompareWithReference(Model& reference, Model& candidate,
                                                std::span<const int32_t> tokens,
                                                const PerplexityOptions& options, ThreadPool& pool);

}  // namespace tetra
