// KV and scratch for callers that drive their own sequences (tetra
// generate, perplexity and bench, tests): a KvManager, its storage and a
// workspace over one model. The serving engine (engine/) schedules many
// requests over the same pieces; this is the plain path to them. One thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "model/model.h"

namespace tetra {

class Session {
 public:
  // Room for max_sequences live sequences of up to max_tokens positions each.
  Session(const Model& model, int max_sequences, int64_t max_tokens);

  // A new, empty sequence's id; kResourceExhausted when max_sequences are live.
  StatusOr<int> NewSequence();
  void FreeSequence(int id);
  int64_t length(int id) const { return sequences_[id].num_tokens; }

  struct Step {
    int sequence = 0;
    std::span<const int32_t> tokens;  // appended to the sequence
    LogitsRows logits = LogitsRows::kLast;
  };
  // Runs every step's tokens in one forward pass (cross-sequence batch);
  // logits: [rows, vocab], the steps' rows in order. kResourceExhausted when
  // the pool is out of blocks (nothing runs then), kInvalid for bad tokens.
  Status Forward(std::span<const Step> steps, std::span<float> logits, ThreadPool& pool);

  KvManager& kv() { return kv_; }
  KvStorage& storage() { return *storage_; }
  Workspace& workspace() { return *workspace_; }

 private:
  const Model& model_;
  KvManager kv_;
  std::unique_ptr<KvStorage> storage_;
  std::unique_ptr<Workspace> workspace_;
  std::vector<KvSequence> sequences_;   // [max_sequences]
  std::vector<bool> is_live_;
  // Step scratch, kept so steady steps allocate nothing.
  std::vector<int32_t> tokens_;
  std::vector<ForwardSequence> forward_;
};

}  // namespace tetra
