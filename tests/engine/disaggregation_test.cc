// Prefill/decode disaggregation at the scheduler level: a "prefill"
// scheduler exports a prompt's KV (kExport), a "decode" scheduler reserves
// blocks for it (kImport), the test moves the KV between their fake
// runners (fake_runner.h: the fake model reads its history back through the
// KV, so a wrong block, slot or offset changes the tokens), and the decode
// side's output equals the oracle's, the request computed alone. Failures
// fall back to a local prefill; aborts free what they hold; every block
// and slot is free on both sides at the end.
#include <gtest/gtest.h>

#include "engine/scheduler.h"
#include "fake_runner.h"

namespace tetra {
namespace {

using testing::FakeNextToken;
using testing::FakeRunner;
using KvHandoff = EngineRequest::KvHandoff;

constexpr int64_t kVocab = 1000;
constexpr int kBlockTokens = 4;

std::vector<int32_t> Greedy(const EngineRequest& r, int sample_index) {
  std::vector<int32_t> history = r.prompt, out;
  for (int i = 0; i < r.max_tokens; ++i) {
    const int32_t t = FakeNextToken(history, sample_index, kVocab);
    out.push_back(t);
    history.push_back(t);
  }
  return out;
}

struct Side {
  SchedulerOptions options;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<FakeRunner> runner;
  std::map<std::pair<uint64_t, int>, std::vector<int32_t>> tokens;  // (request, sample) -> tokens
  std::map<uint64_t, SequenceEvent> last;                             // request -> its final event
  std::vector<KvHandoffEvent> handoffs;
  std::vector<std::pair<StepPlan::KvExport, std::vector<BlockId>>> streamed;  // each plan's exports, their full blocks

