// Every architecture against HF transformers: logits at every prompt position
// within 1e-4 and identical greedy continuations for 32 steps, loading the
// HF directory, the F32 GGUF and the Q8_0 GGUF (whose reference transformers
// computed on the same dequantized weights). Fixtures: tools/fixtures/.
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

struct Variant {
  std::string model;   // fixture folder name
  std::string file;    // "hf", "model-f32.gguf", "model-q8_0.gguf"
  std::string cases;   // key in reference.json
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.model << "/" << v.file; }

std::string PrintVariant(const ::testing::TestParamInfo<Variant>& info) {
  std::string name = info.param.model + "_" + info.param.file;
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

class ReferenceTest : public ::testing::TestWithParam<Variant> {};

TEST_P(ReferenceTest, LogitsAndGreedyMatchTransformers) {
  const Variant& v = GetParam();
  const std::string dir = FixturePath("models/" + v.model);
  auto loaded = LoadModel(dir + "/" + v.file);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  Model& model = **loaded;
  const nlohmann::json reference = ReadJson(dir + "/reference.json");
  ThreadPool pool(2);
  const int64_t vocab = model.config().vocab_size;
  ASSERT_EQ(vocab, reference["vocab_size"].get<int64_t>());

  for (const auto& c : reference[v.cases]) {
    const std::vector<int32_t> prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const std::vector<float> logits = ForwardAllLogits(model, prompt, pool);
    double max_diff = 0.0;
    const auto& expected = c["logits"];
    ASSERT_EQ(expected.size(), prompt.size());
    for (size_t t = 0; t < prompt.size(); ++t) {
      for (int64_t i = 0; i < vocab; ++i) {
        max_diff = std::max(max_diff, std::abs(logits[t * vocab + i] - expected[t][i].get<double>()));
      }
    }
    EXPECT_LE(max_diff, 1e-4) << v.model << "/" << v.file << " prompt: " << c["prompt"];
    RecordProperty("max_logit_diff_" + std::to_string(&c - &reference[v.cases][0]), std::to_string(max_diff));
    std::printf("[ logits ] %s/%s '%s': max |diff| = %.3g\n", v.model.c_str(), v.file.c_str(),
                c["prompt"].get<std::string>().c_str(), max_diff);

    GenerateOptions options;
    options.max_new_tokens = 32;
    options.sampling.temperature = 0.0f;
    options.stop_at_eos = false;
    auto result = Generate(model, prompt, options, pool, nullptr);
    ASSERT_TRUE(result.ok()) << result.status().message();
    EXPECT_EQ(result->token_ids, c["greedy_ids"].get<std::vector<int32_t>>())
        << v.model << "/" << v.file << " prompt: " << c["prompt"];
  }
}

std::vector<Variant> AllVariants() {
  std::vector<Variant> variants;
  for (const char* m : {"llama", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe"}) {
    variants.push_back({m, "hf", "cases"});
    variants.push_back({m, "model-f32.gguf", "cases"});
    variants.push_back({m, "model-q8_0.gguf", "cases_q8_0"});
  }
  return variants;
}

INSTANTIATE_TEST_SUITE_P(Architectures, ReferenceTest, ::testing::ValuesIn(AllVariants()), PrintVariant);

// A dense FFN split into E experts (intermediate neurons partitioned, router
// selecting all of them with equal weight, down projections scaled by E)
// computes the dense model's function.
TEST(MoeSanityTest, SplitDenseEqualsDense) {
  ThreadPool pool(2);
  for (const char* file : {"hf", "model-f32.gguf"}) {
    auto dense = LoadModel(FixturePath(std::string("models/moe_split/dense/") + file));
    auto split = LoadModel(FixturePath(std::string("models/moe_split/split/") + file));
    ASSERT_TRUE(dense.ok()) << dense.status().message();
    ASSERT_TRUE(split.ok()) << split.status().message();
    ASSERT_TRUE((*split)->config().is_moe());
    ASSERT_EQ((*split)->config().num_experts_per_token, (*split)->config().num_experts);
    const std::vector<int32_t> prompt = {5, 17, 42, 99, 3, 250, 7, 8};
    const auto a = ForwardAllLogits(**dense, prompt, pool);
    const auto b = ForwardAllLogits(**split, prompt, pool);
    ASSERT_EQ(a.size(), b.size());
    double max_diff = 0.0;
    for (size_t i = 0; i < a.size(); ++i) max_diff = std::max<double>(max_diff, std::abs(a[i] - b[i]));
    EXPECT_LE(max_diff, 1e-5) << file;
  }
}

}  // namespace
}  // namespace tetra
