// The scheduler with a fake model runner (fake_runner.h): every request's
// output equals the oracle's (the fake model's tokens computed from the
// request's true history, alone), whatever the batching, chunking, prefix
// hits, forks, preemptions and overlap did; the plans respect the budget
// and the sequence limit; aborts end requests wherever they are; and every
// KV block and slot is free again at the end of every test.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <set>
#include <random>

#include "fake_runner.h"

namespace tetra {
namespace {

using testing::FakeNextToken;
using testing::FakeRunner;

constexpr int64_t kVocab = 1000;
constexpr int32_t kEnd = 999;  // the fake model's end token: FakeNextToken hits it now and then

struct Output {
  std::vector<int32_t> tokens;
  std::optional<FinishReason> finish;
  std::optional<int32_t> stop_token;
};

// What one sample generates alone: the fake model's tokens until an end
// token, a stop id or max_tokens.
Output Oracle(const EngineRequest& r, int sample_index, bool ends = true) {
  Output out;
  std::vector<int32_t> history = r.prompt;
  while (true) {
    const int32_t t = FakeNextToken(history, sample_index, kVocab);
    const bool stop_id = std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), t) != r.stop_token_ids.end();
    if ((ends && t == kEnd && !r.ignore_eos) || stop_id) {
      out.finish = FinishReason::kStop;
      out.stop_token = t;
      return out;
    }
    out.tokens.push_back(t);
    history.push_back(t);
    if (static_cast<int>(out.tokens.size()) == r.max_tokens) {
      out.finish = FinishReason::kLength;
      return out;
    }
  }
}

class SchedulerTest : public ::testing::Test {
 protected:
  void Make(SchedulerOptions options) {
    options_ = options;
    scheduler_ = std::make_unique<Scheduler>(options, ModelLimits{kVocab, 4096, {kEnd}});
    runner_ = std::make_unique<FakeRunner>(options.num_kv_blocks, options.kv_block_tokens, options.max_num_sequences,
                                           kVocab);
  }

  uint64_t Add(EngineRequest r) {
    EXPECT_TRUE(scheduler_->Validate(r).ok()) << scheduler_->Validate(r).message();
    auto request = scheduler_->Add(r, Clock::now());
    EXPECT_TRUE(request.ok()) << request.status().message();
    for (const auto& sample : (*request)->samples) runner_->SetSampleIndex(sample->id, sample->sample_index);
    params_[(*request)->id] = r;
    return (*request)->id;
  }

  void Apply(const std::vector<SequenceEvent>& events) {
    for (const SequenceEvent& e : events) {
      Output& out = outputs_[e.request_id][e.sample_index];
      ASSERT_FALSE(out.finish.has_value()) << "an event after the sample finished";
      if (e.has_token) out.tokens.push_back(e.sample.token);
      if (e.finish) {
        out.finish = e.finish;
        out.stop_token = e.stop_token;
      }
      if (e.request_finished) finished_.push_back(e.request_id);
    }
  }

  // Runs steps until every request is finished, keeping `depth` steps
  // planned ahead of the one completing (2: overlapped steps). `hook` runs
  // after each completed step with its index.
  void RunAll(int depth, const std::function<void(int)>& hook = {}) {
    std::deque<std::unique_ptr<StepPlan>> queue;
    for (int step = 0; step < 100000; ++step) {
      while (static_cast<int>(queue.size()) < depth) {
        auto plan = std::make_unique<StepPlan>();
        if (!scheduler_->Plan(plan.get(), Clock::now())) break;
        EXPECT_LE(static_cast<int64_t>(plan->tokens.size()), options_.max_step_tokens);
        EXPECT_LE(static_cast<int64_t>(plan->sequences.size()), options_.max_num_sequences);
        if (check_plan_) check_plan_(*plan);
        queue.push_back(std::move(plan));
      }
      if (queue.empty()) {
        ASSERT_FALSE(scheduler_->has_unfinished_requests()) << "requests left but nothing to run: stuck";
        return;
      }
      std::unique_ptr<StepPlan> plan = std::move(queue.front());
      queue.pop_front();
      StepResult result;
      runner_->Run(*plan, &result);
      std::vector<SequenceEvent> events;
      scheduler_->Complete(*plan, result, &events);
      Apply(events);
      if (hook) hook(step);
    }
    FAIL() << "did not finish in 100000 steps";
  }