  explicit Side(int num_blocks = 64) {
    options.num_kv_blocks = num_blocks;
    options.kv_block_tokens = kBlockTokens;
    options.max_num_sequences = 8;
    options.max_step_tokens = 6;  // prompts go in several chunks
    scheduler = std::make_unique<Scheduler>(options, ModelLimits{kVocab, 4096, {}});
    runner = std::make_unique<FakeRunner>(num_blocks, kBlockTokens, options.max_num_sequences, kVocab);
  }
  uint64_t Add(const EngineRequest& r) {
    EXPECT_TRUE(scheduler->Validate(r).ok()) << scheduler->Validate(r).message();
    auto request = scheduler->Add(r, Clock::now());
    EXPECT_TRUE(request.ok());
    for (const auto& s : (*request)->samples) runner->SetSampleIndex(s->id, s->sample_index);
    return (*request)->id;
  }
  void Apply(const std::vector<SequenceEvent>& events) {
    for (const SequenceEvent& e : events) {
      if (e.has_token) tokens[{e.request_id, e.sample_index}].push_back(e.sample.token);
      if (e.request_finished) last[e.request_id] = e;
    }
  }
  // One step (overlap depth 1); false when nothing ran.
  bool Step() {
    StepPlan plan;
    const bool planned = scheduler->Plan(&plan, Clock::now());
    for (auto& h : scheduler->TakeKvHandoffEvents()) handoffs.push_back(std::move(h));
    if (!planned) return false;
    for (const StepPlan::KvExport& e : plan.kv_exports) {
      const auto full = plan.kv_export_blocks.begin() + e.blocks_offset;
      streamed.push_back({e, std::vector<BlockId>(full, full + (e.end_piece - e.first_piece) - (e.open_slot >= 0))});
    }
    StepResult result;
    runner->Run(plan, &result);
    std::vector<SequenceEvent> events;
    scheduler->Complete(plan, result, &events);
    Apply(events);
    for (auto& h : scheduler->TakeKvHandoffEvents()) handoffs.push_back(std::move(h));
    return true;
  }
  void RunUntilIdle() {
    for (int i = 0; i < 10000 && Step();) ++i;
  }
  void ExpectEverythingFree() {
    StepPlan plan;
    EXPECT_FALSE(scheduler->Plan(&plan, Clock::now()));
    EXPECT_EQ(scheduler->kv().blocks().num_blocks_held(), 0);
    EXPECT_EQ(scheduler->kv().num_slots_free(), options.max_num_sequences);
    EXPECT_FALSE(scheduler->has_unfinished_requests());
  }
};

EngineRequest Make(std::vector<int32_t> prompt, int max_tokens, int n = 1, KvHandoff handoff = KvHandoff::kNone) {
  EngineRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.n = n;
  r.ignore_eos = true;
  r.kv_handoff = handoff;
  return r;
}

std::vector<int32_t> Prompt(int length, int seed) {
  std::vector<int32_t> p(length);
  for (int i = 0; i < length; ++i) p[i] = (i * 37 + seed * 101) % 900;
  return p;
}

// Runs one request through prefill side P and decode side D; returns D's request id.
uint64_t Disaggregate(Side& prefill, Side& decode, const EngineRequest& r) {
  const uint64_t d_id = decode.Add(Make(r.prompt, r.max_tokens, r.n, KvHandoff::kImport));
  decode.Step();  // admits it: blocks reserved, nothing to compute yet
  EXPECT_EQ(decode.handoffs.size(), 1u);
  const KvHandoffEvent reserved = decode.handoffs.back();
  decode.handoffs.clear();
  EXPECT_EQ(reserved.kind, KvHandoffEvent::Kind::kReserved);
  EXPECT_EQ(reserved.num_tokens, static_cast<int64_t>(r.prompt.size()) - 1);
  EXPECT_EQ(reserved.num_cached_tokens % kBlockTokens, 0);
  EXPECT_TRUE(decode.scheduler->IsHandingOffKv(d_id));

  std::vector<int32_t> head(r.prompt.begin(), r.prompt.end() - 1);
  const uint64_t p_id = prefill.Add(Make(head, 1, 1, KvHandoff::kExport));
  prefill.RunUntilIdle();
  EXPECT_EQ(prefill.handoffs.size(), 1u);
  const KvHandoffEvent ready = prefill.handoffs.back();
  prefill.handoffs.clear();
  EXPECT_EQ(ready.kind, KvHandoffEvent::Kind::kReady);
  EXPECT_EQ(ready.num_tokens, reserved.num_tokens);
  EXPECT_TRUE(prefill.tokens.empty()) << "an export samples nothing";

  // The "transfer": positions D does not have, from P's KV into D's.
  const std::vector<int32_t> kv = prefill.runner->ReadKv(ready.blocks, ready.slot, ready.num_tokens);
  EXPECT_EQ(kv, head);
  decode.runner->WriteKv(reserved.blocks, reserved.slot, reserved.num_cached_tokens,
                         std::vector<int32_t>(kv.begin() + reserved.num_cached_tokens, kv.end()));
  std::vector<SequenceEvent> events;
  prefill.scheduler->ReleaseHeldKv(p_id, Status::Ok(), &events);
  prefill.Apply(events);
  EXPECT_EQ(prefill.last.at(p_id).finish, FinishReason::kLength);
  decode.scheduler->KvArrived(d_id, Status::Ok());
  decode.RunUntilIdle();
  return d_id;
}

TEST(Disaggregation, DecodeOutputEqualsTheRequestAloneForEveryPromptShape) {
  // Shorter than a block, exactly one block (+ the last token), several blocks and a part.
  for (int length : {3, 5, 6, 13, 17}) {
    SCOPED_TRACE(length);
    Side prefill, decode;
    const EngineRequest r = Make(Prompt(length, length), 7);
    const uint64_t id = Disaggregate(prefill, decode, r);
    EXPECT_EQ((decode.tokens[{id, 0}]), Greedy(r, 0));
    EXPECT_EQ(decode.last.at(id).finish, FinishReason::kLength);
    prefill.ExpectEverythingFree();
    decode.ExpectEverythingFree();
  }
}

TEST(Disaggregation, PrefixCachedOnTheDecodeSideIsNotMoved) {
  Side prefill, decode;
  const std::vector<int32_t> shared = Prompt(12, 1);
  std::vector<int32_t> a = shared, b = shared;
  a.insert(a.end(), {1, 2, 3});
  b.insert(b.end(), {7, 8, 9, 10, 11});
  const uint64_t first = Disaggregate(prefill, decode, Make(a, 4));
  EXPECT_EQ((decode.tokens[{first, 0}]), Greedy(Make(a, 4), 0));
  // The second request finds the shared blocks cached on D: only the rest arrives.
  const uint64_t second = decode.Add(Make(b, 5, 1, KvHandoff::kImport));
  decode.Step();
  ASSERT_EQ(decode.handoffs.size(), 1u);
  EXPECT_EQ(decode.handoffs[0].num_cached_tokens, 12);
  decode.handoffs.clear();
  std::vector<SequenceEvent> events;
  decode.scheduler->Abort(second, &events);
  // Again through the whole path: P sends it all, D takes positions 12.. only.
  decode.Apply(events);
  const uint64_t third = Disaggregate(prefill, decode, Make(b, 5));
  EXPECT_EQ((decode.tokens[{third, 0}]), Greedy(Make(b, 5), 0));
  prefill.ExpectEverythingFree();
  decode.ExpectEverythingFree();
}

TEST(Disaggregation, AFailedTransferIsPrefilledOnTheDecodeSide) {
  Side decode;
  const EngineRequest r = Make(Prompt(11, 3), 6);
  const uint64_t id = decode.Add(Make(r.prompt, r.max_tokens, 1, KvHandoff::kImport));
  decode.Step();
  ASSERT_EQ(decode.handoffs.size(), 1u);
  decode.scheduler->KvArrived(id, Status::WithCode(StatusCode::kUnavailable, "the prefill instance died"));
  EXPECT_FALSE(decode.scheduler->IsHandingOffKv(id));
  decode.RunUntilIdle();
  EXPECT_EQ((decode.tokens[{id, 0}]), Greedy(r, 0));
  decode.ExpectEverythingFree();
}

TEST(Disaggregation, ParallelSamplesForkAfterTheImportedPrompt) {
  Side prefill, decode;
  const EngineRequest r = Make(Prompt(10, 4), 5, /*n=*/3);
  const uint64_t id = Disaggregate(prefill, decode, r);
  for (int i = 0; i < 3; ++i) EXPECT_EQ((decode.tokens[{id, i}]), Greedy(r, i)) << "sample " << i;
  prefill.ExpectEverythingFree();
  decode.ExpectEverythingFree();
}

TEST(Disaggregation, AbortsWhileAwaitingOrHoldingFreeEverything) {
  Side prefill, decode;
  const uint64_t d_id = decode.Add(Make(Prompt(9, 5), 4, 1, KvHandoff::kImport));
  decode.Step();
  ASSERT_TRUE(decode.scheduler->IsHandingOffKv(d_id));
  EXPECT_EQ(decode.scheduler->num_running_requests(), 1);
  std::vector<SequenceEvent> events;
  decode.scheduler->Abort(d_id, &events);
  decode.Apply(events);
  EXPECT_EQ(decode.last.at(d_id).finish, FinishReason::kAbort);
  decode.scheduler->KvArrived(d_id, Status::Ok());  // a late arrival is ignored
  decode.ExpectEverythingFree();

  const uint64_t p_id = prefill.Add(Make(Prompt(8, 6), 1, 1, KvHandoff::kExport));
  prefill.RunUntilIdle();
  ASSERT_TRUE(prefill.scheduler->IsHandingOffKv(p_id));
  events.clear();
  prefill.scheduler->ReleaseHeldKv(p_id, Status::WithCode(StatusCode::kUnavailable, "decode side gone"), &events);
  prefill.Apply(events);
  EXPECT_EQ(prefill.last.at(p_id).finish, FinishReason::kError);
  EXPECT_EQ(prefill.last.at(p_id).error.message(), "decode side gone");
  prefill.ExpectEverythingFree();
}

TEST(Disaggregation, AnExportStreamsEachPieceOnceAsItIsComputedAndIsNeverPreempted) {
  Side prefill(/*num_blocks=*/15);
  std::vector<uint64_t> released;
  prefill.scheduler->set_on_export_released([&](uint64_t id) { released.push_back(id); });
  // A request decoding 40 tokens beside the export needs 13 of the 15
  // blocks; the export holds its 11 from admission: the other one is
  // preempted while the export computes, never the export.
  const uint64_t other = prefill.Add(Make(Prompt(10, 1), 40));
  ASSERT_TRUE(prefill.Step());
  EngineRequest e = Make(Prompt(41, 2), 1, 1, KvHandoff::kExport);
  e.kv_skip_tokens = 8;  // the decode side holds two blocks
  const uint64_t p_id = prefill.Add(e);
  for (int i = 0; i < 10000 && !prefill.scheduler->IsHandingOffKv(p_id); ++i) ASSERT_TRUE(prefill.Step());
  ASSERT_EQ(prefill.handoffs.size(), 1u);
  const KvHandoffEvent ready = prefill.handoffs.back();
  // Pieces 0..8: the blocks of positions 8..39, then the open block (40),
  // each once, in order, over more than one step (budget 6 a step).
  int64_t next = 0;
  for (const auto& [x, blocks] : prefill.streamed) {
    EXPECT_EQ(x.request_id, p_id);
    EXPECT_EQ(x.first_piece, next);
    for (int64_t p = x.first_piece; p < x.end_piece - (x.open_slot >= 0); ++p) {
      EXPECT_EQ(blocks[p - x.first_piece], ready.blocks[2 + p]) << "piece " << p;
    }
    EXPECT_EQ(x.open_slot >= 0, x.end_piece == 9);
    if (x.open_slot >= 0) {
      EXPECT_EQ(x.open_slot, ready.slot);
    }
    next = x.end_piece;
  }
  EXPECT_EQ(next, 9);
  EXPECT_GT(prefill.streamed.size(), 1u);
  EXPECT_GT(prefill.scheduler->num_preemptions(), 0);  // the other one made room, not the export
  std::vector<SequenceEvent> events;
  prefill.scheduler->ReleaseHeldKv(p_id, Status::Ok(), &events);
  prefill.Apply(events);
  prefill.RunUntilIdle();
  EXPECT_EQ(prefill.tokens.at({other, 0}).size(), 40u);
  // Its blocks went back only after the hook that stops the sends.
  EXPECT_EQ(released, std::vector<uint64_t>{p_id});
  prefill.ExpectEverythingFree();
}

TEST(Disaggregation, ImportsWaitForBlocksAndDoNotTakeTheStepBudget) {
  Side decode(/*num_blocks=*/6);
  const uint64_t a = decode.Add(Make(Prompt(17, 7), 2, 1, KvHandoff::kImport));  // needs 4 blocks
  const uint64_t b = decode.Add(Make(Prompt(17, 8), 2, 1, KvHandoff::kImport));  // does not fit beside it
  decode.Step();
  EXPECT_TRUE(decode.scheduler->IsHandingOffKv(a));
  EXPECT_FALSE(decode.scheduler->IsHandingOffKv(b));
  EXPECT_EQ(decode.scheduler->num_waiting_requests(), 1);
  std::vector<SequenceEvent> events;
  decode.scheduler->Abort(a, &events);
  decode.Step();
  EXPECT_TRUE(decode.scheduler->IsHandingOffKv(b));
  decode.scheduler->Abort(b, &events);
  decode.ExpectEverythingFree();
}

TEST(Disaggregation, ValidationNamesTheProblem) {
  Side side;
  EXPECT_NE(side.scheduler->Validate(Make(Prompt(5, 1), 1, 2, KvHandoff::kExport)).message().find("n must be 1"),
            std::string::npos);
  EXPECT_NE(side.scheduler->Validate(Make({5}, 3, 1, KvHandoff::kImport)).message().find("at least 2 prompt tokens"),
            std::string::npos);
}

}  // namespace
}  // namespace tetra
