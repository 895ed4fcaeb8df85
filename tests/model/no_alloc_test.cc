// Steady decode allocates nothing: after a warm-up step has grown every
// scratch buffer, further decode steps of a batch (W4A8 with the FP8 KV
// cache and int8 attention scores; the reference path too) make no heap
// allocation on any thread. The binary replaces the global operator new to
// count them, so it is its own test executable.
#include <gtest/gtest.h>

// GCC pairs the replaced operator new with the library's delete when inlining.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <atomic>
#include <cstdlib>
#include <new>

#include "model/model.h"
#include "model/session.h"
#include "test_paths.h"

namespace {
std::atomic<int64_t> g_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace tetra {
namespace {

void ExpectDecodeAllocatesNothing(const std::string& path, WeightFormat format) {
  LoadOptions options;
  options.weights = format;  // W4A8: FP8 KV cache and int8 scores by default
  options.kv_block_tokens = 4;
  auto model = LoadModel(path, options);
  ASSERT_TRUE(model.ok()) << model.status().message();
  const int64_t vocab = (*model)->config().vocab_size;
  Session session(**model, 3, 64);
  ThreadPool pool(2);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 42, 99, 3}, {7, 8}, {11, 250, 8, 9, 300, 4, 61, 2, 13}};
  std::vector<Session::Step> prefill, decode;
  std::vector<int32_t> next = {21, 22, 23};
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int seq = session.NewSequence().value();
    prefill.push_back({seq, prompts[i]});
    decode.push_back({seq, std::span<const int32_t>(&next[i], 1)});
  }
  std::vector<float> logits(prompts.size() * vocab);
  ASSERT_TRUE(session.Forward(prefill, logits, pool).ok());
  ASSERT_TRUE(session.Forward(decode, logits, pool).ok());  // warm-up: grows the decode-sized scratch
  // Steps that cross block boundaries (blocks of 4 tokens fill and are quantized).
  const int64_t before = g_allocations.load();
  for (int step = 0; step < 12; ++step) ASSERT_TRUE(session.Forward(decode, logits, pool).ok());
  EXPECT_EQ(g_allocations.load() - before, 0) << "heap allocations in 12 steady decode steps";
}

TEST(NoAllocTest, W4A8DecodeStepsAllocateNothing) {
  for (const char* name : {"qwen3_moe", "qwen2_moe", "mixtral", "llama"}) {
    SCOPED_TRACE(name);
    ExpectDecodeAllocatesNothing(testing::FixturePath(std::string("models/") + name + "/model-f32.gguf"),
                                 WeightFormat::kW4A8);
  }
}

TEST(NoAllocTest, ReferenceDecodeStepsAllocateNothing) {
  ExpectDecodeAllocatesNothing(testing::FixturePath("models/qwen3_moe/model-f32.gguf"), WeightFormat::kReference);
}

}  // namespace
}  // namespace tetra
