// The scheduler: which sequences run in the next step and how many tokens
// each computes, under a per-step token budget (continuous batching with
// chunked prefill: decodes first, then prompt chunks, mixed in one step).
// It owns the requests and their KV (kvcache/kv_manager.h), plans steps
// (engine/step.h), applies their results, and reports what happened per
// sequence. No tensors: tests drive it with a fake model runner.
//
// Policy, in order of the running set then the waiting queue:
//   - the running set keeps its order (priority, then arrival); each
//     sequence computes its known-but-uncomputed tokens (a prompt chunk, a
//     recompute after preemption, or the last sampled token: a decode);
//   - with lookahead (overlapped steps), a decode whose input is the token
//     the step in flight is sampling is planned anyway, with a placeholder
//     the runner fills in: the kernels never wait for the engine thread;
//   - waiting requests are admitted in priority/FCFS order while the
//     budget, the sequence limit and the KV pool allow, attaching the
//     longest cached prefix first; the head of the queue is never skipped;
//   - a prompt chunk's size is its cost: tokens deep into a long prompt
//     attend to more and count for more (attention_cost_context);
//   - with several prompts to compute, a running prompt's chunk takes at
//     most an even share of the step's prompt budget, so short prompts are
//     not held behind a long one (what they leave of the step stays unused);
//   - a running sequence that cannot get KV blocks preempts the running
//     sequence that runs last (lowest priority, latest arrival): its KV is
//     freed and it waits to be recomputed (the prefix cache keeps most of
//     it), without losing a token;
//   - a request with n > 1 computes its prompt once; the step that finishes
//     it forks the other samples (they share the prompt's full blocks) and
//     samples every one of them from the prompt's last logits.
// Engine thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "engine/sequence.h"
#include "engine/speculative/proposer.h"
#include "engine/step.h"
#include "kvcache/kv_manager.h"

namespace tetra {

struct SchedulerOptions {
  int max_num_sequences = 64;  // sequences in a step (and sequence slots)
  int max_step_tokens = 512;   // tokens in a step
  // Prompt (and recompute) tokens a step may carry while sequences decode:
  // a step's time is every running stream's inter-token gap, so long chunks
  // wait for steps without decodes. 0: up to max_step_tokens.
  int max_prefill_tokens_with_decodes = 0;
  int num_kv_blocks = 0;
  int kv_block_tokens = 64;
  bool enable_prefix_caching = true;
  bool lookahead = true;       // plan decodes whose input is still being sampled
  bool shared_prefix_attention = true;  // group parallel samples' decodes by their shared prompt blocks
  int max_waiting_requests = 4096;
  // The attention-cost model of prompt chunks: a chunk of c tokens from
  // position s costs c * (1 + (s + c / 2) / attention_cost_context) budget
  // tokens (its linear layers, then attention to what it reads), so a step
  // deep into a long prompt takes fewer tokens and every step costs about
  // the same. The value is the context length at which a token's attention
  // costs as much as its linear layers (ModelConfig: AttentionCostContext).
  // 0: a token costs 1 wherever it is.
  double attention_cost_context = 0;
  // Speculative decoding (doc/speculative.md): greedy decodes guess up to
  // this many tokens ahead and verify them in the step (0: off). Guesses
  // come from new_proposer (default: a SuffixProposer per sequence).
  int spec_max_tokens = 0;
  std::function<std::unique_ptr<speculative::Proposer>()> new_proposer;
};

// What the scheduler needs of the model.
struct ModelLimits {
  int64_t vocab_size = 0;
  int64_t max_position = 0;           // context length
  std::vector<int32_t> end_token_ids;  // the model's end-of-generation tokens
};

// Something that happened to one sequence: a token (appended to its
// output), its finish, or both (a length limit reached with this token).
// A stop token ends a sequence without being appended.
struct SequenceEvent {
  uint64_t request_id = 0;
  int sample_index = 0;
  bool has_token = false;
  SampleResult sample;
  std::optional<FinishReason> finish;
  std::optional<int32_t> stop_token;
  bool request_finished = false;  // the request's last event; then:
  int64_t cached_prompt_tokens = 0;
  Status error;                   // why it failed (kError)
  std::optional<Clock::time_point> scheduled_time;  // when the request first ran
};

// A disaggregated request's KV is ready to move: kReserved (kImport: its
// blocks are reserved for the prompt's KV but the last token; fill
// positions [num_cached_tokens, num_tokens), then call KvArrived) or kReady
// (kExport: positions [0, num_tokens) are computed; send them, then call
// ReleaseHeldKv). Until then the sequence is not scheduled or preempted and
// its blocks and slot stay as given.
struct KvHandoffEvent {
  enum class Kind : uint8_t { kReserved, kReady };
  Kind kind = Kind::kReserved;
  uint64_t request_id = 0;
  std::vector<BlockId> blocks;     // the table over [0, num_tokens)
  int slot = -1;                   // holds the open block when num_tokens is not whole blocks
  int64_t num_tokens = 0;
  int64_t num_cached_tokens = 0;   // kReserved: leading positions already here (prefix cache), whole blocks
  std::vector<int32_t> tokens;     // the prompt tokens of [0, num_tokens)
};

class Scheduler {
 public:
  Scheduler(const SchedulerOptions& options, const ModelLimits& limits);

