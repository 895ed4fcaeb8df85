// The engine's figures for /metrics and dashboards, with vLLM's meanings
// (doc/metrics.md): gauges of the moment, counters since start, and latency
// histograms. The engine updates them on its thread; EngineMetrics is a
// snapshot any thread may take.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <vector>

namespace tetra {

// A histogram with fixed upper bounds (seconds), Prometheus style: counts
// per bucket (not cumulative here), their sum, and how many observations.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;   // ascending; an implicit +Inf bucket follows
    std::vector<uint64_t> counts;       // [upper_bounds.size() + 1], per bucket
    double sum = 0.0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

  // Bucket bounds as vLLM uses them for the request latencies.
  static std::vector<double> TimeToFirstTokenBuckets();
  static std::vector<double> InterTokenBuckets();
  static std::vector<double> RequestLatencyBuckets();
  static std::vector<double> TransferBuckets();  // KV transfers: 1 ms to 60 s

 private:
  mutable std::mutex mu_;
  std::vector<double> upper_bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

struct EngineMetrics {
  // Gauges.
  int64_t num_requests_running = 0;  // requests with a sequence in the running batch
  int64_t num_requests_waiting = 0;  // queued, not started or preempted
  double kv_cache_usage = 0.0;       // fraction of KV blocks held, 0..1
  int64_t kv_cache_blocks = 0;       // blocks in the pool
  int64_t num_requests_awaiting_kv = 0;  // decode role: blocks reserved, KV on its way
  int64_t num_requests_holding_kv = 0;   // prefill role: prompt computed, KV being sent
  int64_t num_prompt_tokens_pending = 0; // prompt tokens queued or running, not computed yet
  // Counters.
  int64_t prefix_cache_queries = 0;  // prompt tokens looked up in the prefix cache
  int64_t prefix_cache_hits = 0;     // of those, tokens found
  int64_t prompt_tokens = 0;         // prompt tokens of finished and running requests (computed or cached)
  int64_t generation_tokens = 0;     // tokens generated
  int64_t num_preemptions = 0;       // sequences preempted (their KV freed, recomputed later)
  int64_t num_steps = 0;             // forward steps run
  int64_t spec_draft_tokens = 0;     // speculative decoding: guessed tokens verified
  int64_t spec_accepted_tokens = 0;  // of those, accepted
  std::array<int64_t, 4> requests_finished{};  // by FinishReason: stop, length, abort, error
  // Step timing: seconds the runner computed, and seconds it sat idle between
  // steps while requests were in flight (what overlap hides).
  double step_busy_seconds = 0.0;
  double step_idle_seconds = 0.0;
  // Histograms (seconds).
  Histogram::Snapshot time_to_first_token;
  Histogram::Snapshot inter_token_latency;
  Histogram::Snapshot e2e_request_latency;
  Histogram::Snapshot request_queue_time;
};

}  // namespace tetra
