// The sampler's distribution: greedy is argmax, top-k never leaves the k most
// likely tokens, top-p keeps the smallest set reaching p, and sampling at
// temperature 1 follows the softmax (chi-square-free check on frequencies).
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

namespace tetra {
namespace {

TEST(SamplerTest, GreedyIsArgmaxWithLowestIndexOnTies) {
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 2.0f};
  Sampler sampler(SamplingParams{.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 1});
  EXPECT_EQ(sampler.Sample(logits.data(), 4), 1);
}

TEST(SamplerTest, TopKKeepsOnlyTheKMostLikely) {
  const std::vector<float> logits = {3.0f, 2.9f, 2.8f, 0.0f, -1.0f, 2.7f};
  Sampler sampler(SamplingParams{.temperature = 1.0f, .top_k = 2, .top_p = 1.0f, .seed = 42});
  for (int i = 0; i < 2000; ++i) {
    const int32_t id = sampler.Sample(logits.data(), 6);
    ASSERT_TRUE(id == 0 || id == 1) << id;
  }
}

TEST(SamplerTest, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities ∝ e^logit: 0.5, 0.25, 0.125, 0.125.
  const std::vector<float> logits = {std::log(4.0f), std::log(2.0f), 0.0f, 0.0f};
  Sampler sampler(SamplingParams{.temperature = 1.0f, .top_k = 0, .top_p = 0.7f, .seed = 7});
  for (int i = 0; i < 2000; ++i) {
    const int32_t id = sampler.Sample(logits.data(), 4);
    ASSERT_TRUE(id == 0 || id == 1) << id;
  }
}

TEST(SamplerTest, FrequenciesFollowTheSoftmax) {
  const std::vector<float> logits = {std::log(0.6f), std::log(0.3f), std::log(0.1f)};
  Sampler sampler(SamplingParams{.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 123});
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[sampler.Sample(logits.data(), 3)];
  // 5 standard deviations of a binomial: cannot fail by chance in practice.
  const double expected[] = {0.6, 0.3, 0.1};
  for (int id = 0; id < 3; ++id) {
    const double p = expected[id];
    EXPECT_NEAR(counts[id] / static_cast<double>(n), p, 5 * std::sqrt(p * (1 - p) / n)) << id;
  }
}

TEST(SamplerTest, SameSeedSameSequence) {
  std::vector<float> logits(100);
  for (int i = 0; i < 100; ++i) logits[i] = std::sin(i * 0.37f) * 3.0f;
  Sampler a(SamplingParams{.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 99});
  Sampler b(SamplingParams{.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = 99});
  for (int i = 0; i < 200; ++i) ASSERT_EQ(a.Sample(logits.data(), 100), b.Sample(logits.data(), 100));
}

}  // namespace
}  // namespace tetra