  // Why a request cannot run (kInvalid, naming the field), or Ok.
  Status Validate(const EngineRequest& request) const;
  // Queues a valid request; kResourceExhausted when the queue is full.
  // `id` 0 takes the next free id; else the caller's (unique).
  StatusOr<Request*> Add(EngineRequest request, Clock::time_point now, uint64_t id = 0);
  // Ends every sequence of a request now (kAbort); unknown ids are ignored.
  void Abort(uint64_t request_id, std::vector<SequenceEvent>* events);
  // Ends one sample (a stop string matched in its text).
  void Finish(uint64_t request_id, int sample_index, FinishReason reason, std::vector<SequenceEvent>* events);
  // Ends every unfinished request (kAbort, or kError with `error`).
  void FinishAll(FinishReason reason, const Status& error, std::vector<SequenceEvent>* events);

  // Plans the next step into *plan; false when no sequence has work.
  bool Plan(StepPlan* plan, Clock::time_point now);
  // Applies the result of a planned step (steps complete in plan order).
  void Complete(const StepPlan& plan, const StepResult& result, std::vector<SequenceEvent>* events);

  // Handoff events since the last call (Plan reserves imports, Complete
  // finishes exports' prompts).
  std::vector<KvHandoffEvent> TakeKvHandoffEvents();
  // kImport: the transfer into the reserved blocks ended. Ok: the sequence
  // runs on from there. An error: its blocks go back and it is prefilled
  // here instead (nothing is lost). Ignored unless the request awaits KV.
  void KvArrived(uint64_t request_id, const Status& status);
  // kExport: the held KV was sent (or could not be): the request finishes
  // (kLength; kError with the status when it is not ok) and its blocks go back.
  void ReleaseHeldKv(uint64_t request_id, const Status& status, std::vector<SequenceEvent>* events);
  // The request awaits or holds KV: a transfer may be touching its blocks,
  // so it must be stopped before Abort frees them.
  bool IsHandingOffKv(uint64_t request_id) const;
  // Runs (engine thread) before the blocks of a finished export whose KV
  // was streamed go back: it must stop every send that reads them.
  void set_on_export_released(std::function<void(uint64_t request_id)> hook) {
    on_export_released_ = std::move(hook);
  }

  bool has_unfinished_requests() const { return num_unfinished_requests_ > 0; }
  int num_steps_in_flight() const { return num_steps_in_flight_; }
  int num_running_requests() const;
  int num_waiting_requests() const;
  int num_awaiting_kv() const { return num_handing_off(Sequence::State::kAwaitingKv); }
  int num_holding_kv() const { return num_handing_off(Sequence::State::kHoldingKv); }
  // Prompt tokens queued or running whose KV is not computed yet (what a
  // prefill pool scales on).
  int64_t num_prompt_tokens_pending() const;
  int64_t num_preemptions() const { return num_preemptions_; }
  // Speculative decoding since start: guessed tokens verified, and of those accepted.
  int64_t num_draft_tokens() const { return num_draft_tokens_; }
  int64_t num_accepted_tokens() const { return num_accepted_tokens_; }
  const KvManager& kv() const { return kv_; }
  const SchedulerOptions& options() const { return options_; }