  void ExpectMatchesOracle() {
    for (const auto& [id, r] : params_) {
      for (int i = 0; i < r.n; ++i) {
        const Output want = Oracle(r, i);
        const Output& got = outputs_[id][i];
        EXPECT_EQ(got.tokens, want.tokens) << "request " << id << " sample " << i;
        EXPECT_EQ(got.finish, want.finish) << "request " << id << " sample " << i;
        EXPECT_EQ(got.stop_token, want.stop_token) << "request " << id << " sample " << i;
      }
    }
  }

  void ExpectEverythingFree() {
    StepPlan plan;
    EXPECT_FALSE(scheduler_->Plan(&plan, Clock::now()));  // also releases finished requests
    EXPECT_EQ(scheduler_->kv().blocks().num_blocks_held(), 0);
    EXPECT_EQ(scheduler_->kv().blocks().num_blocks_free(), options_.num_kv_blocks);
    EXPECT_EQ(scheduler_->kv().num_slots_free(), options_.max_num_sequences);
    EXPECT_EQ(scheduler_->num_steps_in_flight(), 0);
    EXPECT_FALSE(scheduler_->has_unfinished_requests());
  }

  static EngineRequest Request(std::vector<int32_t> prompt, int max_tokens, int n = 1) {
    EngineRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.n = n;
    return r;
  }
  static std::vector<int32_t> Prompt(int length, int32_t seed) {
    std::vector<int32_t> p(length);
    for (int i = 0; i < length; ++i) p[i] = static_cast<int32_t>((seed * 131 + i * 17) % 900);
    return p;
  }

  SchedulerOptions options_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<FakeRunner> runner_;
  std::map<uint64_t, EngineRequest> params_;
  std::map<uint64_t, std::map<int, Output>> outputs_;
  std::vector<uint64_t> finished_;
  std::function<void(const StepPlan&)> check_plan_;  // runs on every plan RunAll makes
};

SchedulerOptions Options(int blocks, int block_tokens = 4, int max_seqs = 8, int budget = 32) {
  SchedulerOptions o;
  o.num_kv_blocks = blocks;
  o.kv_block_tokens = block_tokens;
  o.max_num_sequences = max_seqs;
  o.max_step_tokens = budget;
  return o;
}

TEST_F(SchedulerTest, OneRequestMatchesTheOracle) {
  for (int depth : {1, 2}) {
    Make(Options(64));
    Add(Request(Prompt(10, 1), 20));
    RunAll(depth);
    ExpectMatchesOracle();
    ExpectEverythingFree();
    if (depth == 2) {
      EXPECT_GT(runner_->placeholders_seen(), 0);
    }
    params_.clear();
    outputs_.clear();
  }
}

TEST_F(SchedulerTest, LongPromptsAreChunkedUnderTheBudgetAndMixedWithDecodes) {
  Make(Options(256, 4, 8, /*budget=*/16));
  Add(Request(Prompt(5, 2), 30));
  RunAll(1, [&](int step) {
    if (step == 3) {
      Add(Request(Prompt(100, 3), 5));  // 100 tokens at most 16 a step, beside the running decode
      Add(Request(Prompt(37, 4), 8));
    }
  });
  EXPECT_EQ(runner_->max_step_tokens_seen(), 16);
  ExpectMatchesOracle();
  ExpectEverythingFree();
}

TEST_F(SchedulerTest, ChunksBesideDecodesAreHeldShortAndStepsWithoutDecodesTakeTheBudget) {
  for (int depth : {1, 2}) {
    SchedulerOptions o = Options(512, 4, 8, /*budget=*/64);
    o.max_prefill_tokens_with_decodes = 8;
    Make(o);
    int64_t largest_prefill_alone = 0, largest_prefill_beside_decodes = 0;
    check_plan_ = [&](const StepPlan& plan) {
      int64_t& largest = plan.num_decode_tokens > 0 ? largest_prefill_beside_decodes : largest_prefill_alone;
      largest = std::max(largest, plan.num_prefill_tokens);
    };
    Add(Request(Prompt(150, 1), 40));  // alone: chunks of the whole budget
    RunAll(depth, [&](int step) {
      if (step == 6) {
        Add(Request(Prompt(100, 2), 5));  // beside the first one's decodes: 8 tokens a step
        Add(Request(Prompt(37, 3), 8));
      }
    });
    EXPECT_EQ(largest_prefill_alone, 64);
    EXPECT_GT(largest_prefill_beside_decodes, 0);
    EXPECT_LE(largest_prefill_beside_decodes, 8);
    ExpectMatchesOracle();
    ExpectEverythingFree();
    check_plan_ = nullptr;
    params_.clear();
    outputs_.clear();
  }
}

