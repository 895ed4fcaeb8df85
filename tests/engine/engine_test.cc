// The engine on real (fixture) models: greedy output through the engine
// equals single-sequence generation (which reference_test ties to
// transformers), alone and inside a busy batch, with and without overlapped
// steps; stop strings end text across token boundaries; aborts and
// shutdown give every request its final update and free every block.
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <map>
#include <mutex>

#include "engine/generator.h"
#include "model/model.h"
#include "../model/test_paths.h"

namespace tetra {
namespace {

// Collects a request's updates until its last one.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::map<int, std::vector<int32_t>> tokens;
  std::map<int, std::string> text;
  std::map<int, FinishReason> finish;
  std::map<int, std::string> stop_string;
  RequestUsage usage;
  Status error;
  bool finished = false;
  int num_updates = 0;
  int num_final_updates = 0;

  UpdateCallback Callback() {
    return [this](RequestUpdate&& u) {
      std::lock_guard<std::mutex> lock(mu);
      ++num_updates;
      for (const SampleUpdate& s : u.samples) {
        tokens[s.index].insert(tokens[s.index].end(), s.tokens.begin(), s.tokens.end());
        text[s.index] += s.text;
        if (s.finish) finish[s.index] = *s.finish;
        if (!s.stop_string.empty()) stop_string[s.index] = s.stop_string;
      }
      usage = u.usage;
      if (u.finished) {
        finished = true;
        error = u.error;
        ++num_final_updates;
      }
      cv.notify_all();
    };
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(120), [&] { return finished; })) << "request did not finish";
  }
};

std::unique_ptr<Model> Load(const std::string& name, WeightFormat format = WeightFormat::kReference) {
  auto model = LoadModel(testing::FixturePath("models/" + name + "/model-f32.gguf"),
                         LoadOptions{.weights = format, .pool = nullptr, .kv_dtype = {}, .kv_block_tokens = 4});
  EXPECT_TRUE(model.ok()) << model.status().message();
  return model.ok() ? std::move(model).value() : nullptr;
}

std::vector<int32_t> GreedyAlone(Model& model, const std::vector<int32_t>& prompt, int max_tokens) {
  ThreadPool pool(2);
  GenerateOptions options;
  options.max_new_tokens = max_tokens;
  options.sampling.temperature = 0.0f;
  options.stop_at_eos = false;
  auto result = Generate(model, prompt, options, pool, nullptr);
  EXPECT_TRUE(result.ok()) << result.status().message();
  return result->token_ids;
}

EngineRequest Greedy(std::vector<int32_t> prompt, int max_tokens) {
  EngineRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.0f;
  r.ignore_eos = true;
  return r;
}

std::vector<int32_t> Prompt(int length, int seed, int64_t vocab) {
  std::vector<int32_t> p(length);
  for (int i = 0; i < length; ++i) p[i] = static_cast<int32_t>((seed * 37 + i * 101 + 7) % vocab);
  return p;
}

EngineOptions Options(bool overlap) {
  EngineOptions o;
  o.num_threads = 2;
  o.max_num_sequences = 32;
  o.max_step_tokens = 64;
  o.overlap = overlap;
  return o;
}