 private:
  // A sequence's share of the step: tokens [num_computed, num_computed + count).
  struct Work {
    int64_t count = 0;
    bool samples = false;
    bool is_placeholder = false;  // its one input token is the one in flight
    std::vector<int32_t> draft;   // a decode's guessed continuation, verified in the step (count includes it)
  };
  Work WorkOf(const Sequence& seq, int64_t budget) const;
  // Holds a prompt chunk (not a decode) to `limit` tokens.
  static void LimitChunk(int64_t limit, Work* work);
  // The sequence's next work is one token it sampled, not a chunk.
  static bool IsDecoding(const Sequence& seq);
  static bool IsExport(const Sequence& seq);
  // It decodes greedily, alone (n = 1, no penalties, no handoff), with speculation on.
  bool Speculates(const Sequence& seq) const;
  // kExport: the pieces of its KV that this step (just added) completes go
  // to the plan's kv_exports.
  void PlanExportPieces(Sequence& seq, StepPlan* plan);
  bool CanSampleAgain(const Sequence& seq) const;
  // Reserves KV for `count` more positions, preempting sequences that run
  // after `seq` as needed; false when seq itself had to wait.
  bool ReserveOrPreempt(Sequence& seq, int64_t count);
  void Preempt(Sequence& seq);
  // The waiting queue's head could run this step (a slot is free, it is not
  // in flight, it computes its prompt here), as far as is known before planning.
  bool HeadMayBeAdmitted() const;
  // With attention_cost_context: the prompt tokens from position `start`
  // whose cost fits `cost` (at least 1), and the cost of `count` of them.
  int64_t TokensWithinCost(int64_t start, int64_t cost) const;
  int64_t CostOf(int64_t start, int64_t count) const;
  // Plans seq's work within budget: the budget it used (tokens; a prompt
  // chunk's cost), or -1 when seq was preempted.
  int64_t TryPlan(Sequence& seq, int64_t budget, int64_t chunk_limit, StepPlan* plan);
  void AddToPlan(Sequence& seq, const Work& work, StepPlan* plan);
  int NumForkPending(const Request& request) const;
  bool HasRoomToFork(const Request& request, int64_t prompt_tokens) const;
  // Forks the request's other samples from sample 0, whose prompt this step
  // finishes (just added to the plan), and samples their first tokens from
  // its logits row.
  void ForkSamples(Request& request, StepPlan* plan);
  // Marks runs of one request's decodes that start with the same blocks
  // (parallel samples of one prompt): attention reads those blocks once.
  void GroupSharedPrefixes(StepPlan* plan) const;
  // Drops queued slot ops into a slot that is being freed.
  void DropOpsInto(int slot);
  void FinishSequence(Sequence& seq, FinishReason reason, std::optional<int32_t> stop_token,
                      std::vector<SequenceEvent>* events, bool has_token = false, SampleResult sample = {});
  void ReleaseDone();
  // Applies one sampled token to seq (an end, a stop id, a length limit, or
  // a token event); false when seq finished.
  bool ApplySample(Sequence& seq, const SampleResult& sample, std::vector<SequenceEvent>* events);
  Sequence* FindSequence(uint64_t id) const;
  int num_handing_off(Sequence::State state) const;

  SchedulerOptions options_;
  ModelLimits limits_;
  KvManager kv_;
  std::unordered_map<uint64_t, std::unique_ptr<Request>> requests_;  // every request not yet released
  std::unordered_map<uint64_t, Sequence*> sequences_;                // by id, every live sequence
  std::vector<Sequence*> running_;   // in run order
  std::vector<Sequence*> handing_off_;  // kAwaitingKv and kHoldingKv sequences
  std::vector<KvHandoffEvent> kv_events_;
  // A kImport head of the queue: kReserved (now kAwaitingKv), kNoRoom (it
  // waits), or kNotNeeded (its prefix is cached here: it runs as kNone).
  enum class ImportAdmission : uint8_t { kReserved, kNoRoom, kNotNeeded };
  ImportAdmission TryReserveImport(Sequence& seq);
  void EmitHandoff(KvHandoffEvent::Kind kind, const Sequence& seq, int64_t num_cached_tokens);
  std::deque<Sequence*> waiting_;    // in run order
  std::function<void(uint64_t)> on_export_released_;
  // Slot ops of forks, each to run before the first step planned after the
  // step that writes what it copies.
  struct DeferredOp {
    uint64_t after_step = 0;
    KvSlotOp op;
  };
  std::vector<DeferredOp> deferred_ops_;
  std::vector<Request*> released_;      // finished, waiting for their steps to complete
  uint64_t next_request_id_ = 1;
  uint64_t next_sequence_id_ = 1;
  uint64_t next_step_id_ = 1;
  uint64_t next_arrival_order_ = 0;
  int num_unfinished_requests_ = 0;
  int num_steps_in_flight_ = 0;
  int64_t num_draft_tokens_ = 0;
  int64_t num_accepted_tokens_ = 0;
  int64_t num_preemptions_ = 0;
};

}  // namespace tetra
