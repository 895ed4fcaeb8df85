// The forward pass checks its batch at the boundary: a bad batch is an error
// naming the sequence and the problem, and the KV storage is untouched (the
// same step then runs as if nothing happened). Rows without logits cost no
// head product: an intermediate prefill chunk takes an empty logits span.
#include <gtest/gtest.h>

#include <cmath>

#include "model/model.h"
#include "model/session.h"
#include "test_paths.h"

namespace tetra {
namespace {

class ForwardBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = LoadModel(testing::FixturePath("models/llama/model-f32.gguf"), LoadOptions{.kv_block_tokens = 4});
    ASSERT_TRUE(model.ok()) << model.status().message();
    model_ = std::move(model).value();
    kv_ = std::make_unique<KvManager>(8, 4, 2);
    storage_ = NewKvStorage(*model_, 8, 2);
    workspace_ = model_->arch->NewWorkspace();
    ASSERT_TRUE(kv_->Reserve(seq_, 8).ok());
  }

  // A valid one-sequence batch of `tokens_` (mutated by each test).
  Status Run(std::span<float> logits) {
    const ForwardBatch batch{tokens_, std::span<const ForwardSequence>(&forward_, 1), groups_, logits, {}};
    return model_->arch->Forward(batch, *storage_, *workspace_, pool_);
  }
  std::vector<float> Logits(int rows) { return std::vector<float>(rows * model_->config().vocab_size); }

  std::unique_ptr<Model> model_;
  std::unique_ptr<KvManager> kv_;
  std::unique_ptr<KvStorage> storage_;
  std::unique_ptr<Workspace> workspace_;
  ThreadPool pool_{2};
  KvSequence seq_;
  std::vector<int32_t> tokens_ = {5, 17, 42};
  std::vector<SharedPrefixGroup> groups_;
  ForwardSequence forward_{0, 3, 0, {}, 0, LogitsRows::kLast};
};

TEST_F(ForwardBatchTest, BadBatchesAreErrorsNamingTheProblem) {
  forward_.block_table = seq_.blocks;
  forward_.slot = seq_.slot;
  std::vector<float> logits = Logits(1);
  auto expect_error = [&](const std::string& needle) {
    const Status s = Run(logits);
    ASSERT_FALSE(s.ok()) << "accepted a batch that should fail with: " << needle;
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  tokens_[1] = static_cast<int32_t>(model_->config().vocab_size);
  expect_error("outside the vocabulary");
  tokens_[1] = -1;
  expect_error("outside the vocabulary");
  tokens_[1] = 17;
  forward_.num_tokens = 0;
  expect_error("no new tokens");
  forward_.num_tokens = 3;
  forward_.start_position = 7;  // 10 positions need 3 blocks, the table has 2
  expect_error("need 3 KV blocks");
  forward_.start_position = model_->config().max_position - 1;
  expect_error("exceed the context");
  forward_.start_position = 0;
  forward_.slot = 5;
  expect_error("slot 5");
  forward_.slot = seq_.slot;
  {
    std::vector<float> wrong = Logits(2);
    const Status s = Run(wrong);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("logits hold"), std::string::npos) << s.message();
  }
  tokens_.push_back(3);  // a token no sequence covers
  expect_error("cover 3");
  tokens_.pop_back();
  // After all that, the same step runs and matches a fresh run.
  ASSERT_TRUE(Run(logits).ok());
  Session fresh(*model_, 1, 8);
  const Session::Step step{fresh.NewSequence().value(), tokens_};
  std::vector<float> expected = Logits(1);
  ASSERT_TRUE(fresh.Forward(std::span<const Session::Step>(&step, 1), expected, pool_).ok());
  for (size_t i = 0; i < logits.size(); ++i) ASSERT_EQ(logits[i], expected[i]) << i;
}

TEST_F(ForwardBatchTest, ChunksWithoutLogitsTakeAnEmptySpan) {
  forward_.block_table = seq_.blocks;
  forward_.slot = seq_.slot;
  forward_.logits = LogitsRows::kNone;
  ASSERT_TRUE(Run({}).ok());
  // The next chunk continues from the three positions written.
  tokens_ = {99, 3};
  forward_ = ForwardSequence{0, 2, 3, seq_.blocks, seq_.slot, LogitsRows::kLast};
  std::vector<float> chunked = Logits(1);
  ASSERT_TRUE(Run(chunked).ok());
  Session whole(*model_, 1, 8);
  const std::vector<int32_t> prompt = {5, 17, 42, 99, 3};
  const Session::Step step{whole.NewSequence().value(), prompt};
  std::vector<float> expected = Logits(1);
  ASSERT_TRUE(whole.Forward(std::span<const Session::Step>(&step, 1), expected, pool_).ok());
  double max_diff = 0;
  for (size_t i = 0; i < expected.size(); ++i) max_diff = std::max<double>(max_diff, std::abs(chunked[i] - expected[i]));
  EXPECT_LE(max_diff, 1e-5);
}

}  // namespace
}  // namespace tetra
