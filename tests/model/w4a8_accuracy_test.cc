// W4A8 (4-bit weights, int8 activations) with the FP8 KV cache against the
// f32 reference of the same model: mean KL divergence of the next-token
// distributions and the perplexity change. The computation is deterministic,
// so the MoE fixtures are held to the KL bound of 0.02; perplexity
// over random tokens moves more, so its bound is loose. The figures on real
// text are measured by `tetra perplexity --kl-vs-reference` and reported.
#include <gtest/gtest.h>

#include <random>

#include "engine/perplexity.h"
#include "model/model.h"
#include "test_paths.h"

namespace tetra {
namespace {

ComparisonResult Compare(const std::string& path, std::span<const int32_t> tokens, int64_t context) {
  // The reference: f32 weights math and f32 KV. The candidate: W4A8 with an
  // FP8 KV cache in blocks of 16, so that most positions are read from FP8.
  auto reference = LoadModel(path, LoadOptions{.weights = WeightFormat::kReference, .kv_dtype = KvDtype::kF32});
  auto packed = LoadModel(path, LoadOptions{.weights = WeightFormat::kW4A8,
                                            .kv_dtype = KvDtype::kFp8E4M3,
                                            .kv_block_tokens = 16});
  EXPECT_TRUE(reference.ok() && packed.ok());
  ThreadPool pool(2);
  PerplexityOptions options;
  options.context = context;
  options.score_second_half = false;
  auto result = CompareWithReference(**reference, **packed, tokens, options, pool);
  EXPECT_TRUE(result.ok()) << result.status().message();
  return result.ok() ? *result : ComparisonResult{};
}

TEST(W4A8AccuracyTest, MoeFixturesStayCloseToTheReference) {
  std::mt19937 rng(1234);
  std::vector<int32_t> tokens(128);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % 500);
  for (const char* name : {"mixtral", "qwen2_moe", "qwen3_moe"}) {
    const ComparisonResult r = Compare(testing::FixturePath(std::string("models/") + name + "/model-f32.gguf"), tokens, 64);
    std::printf("[ w4a8 ] %s: mean KL %.4f nats, perplexity %+.2f%%\n", name, r.mean_kl,
                100.0 * (r.candidate.perplexity / r.reference.perplexity - 1.0));
    // Measured 0.003-0.007 here; 0.025 on mixtral before attention
    // projections kept 8 bits (model/decoder.cc).
    EXPECT_LT(r.mean_kl, 0.02) << name;
    EXPECT_LT(std::abs(r.candidate.perplexity / r.reference.perplexity - 1.0), 0.1) << name;
  }
}

TEST(W4A8AccuracyTest, DefaultModelStaysCloseToTheReference) {
  const std::string path = testing::DefaultModelPathForTests();
  TETRA_REQUIRE_DEFAULT_MODEL_OR_SKIP(path);
  auto files_model = LoadModel(path);
  ASSERT_TRUE(files_model.ok());
  const std::string text =
      "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is "
      "named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 "
      "to 1889. Locally nicknamed La dame de fer, it was constructed as the centrepiece of the 1889 "
      "World's Fair, and to crown the centennial anniversary of the French Revolution. Although "
      "initially criticised by some of France's leading artists and intellectuals for its design, it "
      "has since become a global cultural icon of France and one of the most recognisable structures "
      "in the world.";
  const std::vector<int32_t> tokens = (*files_model)->tokenizer->Encode(text, false, false);
  ASSERT_GE(tokens.size(), 96u);
  const ComparisonResult r = Compare(path, std::span<const int32_t>(tokens).first(96), 96);
  std::printf("[ w4a8 ] SmolLM2: mean KL %.4f nats, perplexity %+.2f%%, top-1 agreement %.1f%%\n", r.mean_kl,
              100.0 * (r.candidate.perplexity / r.reference.perplexity - 1.0), 100.0 * r.top1_agreement);
  // Measured 0.0027 nats and -0.6% (per-group int8 activation scales).
  EXPECT_LT(r.mean_kl, 0.02);
  EXPECT_LT(std::abs(r.candidate.perplexity / r.reference.perplexity - 1.0), 0.05);
}

}  // namespace
}  // namespace tetra
