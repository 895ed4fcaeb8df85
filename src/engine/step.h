// One step between the scheduler and a model runner: what to compute
// (StepPlan) and what came out (StepResult). The engine thread fills a plan,
// a runner executes it (on its own thread when steps overlap), and the engine
// thread applies the result. Plans are reused from step to step, so steady
// steps allocate nothing once their vectors have grown.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/sampler.h"
#include "kvcache/kv_manager.h"
#include "model/forward_batch.h"

namespace tetra {

// One sampled token a step must produce: from logits row `logits_row`, with
// the sequence's own sampler, written as the last sampled token of `slot`
// (a later step that was planned before this result was known reads it
// there: an input token that is a placeholder).
struct StepSample {
  uint64_t sequence_id = 0;
  int logits_row = 0;
  int slot = -1;
  SequenceSampler* sampler = nullptr;
  bool is_fork = false;  // a forked sample's first token: its sequence is not among the step's sequences
  // Speculative decoding: the sequence's input is its last token and then
  // a guess of num_draft tokens (StepPlan::draft_tokens from draft_offset),
  // with logits rows logits_row .. logits_row + num_draft. The runner
  // samples row 0, then row i while the token sampled before equals guess
  // i (VerifyGuess): what the sequence would have decoded one step at a time.
  int num_draft = 0;
  int64_t draft_offset = 0;
};

struct StepPlan {
  uint64_t step_id = 0;
  std::vector<KvSlotOp> kv_ops;  // run before the forward pass, in order
  std::vector<int32_t> tokens;   // [num_tokens] flat inputs; placeholders hold -1
  // Inputs not known when the step was planned: tokens[index] = the last
  // token sampled for `slot` by the steps before this one.
  struct Placeholder {
    int64_t index = 0;
    int slot = -1;
  };
  std::vector<Placeholder> placeholders;
  std::vector<BlockId> block_ids;  // every sequence's table, back to back
  std::vector<int64_t> block_offsets;  // [num_sequences] where its table starts in block_ids
  std::vector<ForwardSequence> sequences;  // block_table spans are set by Finalize()
  std::vector<uint64_t> sequence_ids;      // [num_sequences]
  std::vector<SharedPrefixGroup> shared_prefixes;
  std::vector<StepSample> samples;
  std::vector<int32_t> draft_tokens;  // the guesses of speculating samples, back to back
  // KV that exports (disaggregated prefill) stream as this step writes it,
  // layer by layer: pieces [first_piece, end_piece) of the request's
  // prompt, piece p being its (kv_skip_tokens / block + p)-th block, and the
  // last one the open block in `open_slot` when that is not -1.
  struct KvExport {
    uint64_t request_id = 0;
    const std::string* peer = nullptr;  // the request's kv_peer (lives as long as the request)
    int64_t first_piece = 0;
    int64_t end_piece = 0;
    int64_t blocks_offset = 0;  // its full pieces' blocks in kv_export_blocks
    int open_slot = -1;
  };
  std::vector<KvExport> kv_exports;
  std::vector<BlockId> kv_export_blocks;
  int64_t num_prefill_tokens = 0;  // tokens of sequences that were not decoding
  int64_t num_decode_tokens = 0;

  void Clear();
  bool empty() const { return sequences.empty(); }
  // Points each sequence's block_table into block_ids (after all are added).
  void Finalize();
  ForwardBatch batch(std::span<float> logits) const { return {tokens, sequences, shared_prefixes, logits, {}}; }
  int64_t num_logit_rows() const;
};

struct SampledToken {
  uint64_t sequence_id = 0;
  SampleResult sample;
  std::vector<SampleResult> more;  // a verified guess: the tokens after `sample`, in order
};

// The tokens a speculating sample yields: row 0's, then row i's while the
// token before it equals guess i (a greedy sampler's chain, token for token
// what one-token steps give). sample_row(i) samples logits row i.
template <typename SampleRow>
void VerifyGuess(std::span<const int32_t> guess, SampleRow&& sample_row, SampledToken* out) {
  out->more.clear();
  out->sample = sample_row(0);
  int32_t last = out->sample.token;
  for (size_t i = 0; i < guess.size() && last == guess[i]; ++i) {
    out->more.push_back(sample_row(static_cast<int>(i) + 1));
    last = out->more.back().token;
  }
}

struct StepResult {
  Status status;                      // not ok: the step failed as a whole
  std::vector<SampledToken> sampled;  // one per StepSample, in order
  double seconds = 0.0;               // the step's compute time
  void Clear() {
    status = Status::Ok();
    sampled.clear();
    seconds = 0.0;
  }
};

// Executes plans, one at a time, in the order they are given: a step's KV
// writes and sampled tokens are visible to every later step.
class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual void Run(StepPlan& plan, StepResult* result) = 0;
};

}  // namespace tetra
