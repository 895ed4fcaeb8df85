// Perplexity against HF transformers' logits: the mean negative
// log-likelihood that tetra computes over a prompt equals the one computed
// here from the recorded transformers logits of the same tokens.
#include "engine/perplexity.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "../model/test_paths.h"

namespace tetra {
namespace {

TEST(PerplexityTest, MatchesTransformersLogits) {
  for (const char* name : {"llama", "qwen3_moe"}) {
    const std::string dir = testing::FixturePath(std::string("models/") + name);
    auto model = LoadModel(dir + "/model-f32.gguf");
    ASSERT_TRUE(model.ok()) << model.status().message();
    std::ifstream in(dir + "/reference.json");
    const nlohmann::json reference = nlohmann::json::parse(in);
    ThreadPool pool(2);
    for (const auto& c : reference["cases"]) {
      const auto ids = c["prompt_ids"].get<std::vector<int32_t>>();
      // Oracle: NLL of each next token from transformers' logits.
      double expected_sum = 0.0;
      for (size_t t = 1; t < ids.size(); ++t) {
        const auto logits = c["logits"][t - 1].get<std::vector<double>>();
        double max_logit = logits[0];
        for (double v : logits) max_logit = std::max(max_logit, v);
        double sum = 0.0;
        for (double v : logits) sum += std::exp(v - max_logit);
        expected_sum += max_logit + std::log(sum) - logits[ids[t]];
      }
      const double expected_mean = expected_sum / static_cast<double>(ids.size() - 1);

      PerplexityOptions options;
      options.context = static_cast<int64_t>(ids.size());
      options.score_second_half = false;
      auto result = ComputePerplexity(**model, ids, options, pool);
      ASSERT_TRUE(result.ok()) << result.status().message();
      EXPECT_EQ(result->num_scored, static_cast<int64_t>(ids.size()) - 1);
      EXPECT_NEAR(result->mean_nll, expected_mean, 1e-5) << name;
      EXPECT_NEAR(result->perplexity, std::exp(expected_mean), 1e-4 * std::exp(expected_mean)) << name;
    }
  }
}

TEST(PerplexityTest, RejectsTextShorterThanAWindow) {
  auto model = LoadModel(testing::FixturePath("models/llama/model-f32.gguf"));
  ASSERT_TRUE(model.ok()) << model.status().message();
  ThreadPool pool(1);
  const std::vector<int32_t> ids = {1, 2, 3};
  PerplexityOptions options;
  options.context = 8;
  auto result = ComputePerplexity(**model, ids, options, pool);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("fewer than one window"), std::string::npos);
}

}  // namespace
}  // namespace tetra
