#include "engine/perplexity.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/generator.h"

namespace tetra {

double NegativeLogLikelihood(const float* logits, int64_t vocab, int32_t next) {
  double max_logit = logits[0];
  for (int64_t i = 1; i < vocab; ++i) max_logit = std::max<double>(max_logit, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(logits[i] - max_logit);
  return std::log(sum) + max_logit - logits[next];
}

StatusOr<PerplexityResult> ComputePerplexity(Model& model, std::span<const int32_t> tokens,
                                             const PerplexityOptions& options, ThreadPool& pool) {
  const ModelConfig& c = model.config();
  if (options.context < 2) return Status::Errorf("context {} is too small: need at least 2 tokens", options.context);
  if (options.context > c.max_position) {
    return Status::Errorf("context {} exceeds the model's context of {}", options.context, c.max_position);
  }
  if (static_cast<int64_t>(tokens.size()) < options.context) {
    return Status::Errorf("the text has {} tokens, fewer than one window of {}", tokens.size(), options.context);
  }
  const int64_t window = options.context;
  const int64_t first_scored = options.score_second_half ? window / 2 : 1;
  PerplexityResult result;
  double sum = 0.0, sum_squares = 0.0;
  for (int64_t begin = 0; begin + window <= static_cast<int64_t>(tokens.size()); begin += window) {
    const auto chunk = tokens.subspan(begin, window);
    const std::vector<float> logits = ForwardAllLogits(model, chunk, pool);
    for (int64_t t = first_scored; t < window; ++t) {
      // The logits at position t-1 predict token t.
      const double nll = NegativeLogLikelihood(&logits[(t - 1) * c.vocab_size], c.vocab_size, chunk[t]);
      sum += nll;
      sum_squares += nll * nll;
      ++result.num_scored;
    }
    ++result.num_windows;
  }
  const double n = static_cast<double>(result.num_scored);
  result.mean_nll = sum / n;
  const double variance = std::max(0.0, sum_squares / n - result.mean_nll * result.mean_nll);
  result.nll_standard_error = n > 1 ? std::sqrt(variance / (n - 1)) : 0.0;
  result.perplexity = std::exp(result.mean_nll);
  return result;
}

}  // namespace tetra
