// A batched step (several sequences of different lengths and positions in one
// forward pass) gives every sequence the logits it gets alone, which the
// reference tests tie to transformers. Both weight formats.
#include <gtest/gtest.h>

#include <cmath>

#include "model/model.h"
#include "model/session.h"
#include "test_paths.h"

namespace tetra {
namespace {

using Step = Session::Step;

void RunSteps(Session& session, std::span<const Step> steps, std::vector<float>& logits, ThreadPool& pool) {
  const Status status = session.Forward(steps, logits, pool);
  ASSERT_TRUE(status.ok()) << status.message();
}

// Blocks of 4 tokens, so that the short prompts fill (and quantize) blocks.
void ExpectBatchEqualsSequential(const std::string& path, WeightFormat format, KvDtype kv_dtype) {
  auto model = LoadModel(path, LoadOptions{.weights = format, .kv_dtype = kv_dtype, .kv_block_tokens = 4});
  ASSERT_TRUE(model.ok()) << model.status().message();
  Session session(**model, 8, 16);
  const ModelConfig& c = (*model)->config();
  const int64_t vocab = c.vocab_size;
  ThreadPool pool(2);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 42, 99, 3}, {7}, {11, 250, 8, 9, 300, 4, 61, 2, 13}};
  const std::vector<int32_t> next = {21, 22, 23};

  // Alone: prefill then one decode step per sequence.
  std::vector<std::vector<float>> alone_prefill, alone_decode;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int seq = session.NewSequence().value();
    std::vector<float> all(prompts[i].size() * vocab), last(vocab);
    const Step prefill{seq, prompts[i], LogitsRows::kAll};
    RunSteps(session, std::span<const Step>(&prefill, 1), all, pool);
    const Step decode{seq, std::span<const int32_t>(&next[i], 1)};
    RunSteps(session, std::span<const Step>(&decode, 1), last, pool);
    alone_prefill.push_back(all);
    alone_decode.push_back(last);
    session.FreeSequence(seq);
  }
  // Together: one batched prefill (all logits for the first, last rows for
  // the others), then one batched decode step.
  std::vector<Step> prefill, decode;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int seq = session.NewSequence().value();
    prefill.push_back({seq, prompts[i], i == 0 ? LogitsRows::kAll : LogitsRows::kLast});
    decode.push_back({seq, std::span<const int32_t>(&next[i], 1)});
  }
  const size_t prefill_rows = prompts[0].size() + prompts.size() - 1;
  std::vector<float> batched(prefill_rows * vocab);
  RunSteps(session, prefill, batched, pool);
  std::vector<float> batched_decode(prompts.size() * vocab);
  RunSteps(session, decode, batched_decode, pool);

  double max_diff = 0.0;
  auto compare = [&](const float* a, const float* b) {
    for (int64_t j = 0; j < vocab; ++j) max_diff = std::max<double>(max_diff, std::abs(a[j] - b[j]));
  };
  for (size_t t = 0; t < prompts[0].size(); ++t) compare(&batched[t * vocab], &alone_prefill[0][t * vocab]);
  for (size_t i = 1; i < prompts.size(); ++i) {
    compare(&batched[(prompts[0].size() + i - 1) * vocab], &alone_prefill[i][(prompts[i].size() - 1) * vocab]);
  }
  for (size_t i = 0; i < prompts.size(); ++i) compare(&batched_decode[i * vocab], alone_decode[i].data());
  EXPECT_LE(max_diff, 1e-5) << path << " " << WeightFormatName(format) << " " << KvDtypeName(kv_dtype);
}

TEST(BatchTest, BatchedStepEqualsSequencesAlone) {
  for (const char* name : {"llama", "qwen2", "qwen3_moe", "qwen2_moe"}) {
    for (WeightFormat format : {WeightFormat::kReference, WeightFormat::kW4A8}) {
      for (KvDtype kv_dtype : {KvDtype::kF32, KvDtype::kFp8E4M3}) {
        ExpectBatchEqualsSequential(testing::FixturePath(std::string("models/") + name + "/model-f32.gguf"), format,
                                    kv_dtype);
      }
    }
  }
}

// Every token of a step is routed to exactly top-k experts in every MoE layer.
TEST(ExpertLoadTest, CountsEveryRoutedToken) {
  auto model = LoadModel(testing::FixturePath("models/qwen3_moe/model-f32.gguf"));
  ASSERT_TRUE(model.ok()) << model.status().message();
  const Architecture& arch = *(*model)->arch;
  const ModelConfig& c = arch.config();
  ThreadPool pool(2);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7};
  Session session(**model, 1, static_cast<int64_t>(tokens.size()));
  std::vector<float> logits(c.vocab_size);
  const Step step{session.NewSequence().value(), tokens};
  RunSteps(session, std::span<const Step>(&step, 1), logits, pool);
  const auto load = arch.ExpertLoad(session.workspace());
  ASSERT_EQ(load.size(), static_cast<size_t>(c.num_layers));
  for (const auto& layer : load) {
    ASSERT_EQ(layer.size(), static_cast<size_t>(c.num_experts));
    int64_t total = 0;
    for (int64_t count : layer) total += count;
    EXPECT_EQ(total, static_cast<int64_t>(tokens.size()) * c.num_experts_per_token);
  }
  auto dense = LoadModel(testing::FixturePath("models/llama/model-f32.gguf"));
  ASSERT_TRUE(dense.ok());
  EXPECT_TRUE((*dense)->arch->ExpertLoad(*(*dense)->arch->NewWorkspace()).empty());
}

}  // namespace
}  // namespace tetra