TEST_F(SchedulerTest, AShortPromptIsNotHeldBehindALongOnesChunks) {
  for (int depth : {1, 2}) {
    Make(Options(512, 4, 8, /*budget=*/64));
    const uint64_t long_id = Add(Request(Prompt(1000, 1), 2));  // 16 steps of the whole budget alone
    uint64_t short_id = 0;
    int short_added = -1, short_first_token = -1, long_first_token = -1;
    RunAll(depth, [&](int step) {
      if (step == 2) {
        short_id = Add(Request(Prompt(20, 2), 3));
        short_added = step;
      }
      if (short_first_token < 0 && short_id != 0 && !outputs_[short_id][0].tokens.empty()) short_first_token = step;
      if (long_first_token < 0 && !outputs_[long_id][0].tokens.empty()) long_first_token = step;
    });
    // Sharing the budget: the short prompt's 20 tokens go in the next step
    // or two (a planned-ahead step may have taken the budget), not after the
    // long prompt's remaining ~950 tokens.
    EXPECT_LE(short_first_token - short_added, depth + 1);
    EXPECT_LT(short_first_token, long_first_token);
    ExpectMatchesOracle();
    ExpectEverythingFree();
    params_.clear();
    outputs_.clear();
  }
}

TEST_F(SchedulerTest, PendingPromptTokensCountWhatIsNotComputedYet) {
  Make(Options(512, 4, 8, /*budget=*/64));
  Add(Request(Prompt(100, 1), 3));
  Add(Request(Prompt(30, 2), 3, /*n=*/2));  // a prompt counts once, not per sample
  EXPECT_EQ(scheduler_->num_prompt_tokens_pending(), 130);
  StepPlan plan;
  ASSERT_TRUE(scheduler_->Plan(&plan, Clock::now()));
  EXPECT_EQ(scheduler_->num_prompt_tokens_pending(), 130 - plan.num_prefill_tokens);
  StepResult result;
  runner_->Run(plan, &result);
  std::vector<SequenceEvent> events;
  scheduler_->Complete(plan, result, &events);
  Apply(events);
  RunAll(1);
  EXPECT_EQ(scheduler_->num_prompt_tokens_pending(), 0);
  ExpectMatchesOracle();
  ExpectEverythingFree();
}

TEST_F(SchedulerTest, TheAttentionCostModelShrinksChunksDeepIntoAPromptAndKeepsStepsEven) {
  SchedulerOptions o = Options(512, 4, 8, /*budget=*/64);
  o.attention_cost_context = 128;  // at 128 positions a token's attention costs its linear layers again
  Make(o);
  std::vector<std::pair<int64_t, int64_t>> chunks;  // (start, tokens) of the prompt's chunks
  check_plan_ = [&](const StepPlan& plan) {
    if (plan.num_prefill_tokens > 0) chunks.push_back({plan.sequences[0].start_position, plan.num_prefill_tokens});
  };
  Add(Request(Prompt(1000, 1), 3));
  RunAll(1);
  ASSERT_GT(chunks.size(), 2u);
  EXPECT_EQ(chunks.front().second, 53);  // at position 0: 53 * (1 + 26.5 / 128) = 63.97 <= 64
  for (size_t i = 0; i + 1 < chunks.size(); ++i) {
    const auto [start, count] = chunks[i];
    const double cost = count * (1.0 + (start + count / 2.0) / 128.0);
    EXPECT_LE(cost, 64.0 + 1e-9) << "chunk at " << start;
    EXPECT_GT((count + 1) * (1.0 + (start + (count + 1) / 2.0) / 128.0), 64.0) << "chunk at " << start << " could be longer";
    EXPECT_LE(chunks[i + 1].second, count);  // deeper: no longer
  }
  EXPECT_LT(chunks[chunks.size() - 2].second, 10);  // ~900 positions in: a handful of tokens a step
  ExpectMatchesOracle();
  ExpectEverythingFree();
}

TEST_F(SchedulerTest, AdmissionWaitsForKvBlocksAndNeverSkipsTheHead) {
  // 12 blocks of 4 tokens: three requests of 5 + 11 tokens (4 blocks each
  // with headroom) cannot all run at once.
  for (int depth : {1, 2}) {
    Make(Options(12, 4, 8, 64));
    for (int i = 0; i < 6; ++i) Add(Request(Prompt(5, 10 + i), 11));
    RunAll(depth);
    ExpectMatchesOracle();
    ExpectEverythingFree();
    params_.clear();
    outputs_.clear();
  }
}