void ExpectIdle(const Engine& engine) {
  // Blocks are freed by the engine thread once the last step has come back.
  for (int i = 0; i < 200; ++i) {
    const EngineMetrics m = engine.metrics();
    if (m.kv_cache_usage == 0.0 && m.num_requests_running == 0 && m.num_requests_waiting == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const EngineMetrics m = engine.metrics();
  EXPECT_EQ(m.kv_cache_usage, 0.0);
  EXPECT_EQ(m.num_requests_running, 0);
  EXPECT_EQ(m.num_requests_waiting, 0);
}

// Batch invariance on the exact path: a request's greedy tokens are the same
// alone (single-sequence generation) and among 16 others of every length,
// mid-prefill and mid-decode, with and without overlap.
TEST(EngineTest, GreedyInABusyBatchEqualsGreedyAlone) {
  for (const char* name : {"qwen3_moe", "llama"}) {
    std::unique_ptr<Model> model = Load(name);
    ASSERT_NE(model, nullptr);
    const int64_t vocab = model->config().vocab_size;
    std::vector<std::vector<int32_t>> prompts;
    std::vector<int> lengths;
    for (int i = 0; i < 16; ++i) {
      prompts.push_back(Prompt(3 + (i * 13) % 70, i, vocab));
      lengths.push_back(4 + (i * 7) % 20);
    }
    std::vector<std::vector<int32_t>> expected;
    for (int i = 0; i < 16; ++i) expected.push_back(GreedyAlone(*model, prompts[i], lengths[i]));
    for (bool overlap : {false, true}) {
      auto engine = CreateEngine(*model, Options(overlap));
      ASSERT_TRUE(engine.ok()) << engine.status().message();
      std::vector<std::unique_ptr<Collector>> collectors;
      for (int i = 0; i < 16; ++i) {
        collectors.push_back(std::make_unique<Collector>());
        ASSERT_TRUE((*engine)->Submit(Greedy(prompts[i], lengths[i]), collectors[i]->Callback()).ok());
      }
      for (int i = 0; i < 16; ++i) {
        collectors[i]->Wait();
        EXPECT_EQ(collectors[i]->tokens[0], expected[i]) << name << " request " << i << " overlap " << overlap;
        EXPECT_EQ(collectors[i]->finish[0], FinishReason::kLength);
        EXPECT_EQ(collectors[i]->usage.completion_tokens, lengths[i]);
        EXPECT_EQ(collectors[i]->usage.prompt_tokens, static_cast<int64_t>(prompts[i].size()));
        EXPECT_EQ(collectors[i]->num_final_updates, 1);
      }
      ExpectIdle(**engine);
      const EngineMetrics m = (*engine)->metrics();
      EXPECT_GT(m.num_steps, 0);
      EXPECT_EQ(m.requests_finished[static_cast<int>(FinishReason::kLength)], 16);
      EXPECT_EQ(m.time_to_first_token.count, 16u);
    }
  }
}

// The text of the output is the tokenizer's decoding of its tokens, and a
// stop string that spans tokens cuts it (before the stop, or after it with
// include_stop_string).
TEST(EngineTest, StopStringsCutTheTextAcrossTokens) {
  std::unique_ptr<Model> model = Load("qwen3_moe");
  ASSERT_NE(model, nullptr);
  const std::vector<int32_t> prompt = Prompt(9, 3, model->config().vocab_size);
  const std::vector<int32_t> greedy = GreedyAlone(*model, prompt, 24);
  const std::string full = model->tokenizer->Decode(greedy, /*skip_special=*/true);
  ASSERT_GE(full.size(), 12u);
  // A stop string that starts inside token 3's text and ends inside a later one.
  const std::string head = model->tokenizer->Decode(std::span<const int32_t>(greedy).first(3), true);
  const size_t at = head.size() - (head.size() > 1 ? 1 : 0);
  const std::string stop = full.substr(at, 5);
  const size_t first = full.find(stop);
  auto engine = CreateEngine(*model, Options(true));
  ASSERT_TRUE(engine.ok());
  for (bool include : {false, true}) {
    EngineRequest r = Greedy(prompt, 24);
    r.stop = {"never appears in this text \x01", stop};
    r.include_stop_string = include;
    Collector c;
    ASSERT_TRUE((*engine)->Submit(r, c.Callback()).ok());
    c.Wait();
    EXPECT_EQ(c.text[0], full.substr(0, first + (include ? stop.size() : 0))) << "stop '" << stop << "'";
    EXPECT_EQ(c.finish[0], FinishReason::kStop);
    EXPECT_EQ(c.stop_string[0], stop);
  }
  // Without a stop string the text is the whole decoding.
  Collector c;
  ASSERT_TRUE((*engine)->Submit(Greedy(prompt, 24), c.Callback()).ok());
  c.Wait();
  EXPECT_EQ(c.text[0], full);
  EXPECT_EQ(c.tokens[0], greedy);
  ExpectIdle(**engine);
}

TEST(EngineTest, ParallelSamplesShareThePromptAndEachFinish) {
  std::unique_ptr<Model> model = Load("qwen3_moe");
  ASSERT_NE(model, nullptr);
  auto engine = CreateEngine(*model, Options(true));
  ASSERT_TRUE(engine.ok());
  const std::vector<int32_t> prompt = Prompt(21, 5, model->config().vocab_size);
  EngineRequest r = Greedy(prompt, 10);
  r.n = 4;
  Collector c;
  ASSERT_TRUE((*engine)->Submit(r, c.Callback()).ok());
  c.Wait();
  // Greedy samples of one prompt are all the greedy continuation.
  const std::vector<int32_t> expected = GreedyAlone(*model, prompt, 10);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(c.tokens[i], expected) << "sample " << i;
    EXPECT_EQ(c.finish[i], FinishReason::kLength);
  }
  EXPECT_EQ(c.usage.completion_tokens, 40);
  ExpectIdle(**engine);
}

// A seeded request samples the same tokens alone and among others, and its
// parallel samples are distinct streams, the same from run to run.
TEST(EngineTest, SeededSamplingIsTheSameWhateverElseRuns) {
  std::unique_ptr<Model> model = Load("qwen3_moe");
  ASSERT_NE(model, nullptr);
  const int64_t vocab = model->config().vocab_size;
  auto engine = CreateEngine(*model, Options(true));
  ASSERT_TRUE(engine.ok());
  EngineRequest r = Greedy(Prompt(15, 21, vocab), 20);
  r.sampling.temperature = 1.0f;
  r.sampling.top_p = 0.95f;
  r.sampling.seed = 77;
  r.n = 3;
  Collector alone;
  ASSERT_TRUE((*engine)->Submit(r, alone.Callback()).ok());
  alone.Wait();
  std::vector<std::unique_ptr<Collector>> others;
  Collector busy;
  for (int i = 0; i < 10; ++i) {
    EngineRequest other = Greedy(Prompt(5 + 3 * i, 100 + i, vocab), 25);
    other.sampling.temperature = 0.9f;
    others.push_back(std::make_unique<Collector>());
    ASSERT_TRUE((*engine)->Submit(other, others.back()->Callback()).ok());
    if (i == 4) {
      ASSERT_TRUE((*engine)->Submit(r, busy.Callback()).ok());
    }
  }
  busy.Wait();
  for (auto& c : others) c->Wait();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(busy.tokens[i], alone.tokens[i]) << "sample " << i;
  EXPECT_NE(alone.tokens[0], alone.tokens[1]);
  ExpectIdle(**engine);
}

TEST(EngineTest, ASecondRequestWithTheSamePromptHitsThePrefixCache) {
  std::unique_ptr<Model> model = Load("llama");
  ASSERT_NE(model, nullptr);
  auto engine = CreateEngine(*model, Options(false));
  ASSERT_TRUE(engine.ok());
  const std::vector<int32_t> prompt = Prompt(30, 8, model->config().vocab_size);
  Collector first, second;
  ASSERT_TRUE((*engine)->Submit(Greedy(prompt, 6), first.Callback()).ok());
  first.Wait();
  ASSERT_TRUE((*engine)->Submit(Greedy(prompt, 6), second.Callback()).ok());
  second.Wait();
  EXPECT_EQ(first.usage.cached_prompt_tokens, 0);
  EXPECT_EQ(second.usage.cached_prompt_tokens, 28);  // 7 full blocks of 4; the last token is computed
  EXPECT_EQ(second.tokens[0], first.tokens[0]);
  const EngineMetrics m = (*engine)->metrics();
  EXPECT_EQ(m.prefix_cache_hits, 28);
  EXPECT_EQ(m.prefix_cache_queries, 60);
  ExpectIdle(**engine);
}

TEST(EngineTest, AbortEndsARequestAndOthersFinish) {
  std::unique_ptr<Model> model = Load("qwen3_moe");
  ASSERT_NE(model, nullptr);
  auto engine = CreateEngine(*model, Options(true));
  ASSERT_TRUE(engine.ok());
  const int64_t vocab = model->config().vocab_size;
  Collector aborted, kept;
  EngineRequest long_request = Greedy(Prompt(40, 9, vocab), 450);
  auto id = (*engine)->Submit(long_request, aborted.Callback());
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE((*engine)->Submit(Greedy(Prompt(12, 10, vocab), 30), kept.Callback()).ok());
  {
    std::unique_lock<std::mutex> lock(aborted.mu);
    aborted.cv.wait_for(lock, std::chrono::seconds(60), [&] { return aborted.num_updates >= 3; });
  }
  (*engine)->Abort(*id);
  (*engine)->Abort(*id);      // twice: ignored
  (*engine)->Abort(987654);   // unknown: ignored
  aborted.Wait();
  kept.Wait();
  EXPECT_EQ(aborted.finish[0], FinishReason::kAbort);
  EXPECT_LT(aborted.tokens[0].size(), 450u);
  EXPECT_EQ(aborted.num_final_updates, 1);
  EXPECT_EQ(kept.finish[0], FinishReason::kLength);
  EXPECT_EQ(kept.tokens[0].size(), 30u);
  ExpectIdle(**engine);
}

TEST(EngineTest, ShutdownGivesEveryRequestItsFinalUpdate) {
  std::unique_ptr<Model> model = Load("qwen3_moe");
  ASSERT_NE(model, nullptr);
  auto engine = CreateEngine(*model, Options(true));
  ASSERT_TRUE(engine.ok());
  std::vector<std::unique_ptr<Collector>> collectors;
  for (int i = 0; i < 8; ++i) {
    collectors.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(
        (*engine)->Submit(Greedy(Prompt(10 + i, i, model->config().vocab_size), 400), collectors[i]->Callback()).ok());
  }
  (*engine)->Shutdown();
  for (auto& c : collectors) {
    EXPECT_TRUE(c->finished);
    EXPECT_EQ(c->num_final_updates, 1);
  }
  auto late = (*engine)->Submit(Greedy({1, 2, 3}, 2), [](RequestUpdate&&) {});
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), StatusCode::kUnavailable);
}

