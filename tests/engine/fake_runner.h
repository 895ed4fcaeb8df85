// A model runner without a model, for scheduler tests. It keeps a model of
// the KV storage at token level (which token each block position and each
// slot's open block holds, with the same write, fill and slot-op rules as
// model/kv_cache.h), and "predicts" the next token as a hash of the history
// it reads back through the sequence's block table and slot. So any wrong
// block table, slot, fork, prefix hit, truncation or lost placeholder
// changes the tokens, and the test's oracle, which computes the same hash
// from each request's true history, sees it.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <unordered_map>
#include <vector>

#include "engine/step.h"

namespace tetra::testing {

// The token the fake model produces after `history` for parallel sample `sample_index`.
inline int32_t FakeNextToken(std::span<const int32_t> history, int sample_index, int64_t vocab) {
  uint64_t h = 1469598103934665603ULL;
  for (int32_t t : history) h = (h ^ static_cast<uint32_t>(t)) * 1099511628211ULL;
  h ^= h >> 29;
  return static_cast<int32_t>((h + 7919ULL * static_cast<uint64_t>(sample_index)) % static_cast<uint64_t>(vocab));
}

class FakeRunner : public ModelRunner {
 public:
  FakeRunner(int num_blocks, int block_tokens, int num_slots, int64_t vocab)
      : block_tokens_(block_tokens),
        vocab_(vocab),
        blocks_(num_blocks, std::vector<int32_t>(block_tokens, -1)),
        slots_(num_slots, std::vector<int32_t>(block_tokens, -1)),
        last_sampled_(num_slots, -1) {}