TEST_F(SchedulerTest, PreemptionByRecomputeLosesNoToken) {
  // Each request needs 9 blocks by its end; 16 blocks hold one of them and
  // part of another: the later one is preempted and recomputed.
  for (int depth : {1, 2}) {
    SchedulerOptions options = Options(16, 4, 4, 64);
    options.enable_prefix_caching = false;
    Make(options);
    for (int i = 0; i < 3; ++i) Add(Request(Prompt(6, 20 + i), 30));
    RunAll(depth);
    EXPECT_GT(scheduler_->num_preemptions(), 0) << "depth " << depth;
    ExpectMatchesOracle();
    ExpectEverythingFree();
    params_.clear();
    outputs_.clear();
  }
}

TEST_F(SchedulerTest, PrefixHitsAttachCachedBlocks) {
  Make(Options(64, 4, 8, 64));
  const std::vector<int32_t> prompt = Prompt(18, 5);
  Add(Request(prompt, 3));
  RunAll(1);
  EXPECT_EQ(scheduler_->kv().prefix_tokens_hit(), 0);
  // The same prompt: its 4 full blocks (16 tokens) come from the cache.
  Add(Request(prompt, 3));
  std::vector<int32_t> longer = prompt;
  longer.insert(longer.end(), {7, 8, 9});
  Add(Request(longer, 3));
  RunAll(1);
  EXPECT_EQ(scheduler_->kv().prefix_tokens_hit(), 32);
  ExpectMatchesOracle();
  ExpectEverythingFree();
}

TEST_F(SchedulerTest, ParallelSamplesShareThePromptAndDiverge) {
  for (int depth : {1, 2}) {
    Make(Options(64, 4, 8, 64));
    const uint64_t id = Add(Request(Prompt(10, 6), 12, /*n=*/4));
    RunAll(depth);
    ExpectMatchesOracle();
    // The samples differ (the fake model salts by sample index).
    EXPECT_NE(outputs_[id][0].tokens, outputs_[id][1].tokens);
    // Their decodes were grouped by the prompt's two full blocks.
    EXPECT_GT(runner_->shared_prefix_groups_seen(), 0);
    ExpectEverythingFree();
    params_.clear();
    outputs_.clear();
  }
}

TEST_F(SchedulerTest, ParallelSamplesWaitForSlotsAndBlocksToFork) {
  // n = 3 needs 3 slots; with 3 slots and another request running, the fork waits.
  Make(Options(40, 4, 3, 64));
  Add(Request(Prompt(7, 7), 10));
  Add(Request(Prompt(9, 8), 10, /*n=*/3));
  RunAll(2);
  ExpectMatchesOracle();
  ExpectEverythingFree();
}

TEST_F(SchedulerTest, AbortDuringPrefillFreesEverything) {
  Make(Options(128, 4, 8, /*budget=*/8));
  const uint64_t id = Add(Request(Prompt(60, 9), 5));
  Add(Request(Prompt(6, 10), 5));
  RunAll(2, [&](int step) {
    if (step == 2) {
      std::vector<SequenceEvent> events;
      scheduler_->Abort(id, &events);
      ASSERT_EQ(events.size(), 1u);
      EXPECT_EQ(events[0].finish, FinishReason::kAbort);
      EXPECT_TRUE(events[0].request_finished);
      Apply(events);
    }
  });
  EXPECT_EQ(outputs_[id][0].finish, FinishReason::kAbort);
  EXPECT_TRUE(outputs_[id][0].tokens.empty());
  params_.erase(id);
  ExpectMatchesOracle();
  ExpectEverythingFree();
}

TEST_F(SchedulerTest, AbortRacingEndOfSequenceEndsItOnce) {
  // Abort while the step that samples the last token is in flight (overlap):
  // the result arrives for a finished sequence and is dropped; one final event.
  for (int abort_after : {0, 1, 2, 3, 4, 5}) {
    Make(Options(64, 4, 8, 64));
    const uint64_t id = Add(Request(Prompt(5, 11), 4));
    RunAll(2, [&](int step) {
      if (step == abort_after) {
        std::vector<SequenceEvent> events;
        scheduler_->Abort(id, &events);
        Apply(events);
      }
    });
    ASSERT_TRUE(outputs_[id][0].finish.has_value());
    EXPECT_EQ(std::count(finished_.begin(), finished_.end(), id), 1);
    ExpectEverythingFree();
    params_.clear();
    outputs_.clear();
    finished_.clear();
  }
}

