// A request inside the engine and its sequences, one per parallel sample.
// Owned by the engine core; the engine thread reads and writes them, the
// runner reads a sequence's sampler during the steps that contain it (so a
// sequence lives until no step in flight names it).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine/speculative/proposer.h"
#include "kvcache/kv_manager.h"

namespace tetra {

using Clock = std::chrono::steady_clock;

struct Request;

struct Sequence {
  enum class State : uint8_t {
    kWaiting,   // queued: new, or preempted (its KV freed, to be recomputed)
    kRunning,   // in the running set: scheduled every step it has work
    kForkPending,  // a parallel sample not yet forked from sample 0 (its prompt is being computed)
    kAwaitingKv,   // kImport: its blocks are reserved and a transfer writes them
    kHoldingKv,    // kExport: its prompt's KV is computed and a transfer reads it
    kFinished,
  };

  uint64_t id = 0;  // engine-unique
  Request* request = nullptr;
  int sample_index = 0;
  State state = State::kWaiting;
  std::vector<int32_t> tokens;  // the prompt, then the tokens generated so far
  // Positions whose KV the steps planned so far write (in flight included).
  int64_t num_computed = 0;
  // Steps planned that sample a token for it whose results are not applied.
  int num_pending_samples = 0;
  // Steps planned that contain it (or sample for it) whose results are not applied.
  int num_steps_in_flight = 0;
  uint64_t planned_in_step = 0;  // the last step that contains it or samples for it
  // kExport: pieces of its KV put in a step's kv_exports so far (StepPlan::KvExport).
  int64_t kv_pieces_planned = 0;
  // kExport that streamed KV: finished, its blocks wait for ReleaseDone
  // (after the sends that read them are stopped).
  bool kv_free_deferred = false;
  KvSequence kv;
  // Speculating sequences: follows its tokens (made and extended while planning, hence mutable).
  mutable std::unique_ptr<speculative::Proposer> proposer;
  std::unique_ptr<SequenceSampler> sampler;
  std::optional<FinishReason> finish;

  int64_t num_prompt_tokens() const;
  int64_t num_generated() const { return static_cast<int64_t>(tokens.size()) - num_prompt_tokens(); }
  bool is_finished() const { return state == State::kFinished; }
};

struct Request {
  uint64_t id = 0;
  uint64_t arrival_order = 0;  // FCFS among equal priorities
  EngineRequest params;
  Clock::time_point arrival_time;
  std::optional<Clock::time_point> first_scheduled_time;
  std::vector<std::unique_ptr<Sequence>> samples;  // [n]
  int64_t cached_prompt_tokens = 0;
  int num_finished_samples = 0;
  Status error;

  bool is_finished() const { return num_finished_samples == static_cast<int>(samples.size()); }
  // Runs before `other` in the queue: lower priority value, then earlier arrival.
  bool RunsBefore(const Request& other) const {
    return params.priority != other.params.priority ? params.priority < other.params.priority
                                                    : arrival_order < other.arrival_order;
  }
};

inline int64_t Sequence::num_prompt_tokens() const { return static_cast<int64_t>(request->params.prompt.size()); }

}  // namespace tetra
