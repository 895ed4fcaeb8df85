#include "engine/sampler.h"

#include <algorithm>
#include <cmath>

namespace tetra {

int32_t Argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed.value_or(std::random_device{}())) {}

Status ValidateSamplingParams(const SamplingParams& params, int64_t vocab_size) { return Status::Ok(); }

SequenceSampler::SequenceSampler(const SamplingParams& params, uint64_t stream, std::span<const int32_t> prompt)
    : sampler_([&] {
        SamplingParams p = params;
        if (p.seed) p.seed = *p.seed + stream * 0x9e3779b97f4a7c15ULL;
        return p;
      }()) {}

SampleResult SequenceSampler::Sample(const float* logits, int64_t vocab_size, SamplerScratch& scratch) {
  SampleResult result;
  result.token = sampler_.Sample(logits, vocab_size);
  return result;
}

int32_t Sampler::Sample(const float* logits, int64_t vocab_size) {
  if (params_.temperature <= 0.0f) return Argmax(logits, vocab_size);
  candidates_.resize(static_cast<size_t>(vocab_size));
  for (int64_t i = 0; i < vocab_size; ++i) candidates_[i] = {logits[i], static_cast<int32_t>(i)};
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t keep = candidates_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
    keep = static_cast<size_t>(params_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), by_logit);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  candidates_.resize(keep);
  // Softmax with temperature over the kept candidates (sorted, largest first).
  const float max_logit = candidates_[0].first;
  double sum = 0.0;
  for (auto& c : candidates_) {
    c.first = std::exp((c.first - max_logit) / params_.temperature);
    sum += c.first;
  }
  if (params_.top_p < 1.0f) {
    double cumulative = 0.0;
    size_t cut = candidates_.size();
    for (size_t i = 0; i < candidates_.size(); ++i) {
      cumulative += candidates_[i].first / sum;
      if (cumulative >= params_.top_p) {
        cut = i + 1;
        break;
      }
    }
    candidates_.resize(cut);
    sum = 0.0;
    for (const auto& c : candidates_) sum += c.first;
  }
  std::uniform_real_distribution<double> uniform(0.0, sum);
  double r = uniform(rng_);
  for (const auto& c : candidates_) {
    r -= c.first;
    if (r <= 0.0) return c.second;
  }
  return candidates_.back().second;
}

}  // namespace tetra