TEST_F(SchedulerTest, AbortOfAnUnknownOrFinishedRequestIsIgnored) {
  Make(Options(32));
  const uint64_t id = Add(Request(Prompt(5, 12), 2));
  RunAll(1);
  std::vector<SequenceEvent> events;
  scheduler_->Abort(id, &events);
  scheduler_->Abort(12345, &events);
  EXPECT_TRUE(events.empty());
  ExpectEverythingFree();
}

TEST_F(SchedulerTest, StopTokenIdsAndIgnoreEos) {
  Make(Options(64));
  EngineRequest r = Request(Prompt(8, 13), 40);
  const Output free_run = Oracle(r, 0, /*ends=*/false);
  ASSERT_GE(free_run.tokens.size(), 5u);
  r.stop_token_ids = {free_run.tokens[4]};
  Add(r);
  EngineRequest ignoring = Request(Prompt(8, 14), 40);
  ignoring.ignore_eos = true;
  Add(ignoring);
  RunAll(2);
  ExpectMatchesOracle();
  ExpectEverythingFree();
}

// Guesses the fake model's true continuation, except that every third
// guess has one wrong token (at a varying place): full, partial and no
// acceptance all happen.
class FakeModelProposer : public speculative::Proposer {
 public:
  void Extend(std::span<const int32_t> tokens) override { text_.insert(text_.end(), tokens.begin(), tokens.end()); }
  speculative::Proposal Propose(int max_tokens) const override {
    speculative::Proposal p;
    std::vector<int32_t> history = text_;
    for (int i = 0; i < max_tokens; ++i) {
      history.push_back(FakeNextToken(history, 0, kVocab));
      p.tokens.push_back(history.back());
    }
    if (++calls_ % 3 == 0) p.tokens[calls_ % max_tokens] = (p.tokens[calls_ % max_tokens] + 1) % kVocab;
    p.match_length = 1;
    return p;
  }
  int64_t size() const override { return static_cast<int64_t>(text_.size()); }

 private:
  std::vector<int32_t> text_;
  mutable int calls_ = 0;
};

TEST_F(SchedulerTest, SpeculativeDecodingMatchesTheOracleTokenForTokenAndRollsTheKvBack) {
  for (int depth : {1, 2}) {
    SchedulerOptions o = Options(256, 4, 8, 64);
    o.spec_max_tokens = 5;
    o.new_proposer = [] { return std::make_unique<FakeModelProposer>(); };
    o.lookahead = depth == 2;
    Make(o);
    auto greedy = [](EngineRequest r) {
      r.sampling.temperature = 0.0f;
      return r;
    };
    for (int i = 0; i < 4; ++i) Add(greedy(Request(Prompt(7 + 5 * i, 40 + i), 33 + 7 * i)));
    EngineRequest stopped = greedy(Request(Prompt(9, 50), 40));
    const Output free_run = Oracle(stopped, 0, /*ends=*/false);
    stopped.stop_token_ids = {free_run.tokens[11]};  // a stop id in the middle of a verified run
    Add(stopped);
    Add(Request(Prompt(6, 51), 20));     // sampled (temperature 1): decodes one token a step
    Add(greedy(Request(Prompt(6, 52), 12, /*n=*/2)));  // parallel samples: no speculation either
    RunAll(depth);
    ExpectMatchesOracle();
    ExpectEverythingFree();
    EXPECT_GT(runner_->draft_tokens_seen(), 0);
    EXPECT_EQ(scheduler_->num_draft_tokens(), runner_->draft_tokens_seen());
    EXPECT_GT(scheduler_->num_accepted_tokens(), 0);
    EXPECT_LT(scheduler_->num_accepted_tokens(), scheduler_->num_draft_tokens());  // some were wrong
    params_.clear();
    outputs_.clear();
  }
}

TEST_F(SchedulerTest, SpeculationTakesFewerStepsThanDecodingAlone) {
  int64_t steps[2];
  for (int spec : {0, 1}) {
    SchedulerOptions o = Options(256, 4, 8, 64);
    o.spec_max_tokens = spec ? 4 : 0;
    o.new_proposer = [] { return std::make_unique<FakeModelProposer>(); };
    Make(o);
    EngineRequest r = Request(Prompt(8, 60), 60);
    r.sampling.temperature = 0.0f;
    r.ignore_eos = true;
    Add(r);
    RunAll(1);
    ExpectMatchesOracle();
    ExpectEverythingFree();
    steps[spec] = runner_->steps_run();
    params_.clear();
    outputs_.clear();
  }
  // 60 tokens: 60 steps one at a time; with 4-token guesses mostly right, about a quarter.
  EXPECT_EQ(steps[0], 60);
  EXPECT_LT(steps[1], 30);
}

