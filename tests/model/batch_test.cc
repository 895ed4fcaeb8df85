// A batched step (several sequences of different lengths and positions in one
// ForwardBatch) gives every sequence the logits it gets alone, which the
// reference tests tie to transformers. Both weight formats.
#include <gtest/gtest.h>

#include <cmath>

#include "model/model.h"
#include "test_paths.h"

namespace tetra {
namespace {

// A cache with room for `tokens` positions in `pool`.
KvCache ReservedCache(KvPool& pool, int64_t tokens) {
  KvCache kv(pool);
  EXPECT_TRUE(kv.Reserve(tokens).ok());
  return kv;
}

// Blocks of 4 tokens, so that the short prompts fill (and quantize) blocks.
void ExpectBatchEqualsSequential(const std::string& path, WeightFormat format, KvDtype kv_dtype) {
  auto model = LoadModel(path, LoadOptions{.weights = format, .kv_dtype = kv_dtype, .kv_block_tokens = 4});
  ASSERT_TRUE(model.ok()) << model.status().message();
  Architecture& arch = *(*model)->arch;
  std::unique_ptr<KvPool> kv_pool = NewKvPool(**model, 8, 16);
  const ModelConfig& c = arch.config();
  const int64_t vocab = c.vocab_size;
  ThreadPool pool(2);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 42, 99, 3}, {7}, {11, 250, 8, 9, 300, 4, 61, 2, 13}};
  const std::vector<int32_t> next = {21, 22, 23};

  // Alone: prefill then one decode step per sequence.
  std::vector<std::vector<float>> alone_prefill, alone_decode;
  for (size_t i = 0; i < prompts.size(); ++i) {
    KvCache kv = ReservedCache(*kv_pool, 16);
    std::vector<float> all(prompts[i].size() * vocab), last(vocab);
    arch.Forward(SequenceStep{prompts[i], true}, kv, all.data(), pool);
    arch.Forward(SequenceStep{std::span<const int32_t>(&next[i], 1), false}, kv, last.data(), pool);
    alone_prefill.push_back(all);
    alone_decode.push_back(last);
  }
  // Together: one batched prefill (all logits for the first, last rows for
  // the others), then one batched decode step.
  std::vector<KvCache> caches;
  for (size_t i = 0; i < prompts.size(); ++i) caches.push_back(ReservedCache(*kv_pool, 16));
  std::vector<BatchEntry> prefill;
  for (size_t i = 0; i < prompts.size(); ++i) prefill.push_back({prompts[i], &caches[i], i == 0});
  const size_t prefill_rows = prompts[0].size() + prompts.size() - 1;
  std::vector<float> batched(prefill_rows * vocab);
  arch.ForwardBatch(prefill, batched.data(), pool);
  std::vector<BatchEntry> decode;
  for (size_t i = 0; i < prompts.size(); ++i) decode.push_back({std::span<const int32_t>(&next[i], 1), &caches[i], false});
  std::vector<float> batched_decode(prompts.size() * vocab);
  arch.ForwardBatch(decode, batched_decode.data(), pool);

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
  Architecture& arch = *(*model)->arch;
  const ModelConfig& c = arch.config();
  ThreadPool pool(2);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7};
  std::unique_ptr<KvPool> kv_pool = NewKvPool(**model, 1, static_cast<int64_t>(tokens.size()));
  KvCache kv = ReservedCache(*kv_pool, static_cast<int64_t>(tokens.size()));
  std::vector<float> logits(c.vocab_size);
  arch.Forward(SequenceStep{tokens, false}, kv, logits.data(), pool);
  const auto load = arch.ExpertLoad();
  ASSERT_EQ(load.size(), static_cast<size_t>(c.num_layers));
  for (const auto& layer : load) {
    ASSERT_EQ(layer.size(), static_cast<size_t>(c.num_experts));
    int64_t total = 0;
    for (int64_t count : layer) total += count;
    EXPECT_EQ(total, static_cast<int64_t>(tokens.size()) * c.num_experts_per_token);
  }
  auto dense = LoadModel(testing::FixturePath("models/llama/model-f32.gguf"));
  ASSERT_TRUE(dense.ok());
  EXPECT_TRUE((*dense)->arch->ExpertLoad().empty());
}

}  // namespace
}  // namespace tetra
