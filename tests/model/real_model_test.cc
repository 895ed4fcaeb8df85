// The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF) against HF
// transformers on the same dequantized weights: same prompt ids from our
// tokenizer and chat template, same greedy continuation, close logits.
// Reference: tools/fixtures/make_model_fixtures.py -> tests/fixtures/real/.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "engine/generator.h"
#include "model/model.h"
#include "test_paths.h"

namespace tetra {
namespace {

using testing::FixturePath;

TEST(RealModelTest, GreedyContinuationsMatchTransformers) {
  const std::string path = testing::DefaultModelPathForTests();
  TETRA_REQUIRE_DEFAULT_MODEL_OR_SKIP(path);
  std::ifstream in(FixturePath("real/smollm2_reference.json"));
  ASSERT_TRUE(in.good());
  const nlohmann::json reference = nlohmann::json::parse(in);
  auto loaded = LoadModel(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  Model& model = **loaded;
  ThreadPool pool(2);
  const int64_t vocab = model.config().vocab_size;
  ASSERT_EQ(vocab, reference["vocab_size"].get<int64_t>());

  for (const auto& c : reference["cases"]) {
    const std::string prompt = c["prompt"].get<std::string>();
    std::vector<int32_t> expected_ids = c["prompt_ids"].get<std::vector<int32_t>>();
    if (c["chat_messages"].is_array()) {
      ASSERT_TRUE(model.chat_template.has_value());
      nlohmann::json context = {{"messages", c["chat_messages"]},
                                {"add_generation_prompt", true},
                                {"bos_token", model.bos_text()},
                                {"eos_token", model.eos_text()}};
      auto rendered = model.chat_template->Render(context);
      ASSERT_TRUE(rendered.ok()) << rendered.status().message();
      EXPECT_EQ(*rendered, prompt);
    }
    // Our tokenizer must give the ids transformers fed the model.
    std::vector<int32_t> ids = model.tokenizer->Encode(prompt, /*add_special=*/false, /*parse_special=*/true);
    if (c["bos_added"].get<bool>()) ids.insert(ids.begin(), reference["bos_token_id"].get<int32_t>());
    EXPECT_EQ(ids, expected_ids) << prompt;

    if (c.contains("last_logits") && c["last_logits"].is_array()) {
      const std::vector<float> logits = ForwardAllLogits(model, expected_ids, pool);
      const float* last = logits.data() + (expected_ids.size() - 1) * vocab;
      double max_diff = 0.0;
      for (int64_t i = 0; i < vocab; ++i) {
        max_diff = std::max(max_diff, std::abs(last[i] - c["last_logits"][i].get<double>()));
      }
      std::printf("[ logits ] SmolLM2 '%.30s': max |diff| = %.3g\n", prompt.c_str(), max_diff);
      EXPECT_LE(max_diff, 2e-3) << prompt;
    }

    GenerateOptions options;
    options.max_new_tokens = reference["num_greedy_tokens"].get<int>();
    options.sampling.temperature = 0.0f;
    options.stop_at_eos = false;
    auto result = Generate(model, expected_ids, options, pool, nullptr);
    ASSERT_TRUE(result.ok()) << result.status().message();
    EXPECT_EQ(result->token_ids, c["greedy_ids"].get<std::vector<int32_t>>()) << prompt;
    EXPECT_EQ(model.tokenizer->Decode(result->token_ids, true), c["greedy_text"].get<std::string>());
  }
}

}  // namespace
}  // namespace tetra