  // The test tells which sample index each sequence is (the fake's "seed").
  void SetSampleIndex(uint64_t sequence_id, int sample_index) { sample_index_[sequence_id] = sample_index; }
  int64_t max_step_tokens_seen() const { return max_step_tokens_; }
  int64_t max_step_sequences_seen() const { return max_step_sequences_; }
  int64_t steps_run() const { return steps_; }
  int64_t placeholders_seen() const { return placeholders_; }
  int64_t shared_prefix_groups_seen() const { return shared_prefix_groups_; }
  int64_t draft_tokens_seen() const { return draft_tokens_seen_; }
  // The tokens at positions [0, num_tokens) of a sequence with this table and
  // slot (what a KV transfer sends), and the same written into another's
  // positions [first, first + tokens.size()) (what it receives).
  std::vector<int32_t> ReadKv(const std::vector<BlockId>& table, int slot, int64_t num_tokens) const {
    std::vector<int32_t> out(num_tokens);
    const int64_t full = num_tokens / block_tokens_ * block_tokens_;
    for (int64_t p = 0; p < num_tokens; ++p) {
      out[p] = p < full ? blocks_[table[p / block_tokens_]][p % block_tokens_] : slots_[slot][p % block_tokens_];
    }
    return out;
  }
  void WriteKv(const std::vector<BlockId>& table, int slot, int64_t first, const std::vector<int32_t>& tokens) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const int64_t p = first + static_cast<int64_t>(i);
      slots_[slot][p % block_tokens_] = tokens[i];
      if (p % block_tokens_ == block_tokens_ - 1) blocks_[table[p / block_tokens_]] = slots_[slot];
    }
  }
  // Called at the start of each Run (tests inject failures here).
  std::function<Status(const StepPlan&)> before_run;

  void Run(StepPlan& plan, StepResult* result) override {
    result->Clear();
    ++steps_;
    if (before_run) {
      result->status = before_run(plan);
      if (!result->status.ok()) return;
    }
    // The plan is a batch the real model accepts (placeholders filled below).
    {
      std::vector<int32_t> tokens = plan.tokens;
      for (int32_t& t : tokens) t = std::max(0, t);
      std::vector<float> logits(static_cast<size_t>(plan.num_logit_rows() * vocab_));
      const ForwardBatch batch{tokens, plan.sequences, plan.shared_prefixes, logits, {}};
      const Status valid = ValidateForwardBatch(
          batch, ForwardLimits{vocab_, 4096, block_tokens_, static_cast<int>(blocks_.size()), static_cast<int>(slots_.size())});
      EXPECT_TRUE(valid.ok()) << valid.message();
    }
    shared_prefix_groups_ += static_cast<int64_t>(plan.shared_prefixes.size());
    max_step_tokens_ = std::max<int64_t>(max_step_tokens_, static_cast<int64_t>(plan.tokens.size()));
    max_step_sequences_ = std::max<int64_t>(max_step_sequences_, static_cast<int64_t>(plan.sequences.size()));
    for (const KvSlotOp& op : plan.kv_ops) {
      for (int i = 0; i < op.num_tokens; ++i) {
        slots_[op.to_slot][i] = op.kind == KvSlotOp::Kind::kCopySlot ? slots_[op.from_slot][i] : blocks_[op.from_block][i];
      }
    }
    for (const StepPlan::Placeholder& p : plan.placeholders) {
      EXPECT_GE(last_sampled_[p.slot], 0) << "placeholder of slot " << p.slot << " before any sample";
      plan.tokens[p.index] = last_sampled_[p.slot];
      ++placeholders_;
    }
    std::vector<std::vector<int32_t>> row_history;  // per logits row
    for (const ForwardSequence& s : plan.sequences) {
      EXPECT_GE(s.slot, 0);
      EXPECT_GE(static_cast<int64_t>(s.block_table.size()) * block_tokens_, s.start_position + s.num_tokens);
      std::vector<int32_t>& open = slots_[s.slot];
      for (int64_t i = 0; i < s.num_tokens; ++i) {
        const int64_t position = s.start_position + i;
        const int64_t in_block = position % block_tokens_;
        EXPECT_GE(plan.tokens[s.first_token + i], 0);
        open[in_block] = plan.tokens[s.first_token + i];
        if (in_block == block_tokens_ - 1) blocks_[s.block_table[position / block_tokens_]] = open;
      }
      if (s.logits == LogitsRows::kNone) continue;
      // Read the history back through the table and the slot, for the last
      // row or (a verified guess) every row.
      const int64_t end = s.start_position + s.num_tokens;
      const int64_t first_row = s.logits == LogitsRows::kAll ? s.start_position + 1 : end;
      for (int64_t length = first_row; length <= end; ++length) {
        std::vector<int32_t> history(length);
        for (int64_t p = 0; p < length; ++p) {
          history[p] = p < end / block_tokens_ * block_tokens_ ? blocks_[s.block_table[p / block_tokens_]][p % block_tokens_]
                                                               : open[p % block_tokens_];
        }
        row_history.push_back(std::move(history));
      }
    }
    for (const StepSample& sample : plan.samples) {
      EXPECT_LT(sample.logits_row, static_cast<int>(row_history.size()));
      const auto it = sample_index_.find(sample.sequence_id);
      const int index = it == sample_index_.end() ? 0 : it->second;
      SampledToken out;
      out.sequence_id = sample.sequence_id;
      auto sample_row = [&](int row) {
        SampleResult r;
        r.token = FakeNextToken(row_history[sample.logits_row + row], index, vocab_);
        return r;
      };
      VerifyGuess(std::span<const int32_t>(plan.draft_tokens).subspan(sample.draft_offset, sample.num_draft),
                  sample_row, &out);
      draft_tokens_seen_ += sample.num_draft;
      last_sampled_[sample.slot] = out.more.empty() ? out.sample.token : out.more.back().token;
      result->sampled.push_back(out);
    }
  }

 private:
  int block_tokens_;
  int64_t vocab_;
  std::vector<std::vector<int32_t>> blocks_;  // [block][position in block]
  std::vector<std::vector<int32_t>> slots_;   // [slot][position in the open block]
  std::vector<int32_t> last_sampled_;         // [slot]
  std::unordered_map<uint64_t, int> sample_index_;
  int64_t max_step_tokens_ = 0, max_step_sequences_ = 0, steps_ = 0, placeholders_ = 0, shared_prefix_groups_ = 0;
  int64_t draft_tokens_seen_ = 0;
};

}  // namespace tetra::testing