TEST(EngineTest, InvalidRequestsAreRefusedAtSubmit) {
  std::unique_ptr<Model> model = Load("llama");
  ASSERT_NE(model, nullptr);
  auto engine = CreateEngine(*model, Options(true));
  ASSERT_TRUE(engine.ok());
  EngineRequest empty = Greedy({}, 4);
  EXPECT_FALSE((*engine)->Submit(empty, [](RequestUpdate&&) {}).ok());
  EngineRequest too_long = Greedy(Prompt(10, 1, model->config().vocab_size), 1 << 20);
  const auto s = (*engine)->Submit(too_long, [](RequestUpdate&&) {});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("maximum context length"), std::string::npos) << s.status().message();
  EXPECT_EQ(s.status().code(), StatusCode::kInvalid);
}

}  // namespace
}  // namespace tetra

namespace tetra {
namespace {

// Speculative decoding on the exact path (f32 KV, reference weights): the
// guesses verified in each step change nothing, token for token, alone or
// in a batch, with and without overlap; rejected guesses' KV is rolled back
// (every block is free at the end).
TEST(EngineTest, SpeculativeDecodingGivesTheSameGreedyTokens) {
  for (const char* name : {"qwen3_moe", "llama"}) {
    auto loaded = LoadModel(testing::FixturePath(std::string("models/") + name + "/model-f32.gguf"),
                            LoadOptions{.weights = WeightFormat::kReference, .pool = nullptr,
                                        .kv_dtype = KvDtype::kF32, .kv_block_tokens = 4});
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    Model& model = **loaded;
    const int64_t vocab = model.config().vocab_size;
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 8; ++i) {
      std::vector<int32_t> p = Prompt(5 + 3 * i, 100 + i, vocab);
      if (i % 2 == 0) {  // a passage said twice: the suffix proposer has something to go on
        const std::vector<int32_t> once = p;
        p.insert(p.end(), once.begin(), once.end());
      }
      prompts.push_back(p);
    }
    std::vector<std::vector<int32_t>> expected;
    for (const auto& p : prompts) expected.push_back(GreedyAlone(model, p, 24));
    int64_t drafted = 0, accepted = 0;
    for (bool overlap : {false, true}) {
      EngineOptions o = Options(overlap);
      o.spec_max_tokens = 4;
      auto engine = CreateEngine(model, o);
      ASSERT_TRUE(engine.ok()) << engine.status().message();
      std::vector<std::unique_ptr<Collector>> collectors;
      for (size_t i = 0; i < prompts.size(); ++i) {
        collectors.push_back(std::make_unique<Collector>());
        ASSERT_TRUE((*engine)->Submit(Greedy(prompts[i], 24), collectors[i]->Callback()).ok());
      }
      for (size_t i = 0; i < prompts.size(); ++i) {
        collectors[i]->Wait();
        EXPECT_EQ(collectors[i]->tokens[0], expected[i]) << name << " request " << i << " overlap " << overlap;
        EXPECT_EQ(collectors[i]->usage.completion_tokens, 24);
      }
      ExpectIdle(**engine);
      const EngineMetrics m = (*engine)->metrics();
      EXPECT_LE(m.spec_accepted_tokens, m.spec_draft_tokens);
      drafted += m.spec_draft_tokens;
      accepted += m.spec_accepted_tokens;
    }
    EXPECT_GT(drafted, 0) << name;
    EXPECT_GT(accepted, 0) << name;  // runs of several tokens a step were kept (28 and 54 of 167 and 124 here)
  }
}

}  // namespace
}  // namespace tetra