TEST_F(SchedulerTest, AFailedStepEndsItsRequestsWithAnErrorAndOthersGoOn) {
  Make(Options(64, 4, 8, 64));
  const uint64_t first = Add(Request(Prompt(6, 15), 10));
  int runs = 0;
  runner_->before_run = [&](const StepPlan&) {
    return ++runs == 3 ? Status::WithCode(StatusCode::kInternal, "kernel failed") : Status::Ok();
  };
  RunAll(1, [&](int step) {
    if (step == 4) Add(Request(Prompt(6, 16), 5));
  });
  EXPECT_EQ(outputs_[first][0].finish, FinishReason::kError);
  params_.erase(first);
  ExpectMatchesOracle();
  ExpectEverythingFree();
}

TEST_F(SchedulerTest, PriorityRunsFirst) {
  Make(Options(12, 4, 1, 64));  // one sequence at a time
  EngineRequest low = Request(Prompt(5, 17), 3);
  low.priority = 5;
  EngineRequest high = Request(Prompt(5, 18), 3);
  high.priority = -1;
  const uint64_t low_id = Add(low);
  const uint64_t high_id = Add(high);
  RunAll(1);
  ASSERT_EQ(finished_.size(), 2u);
  EXPECT_EQ(finished_[0], high_id);
  EXPECT_EQ(finished_[1], low_id);
  ExpectMatchesOracle();
  ExpectEverythingFree();
}

TEST_F(SchedulerTest, ValidateNamesTheProblem) {
  Make(Options(16, 4, 4, 64));
  auto expect = [&](EngineRequest r, const std::string& needle) {
    const Status s = scheduler_->Validate(r);
    ASSERT_FALSE(s.ok()) << needle;
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  expect(Request({}, 4), "empty");
  expect(Request({1, 2, static_cast<int32_t>(kVocab)}, 4), "outside the vocabulary");
  expect(Request({1, 2}, 0), "max_tokens");
  expect(Request({1, 2}, 4, 0), "n must be");
  expect(Request({1, 2}, 4, 5), "n must be");
  expect(Request(Prompt(4000, 1), 200), "maximum context length is 4096");
  expect(Request(Prompt(60, 1), 10), "KV blocks");
  EngineRequest bad_stop = Request({1, 2}, 4);
  bad_stop.stop_token_ids = {-3};
  expect(bad_stop, "stop_token_ids");
}

// Random traffic: prompts sharing prefixes, n up to 3, aborts, a pool small
// enough to preempt, with and without overlap.
TEST_F(SchedulerTest, RandomTrafficMatchesTheOracleAndFreesEverything) {
  for (int depth : {1, 2}) {
    for (int seed = 0; seed < 6; ++seed) {
      Make(Options(48, 4, 6, 24));
      std::mt19937 rng(seed);
      std::vector<uint64_t> ids;
      std::set<uint64_t> aborted;
      auto add_random = [&] {
        std::vector<int32_t> prompt = Prompt(1 + static_cast<int>(rng() % 30), static_cast<int32_t>(rng() % 3));
        if (rng() % 2) prompt.push_back(static_cast<int32_t>(rng() % 900));
        ids.push_back(Add(Request(prompt, 1 + static_cast<int>(rng() % 25), 1 + static_cast<int>(rng() % 3))));
      };
      for (int i = 0; i < 5; ++i) add_random();
      RunAll(depth, [&](int step) {
        if (step < 200 && rng() % 3 == 0) add_random();
        if (rng() % 17 == 0 && !ids.empty()) {
          const uint64_t victim = ids[rng() % ids.size()];
          std::vector<SequenceEvent> events;
          scheduler_->Abort(victim, &events);
          if (!events.empty()) aborted.insert(victim);
          Apply(events);
        }
      });
      for (uint64_t id : aborted) params_.erase(id);
      ExpectMatchesOracle();
      ExpectEverythingFree();
      EXPECT_EQ(finished_.size(), ids.size());
      params_.clear();
      outputs_.clear();
      finished_.clear();
    }
  }
}

}  // namespace
}  // namespace tetra
