#include "engine/perplexity.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/generator.h"

namespace tetra {

namespace {

// log Σ exp(logits[i]), in double.
double LogSumExp(const float* logits, int64_t vocab) {
  double max_logit = logits[0];
  for (int64_t i = 1; i < vocab; ++i) max_logit = std::max<double>(max_logit, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(logits[i] - max_logit);
  return max_logit + std::log(sum);
}

}  // namespace

double NegativeLogLikelihood(const float* logits, int64_t vocab, int32_t next) {
  return LogSumExp(logits, vocab) - logits[next];
}

namespace {

Status CheckWindows(const Model& model, std::span<const int32_t> tokens, const PerplexityOptions& options) {
  const ModelConfig& c = model.config();
  if (options.context < 2) return Status::Errorf("context {} is too small: need at least 2 tokens", options.context);
  if (options.context > c.max_position) {
    return Status::Errorf("context {} exceeds the model's context of {}", options.context, c.max_position);
  }
  if (static_cast<int64_t>(tokens.size()) < options.context) {
    return Status::Errorf("the text has {} tokens, fewer than one window of {}", tokens.size(), options.context);
  }
  return Status::Ok();
}

// Accumulates negative log-likelihoods.
struct NllStats {
  double sum = 0.0;
  double sum_squares = 0.0;
  int64_t count = 0;

  void Add(double nll) {
    sum += nll;
    sum_squares += nll * nll;
    ++count;
  }
  PerplexityResult Finish(int64_t num_windows) const {
    PerplexityResult r;
    r.num_scored = count;
    r.num_windows = num_windows;
    const double n = static_cast<double>(count);
    r.mean_nll = sum / n;
    const double variance = std::max(0.0, sum_squares / n - r.mean_nll * r.mean_nll);
    r.nll_standard_error = n > 1 ? std::sqrt(variance / (n - 1)) : 0.0;
    r.perplexity = std::exp(r.mean_nll);
    return r;
  }
};

// Calls score(window_tokens, t) for every scored position t of every window.
template <typename Score>
int64_t ForEachScoredPosition(std::span<const int32_t> tokens, const PerplexityOptions& options, Score score) {
  const int64_t window = options.context;
  const int64_t first_scored = options.score_second_half ? window / 2 : 1;
  int64_t num_windows = 0;
  for (int64_t begin = 0; begin + window <= static_cast<int64_t>(tokens.size()); begin += window) {
    score(tokens.subspan(begin, window), first_scored);
    ++num_windows;
  }
  return num_windows;
}

}  // namespace

double KlDivergence(const float* p_logits, const float* q_logits, int64_t vocab) {
  const double p_norm = LogSumExp(p_logits, vocab);
  const double q_norm = LogSumExp(q_logits, vocab);
  double kl = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    const double log_p = p_logits[i] - p_norm;
    const double log_q = q_logits[i] - q_norm;
    kl += std::exp(log_p) * (log_p - log_q);
  }
  return std::max(0.0, kl);
}

StatusOr<PerplexityResult> ComputePerplexity(Model& model, std::span<const int32_t> tokens,
                                             const PerplexityOptions& options, ThreadPool& pool) {
  TETRA_RETURN_IF_ERROR(CheckWindows(model, tokens, options));
  const int64_t vocab = model.config().vocab_size;
  NllStats stats;
  const int64_t num_windows = ForEachScoredPosition(tokens, options, [&](std::span<const int32_t> chunk, int64_t first) {
    const std::vector<float> logits = ForwardAllLogits(model, chunk, pool);
    // The logits at position t-1 predict token t.
    for (int64_t t = first; t < static_cast<int64_t>(chunk.size()); ++t) {
      stats.Add(NegativeLogLikelihood(&logits[(t - 1) * vocab], vocab, chunk[t]));
    }
  });
  return stats.Finish(num_windows);
}

StatusOr<ComparisonResult> CompareWithReference(Model& reference, Model& candidate,
                                                std::span<const int32_t> tokens,
                                                const PerplexityOptions& options, ThreadPool& pool) {
  TETRA_RETURN_IF_ERROR(CheckWindows(reference, tokens, options));
  const int64_t vocab = reference.config().vocab_size;
  if (candidate.config().vocab_size != vocab) return Status::Error("the two models have different vocabularies");
  NllStats reference_stats, candidate_stats;
  double kl_sum = 0.0, kl_max = 0.0;
  int64_t agree = 0;
  const int64_t num_windows = ForEachScoredPosition(tokens, options, [&](std::span<const int32_t> chunk, int64_t first) {
    const std::vector<float> p = ForwardAllLogits(reference, chunk, pool);
    const std::vector<float> q = ForwardAllLogits(candidate, chunk, pool);
    for (int64_t t = first; t < static_cast<int64_t>(chunk.size()); ++t) {
      const float* p_row = &p[(t - 1) * vocab];
      const float* q_row = &q[(t - 1) * vocab];
      reference_stats.Add(NegativeLogLikelihood(p_row, vocab, chunk[t]));
      candidate_stats.Add(NegativeLogLikelihood(q_row, vocab, chunk[t]));
      const double kl = KlDivergence(p_row, q_row, vocab);
      kl_sum += kl;
      kl_max = std::max(kl_max, kl);
      agree += std::max_element(p_row, p_row + vocab) - p_row == std::max_element(q_row, q_row + vocab) - q_row;
    }
  });
  ComparisonResult result;
  result.reference = reference_stats.Finish(num_windows);
  result.candidate = candidate_stats.Finish(num_windows);
  result.mean_kl = kl_sum / static_cast<double>(reference_stats.count);
  result.max_kl = kl_max;
  result.top1_agreement = static_cast<double>(agree) / static_cast<double>(reference_stats.count);
  return result;
}

}  // namespace tetra
