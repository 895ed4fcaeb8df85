// The engine's threads around the scheduler (engine/scheduler.h) and the
// model runner (engine/model_runner.h):
//
//   engine thread: takes submitted requests and aborts from an inbox, plans
//     steps, applies their results, turns tokens into text (stop strings),
//     calls the callbacks, keeps the metrics;
//   runner thread: executes the planned steps in order on the kernels' pool.
//
// With overlap, the engine thread keeps one step planned ahead of the one
// computing: it plans step N+1 (its decodes take the tokens step N is
// sampling as placeholders) and hands it to the runner before it waits for
// step N, then processes step N's results while step N+1 computes. So the
// runner goes from step to step without waiting for the bookkeeping.
#include "engine/engine.h"

#include <sys/sysinfo.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "base/check.h"
#include "base/logging.h"
#include "base/thread_pool.h"
#include "engine/model_runner.h"
#include "engine/scheduler.h"
#include "engine/speculative/ngram.h"
#include "engine/text_stream.h"
#include "model/model.h"

namespace tetra {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Runs steps on its own thread, in the order submitted.
class RunnerThread {
 public:
  explicit RunnerThread(ModelRunner& runner) : runner_(runner), thread_([this] { Loop(); }) {}
  ~RunnerThread() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // `follows_busy`: the step was planned right after the previous one's
  // results, so any time the runner waited for it counts as idle overhead.
  void Submit(StepPlan* plan, StepResult* result, bool follows_busy) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back({plan, result, follows_busy});
    }
    cv_.notify_all();
  }
  // Blocks until `result`'s step is done.
  void Wait(const StepResult* result) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return std::find(done_.begin(), done_.end(), result) != done_.end(); });
    done_.erase(std::find(done_.begin(), done_.end(), result));
  }
  double busy_seconds() const { return busy_seconds_.load(std::memory_order_relaxed); }
  double idle_seconds() const { return idle_seconds_.load(std::memory_order_relaxed); }

 private:
  struct Job {
    StepPlan* plan;
    StepResult* result;
    bool follows_busy;
  };
  void Loop() {
    std::optional<Clock::time_point> last_end;
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        job = queue_.front();
        queue_.pop_front();
      }
      const Clock::time_point start = Clock::now();
      if (job.follows_busy && last_end) {
        idle_seconds_.store(idle_seconds_.load(std::memory_order_relaxed) + Seconds(start - *last_end),
                            std::memory_order_relaxed);
      }
      runner_.Run(*job.plan, job.result);
      last_end = Clock::now();
      busy_seconds_.store(busy_seconds_.load(std::memory_order_relaxed) + Seconds(*last_end - start),
                          std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> lock(mu_);
        done_.push_back(job.result);
      }
      cv_.notify_all();
    }
  }

  ModelRunner& runner_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;               // GUARDED_BY(mu_)
  std::vector<const StepResult*> done_;  // GUARDED_BY(mu_)
  bool stopping_ = false;                // GUARDED_BY(mu_)
  std::atomic<double> busy_seconds_{0.0};
  std::atomic<double> idle_seconds_{0.0};
  std::thread thread_;
};

// What the engine thread keeps of a request beside the scheduler's state.
struct RequestState {
  EngineRequest params;  // stop strings and flags (the prompt is not needed here)
  UpdateCallback on_update;
  Clock::time_point arrival;
  bool has_first_token = false;
  std::vector<std::unique_ptr<TextStream>> text;  // [n]
  std::vector<std::optional<Clock::time_point>> last_token_time;  // [n]
  RequestUsage usage;
};

class EngineImpl : public Engine {
 public:
  EngineImpl(const Model& model, const EngineOptions& options, int num_blocks)
      : model_(model),
        options_(options),
        pool_(options.num_threads),
        runner_(model, num_blocks, options.max_num_sequences, pool_),
        runner_thread_(runner_),
        ttft_(Histogram::TimeToFirstTokenBuckets()),
        itl_(Histogram::InterTokenBuckets()),
        e2e_(Histogram::RequestLatencyBuckets()),
        queue_time_(Histogram::RequestLatencyBuckets()) {
    const ModelConfig& c = model.config();
    SchedulerOptions s;
    s.max_num_sequences = options.max_num_sequences;
    s.max_step_tokens = options.max_step_tokens;
    s.max_prefill_tokens_with_decodes = options.max_prefill_tokens_with_decodes;
    s.num_kv_blocks = num_blocks;
    s.kv_block_tokens = model.kv_cache.block_tokens;
    s.enable_prefix_caching = options.enable_prefix_caching;
    s.lookahead = options.overlap;
    s.shared_prefix_attention = options.shared_prefix_attention;
    s.max_waiting_requests = options.max_waiting_requests;
    s.attention_cost_context = options.attention_cost_model ? AttentionCostContext(c) : 0.0;
    s.spec_max_tokens = options.spec_max_tokens;
    if (options.spec_method == EngineOptions::SpecMethod::kNgram) {
      s.new_proposer = [] { return std::make_unique<speculative::NgramProposer>(); };
    }
    scheduler_ = std::make_unique<Scheduler>(s, ModelLimits{c.vocab_size, c.max_position, model.tokenizer->stop_ids()});
    num_kv_blocks_ = num_blocks;
    if (options_.kv_handoff != nullptr) {
      runner_.set_on_layer_written([this](const StepPlan& plan, int layer) { StreamExports(plan, layer); });
      scheduler_->set_on_export_released([this](uint64_t id) { options_.kv_handoff->OnKvCancel(id); });
    }
    thread_ = std::thread([this] { Loop(); });
  }
  ~EngineImpl() override { Shutdown(); }

  Status Validate(const EngineRequest& request) const override {
    if (request.kv_handoff != EngineRequest::KvHandoff::kNone && options_.kv_handoff == nullptr) {
      return Status::Error("this engine has no KV handoff (it is not part of a disaggregated deployment)");
    }
    return scheduler_->Validate(request);
  }

  StatusOr<uint64_t> Submit(EngineRequest request, UpdateCallback on_update) override {
    TETRA_RETURN_IF_ERROR(Validate(request));
    std::lock_guard<std::mutex> lock(inbox_mu_);
    if (stopping_) return Status::WithCode(StatusCode::kUnavailable, "the engine is shutting down");
    if (num_waiting_.load() + static_cast<int64_t>(inbox_.size()) >= options_.max_waiting_requests) {
      return Status::WithCode(StatusCode::kResourceExhausted,
                              fmt::format("the engine's queue is full ({} requests waiting)", options_.max_waiting_requests));
    }
    const uint64_t id = next_request_id_++;
    inbox_.push_back(Message{Message::kAdd, id, std::move(request), std::move(on_update), Clock::now()});
    inbox_size_.store(static_cast<int64_t>(inbox_.size()));
    inbox_cv_.notify_one();
    return id;
  }

  void Abort(uint64_t request_id) override { Post(Message{Message::kAbort, request_id, {}, {}, Clock::now()}); }
  void KvArrived(uint64_t request_id, Status status) override {
    Post(Message{Message::kKvArrived, request_id, {}, {}, Clock::now(), std::move(status)});
  }
  void KvSent(uint64_t request_id, Status status) override {
    Post(Message{Message::kKvSent, request_id, {}, {}, Clock::now(), std::move(status)});
  }

  void Shutdown() override {
    {
      std::lock_guard<std::mutex> lock(inbox_mu_);
      stopping_ = true;
      inbox_cv_.notify_one();
    }
    std::lock_guard<std::mutex> lock(shutdown_mu_);
    if (thread_.joinable()) thread_.join();
  }

  EngineMetrics metrics() const override {
    EngineMetrics m;
    {
      std::lock_guard<std::mutex> lock(metrics_mu_);
      m = counters_;
    }
    m.num_requests_waiting += static_cast<int64_t>(inbox_size_.load());
    m.step_busy_seconds = runner_thread_.busy_seconds();
    m.step_idle_seconds = runner_thread_.idle_seconds();
    m.time_to_first_token = ttft_.snapshot();
    m.inter_token_latency = itl_.snapshot();
    m.e2e_request_latency = e2e_.snapshot();
    m.request_queue_time = queue_time_.snapshot();
    return m;
  }

  const Model& model() const override { return model_; }

 private:
  struct Message {
    enum Kind { kAdd, kAbort, kKvArrived, kKvSent } kind;
    uint64_t id;
    EngineRequest request;
    UpdateCallback on_update;
    Clock::time_point time;
    Status status = Status::Ok();  // kKvArrived, kKvSent
  };

  void Post(Message message) {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    inbox_.push_back(std::move(message));
    inbox_cv_.notify_one();
  }

  // Runner thread, during a step: layer `layer` of the step's exports is
  // written; hand its chunks (KvHandoffHandler::OnKvWritten) to the sender.
  void StreamExports(const StepPlan& plan, int layer) {
    const KvStorage& storage = runner_.storage();
    const int64_t num_layers = storage.geometry().num_layers;
    for (const StepPlan::KvExport& e : plan.kv_exports) {
      std::vector<KvHandoffChunk> chunks;
      for (int64_t p = e.first_piece; p < e.end_piece; ++p) {
        const bool open = e.open_slot >= 0 && p == e.end_piece - 1;
        const std::span<const BlockId> block(plan.kv_export_blocks.data() + e.blocks_offset + (p - e.first_piece),
                                             open ? 0 : 1);
        chunks.push_back({static_cast<uint32_t>(p * num_layers + layer),
                          storage.LayerRegions(layer, block, open ? e.open_slot : -1), open});
      }
      options_.kv_handoff->OnKvWritten(e.request_id, *e.peer, storage.transfer_format(), std::move(chunks));
    }
  }

  // Tells the handler about KV that is reserved (kImport) or computed
  // (kExport), with where it lies in this runner's storage. The runner
  // thread may be computing meanwhile: it never writes a handed-off
  // sequence's blocks or slot.
  void DispatchHandoffs() {
    for (const KvHandoffEvent& e : scheduler_->TakeKvHandoffEvents()) {
      const auto it = requests_.find(e.request_id);
      if (it == requests_.end()) continue;
      const KvStorage& storage = runner_.storage();
      const int bt = storage.options().block_tokens;
      KvHandoffLayout layout;
      layout.num_tokens = e.num_tokens;
      layout.first_token =
          e.kind == KvHandoffEvent::Kind::kReserved ? e.num_cached_tokens : it->second->params.kv_skip_tokens;
      layout.format = storage.transfer_format();
      layout.tokens = e.tokens;
      layout.peer = it->second->params.kv_peer;
      // Pieces: each full block from first_token on, then the open block.
      const int64_t first_block = layout.first_token / bt;
      const int64_t full_blocks = e.num_tokens / bt;
      const int open_slot = e.num_tokens % bt != 0 ? e.slot : -1;
      const int64_t num_pieces = std::max<int64_t>(0, full_blocks - first_block) + (open_slot >= 0 ? 1 : 0);
      const int num_layers = storage.geometry().num_layers;
      layout.num_chunks = static_cast<uint32_t>(num_pieces * num_layers);
      if (e.kind == KvHandoffEvent::Kind::kReserved) {
        for (int64_t p = 0; p < num_pieces; ++p) {
          const bool open = open_slot >= 0 && p == num_pieces - 1;
          const std::span<const BlockId> block(e.blocks.data() + first_block + p, open ? 0 : 1);
          for (int l = 0; l < num_layers; ++l) layout.chunks.push_back(storage.LayerRegions(l, block, open ? open_slot : -1));
        }
      }
      if (e.kind == KvHandoffEvent::Kind::kReserved) {
        options_.kv_handoff->OnKvReserved(e.request_id, layout);
      } else {
        options_.kv_handoff->OnKvReady(e.request_id, layout);
      }
    }
  }

  // Stops the transfer of a handed-off request before its blocks are freed.
  void CancelHandoff(uint64_t request_id) {
    if (options_.kv_handoff != nullptr && scheduler_->IsHandingOffKv(request_id)) {
      options_.kv_handoff->OnKvCancel(request_id);
    }
  }

  // Applies queued submissions and aborts; true once shutting down.
  bool DrainInbox(std::vector<SequenceEvent>* events) {
    std::deque<Message> messages;
    bool stopping;
    {
      std::lock_guard<std::mutex> lock(inbox_mu_);
      messages.swap(inbox_);
      stopping = stopping_;
      inbox_size_.store(0);
    }
    for (Message& m : messages) {
      if (m.kind == Message::kAbort) {
        CancelHandoff(m.id);
        scheduler_->Abort(m.id, events);
        continue;
      }
      if (m.kind == Message::kKvArrived) {
        scheduler_->KvArrived(m.id, m.status);
        continue;
      }
      if (m.kind == Message::kKvSent) {
        scheduler_->ReleaseHeldKv(m.id, m.status, events);
        continue;
      }
      auto state = std::make_unique<RequestState>();
      state->arrival = m.time;
      state->on_update = std::move(m.on_update);
      const int n = m.request.n;
      state->last_token_time.resize(n);
      state->params = m.request;
      state->params.prompt.clear();
      for (int i = 0; i < n; ++i) {
        state->text.push_back(std::make_unique<TextStream>(*model_.tokenizer, state->params.skip_special_tokens,
                                                           state->params.stop, state->params.include_stop_string));
      }
      state->usage.prompt_tokens = static_cast<int64_t>(m.request.prompt.size());
      auto added = scheduler_->Add(std::move(m.request), m.time, m.id);
      if (!added.ok()) {  // the queue filled up between Submit and here
        RequestUpdate update;
        update.request_id = m.id;
        update.finished = true;
        update.error = added.status();
        state->on_update(std::move(update));
        continue;
      }
      requests_[m.id] = std::move(state);
    }
    if (stopping && !aborted_all_) {
      aborted_all_ = true;
      for (const auto& [id, state] : requests_) CancelHandoff(id);
      scheduler_->FinishAll(FinishReason::kAbort, Status::Ok(), events);
    }
    return stopping;
  }

  // Turns the scheduler's events into text and callbacks, one update per
  // request with news. Stop strings found here end their samples, which
  // adds events to the same list.
  void Process(std::vector<SequenceEvent>& events) {
    if (events.empty()) return;
    const Clock::time_point now = Clock::now();
    std::map<uint64_t, RequestUpdate> updates;  // in id order: callbacks in a stable order
    for (size_t e = 0; e < events.size(); ++e) {
      // A copy: a stop string found below adds events to the list (it may move).
      SequenceEvent event = events[e];
      const auto it = requests_.find(event.request_id);
      if (it == requests_.end()) continue;
      RequestState& state = *it->second;
      RequestUpdate& update = updates[event.request_id];
      update.request_id = event.request_id;
      SampleUpdate* sample = nullptr;
      for (SampleUpdate& s : update.samples) {
        if (s.index == event.sample_index) sample = &s;
      }
      if (sample == nullptr) {
        update.samples.push_back({});
        sample = &update.samples.back();
        sample->index = event.sample_index;
      }
      TextStream& text = *state.text[event.sample_index];
      // A verified guess brings several tokens at once: those after a stop
      // string matched here are not part of the answer.
      if (!sample->stop_string.empty() && event.has_token) {
        if (!event.finish) continue;
        event.has_token = false;
      }
      const bool makes_token = event.has_token || event.stop_token.has_value();
      if (makes_token) {
        ++state.usage.completion_tokens;
        if (!state.has_first_token) {
          state.has_first_token = true;
          ttft_.Observe(Seconds(now - state.arrival));
          if (event.scheduled_time) queue_time_.Observe(Seconds(*event.scheduled_time - state.arrival));
          std::lock_guard<std::mutex> lock(metrics_mu_);
          counters_.prompt_tokens += state.usage.prompt_tokens;
        }
        auto& last = state.last_token_time[event.sample_index];
        if (last) itl_.Observe(Seconds(now - *last));
        last = now;
        std::lock_guard<std::mutex> lock(metrics_mu_);
        ++counters_.generation_tokens;
      }
      if (event.has_token) {
        const int32_t token = event.sample.token;
        sample->tokens.push_back(token);
        if (state.params.sampling.top_logprobs >= 0) {
          const std::span<const TokenLogprob> top = event.sample.top();
          sample->logprobs.push_back({token, event.sample.logprob, {top.begin(), top.end()}});
        }
        std::string matched;
        sample->text += text.Push(token, &matched);
        if (!matched.empty() && !event.finish) {
          sample->stop_string = matched;
          scheduler_->Finish(event.request_id, event.sample_index, FinishReason::kStop, &events);
        }
      }
      if (event.finish) {
        std::string matched;
        sample->text += text.Finish(&matched);
        if (!matched.empty()) sample->stop_string = matched;
        sample->finish = !sample->stop_string.empty() && *event.finish == FinishReason::kLength ? FinishReason::kStop
                                                                                                 : *event.finish;
        sample->stop_token = event.stop_token;
        std::lock_guard<std::mutex> lock(metrics_mu_);
        ++counters_.requests_finished[static_cast<int>(*sample->finish)];
      }
      if (event.request_finished) {
        state.usage.cached_prompt_tokens = event.cached_prompt_tokens;
        // An export's prompt is its whole product: it counts when the KV is
        // sent, as others' count at their first token.
        if (!state.has_first_token && state.params.kv_handoff == EngineRequest::KvHandoff::kExport &&
            event.error.ok()) {
          std::lock_guard<std::mutex> lock(metrics_mu_);
          counters_.prompt_tokens += state.usage.prompt_tokens;
        }
        update.finished = true;
        update.error = event.error;
        e2e_.Observe(Seconds(now - state.arrival));
      }
      update.usage = state.usage;
    }
    for (auto& [id, update] : updates) {
      const auto it = requests_.find(id);
      const bool finished = update.finished;
      it->second->on_update(std::move(update));
      if (finished) requests_.erase(it);
    }
  }

  void PublishGauges() {
    std::lock_guard<std::mutex> lock(metrics_mu_);
    counters_.num_requests_running = scheduler_->num_running_requests();
    counters_.num_requests_waiting = scheduler_->num_waiting_requests();
    counters_.num_requests_awaiting_kv = scheduler_->num_awaiting_kv();
    counters_.num_requests_holding_kv = scheduler_->num_holding_kv();
    counters_.num_prompt_tokens_pending = scheduler_->num_prompt_tokens_pending();
    num_waiting_.store(counters_.num_requests_waiting);
    const BlockPool& blocks = scheduler_->kv().blocks();
    counters_.kv_cache_blocks = blocks.num_blocks();
    counters_.kv_cache_usage = blocks.num_blocks() > 0 ? static_cast<double>(blocks.num_blocks_held()) / blocks.num_blocks() : 0.0;
    counters_.prefix_cache_queries = scheduler_->kv().prefix_tokens_queried();
    counters_.prefix_cache_hits = scheduler_->kv().prefix_tokens_hit();
    counters_.num_preemptions = scheduler_->num_preemptions();
    counters_.spec_draft_tokens = scheduler_->num_draft_tokens();
    counters_.spec_accepted_tokens = scheduler_->num_accepted_tokens();
    counters_.num_steps = num_steps_;
  }

  void Loop() {
    constexpr int kMaxPlans = 3;
    std::vector<StepPlan> plans(kMaxPlans);
    std::vector<StepResult> results(kMaxPlans);
    std::deque<int> in_flight;  // plan indices, oldest first
    const size_t depth = options_.overlap ? 2 : 1;
    std::vector<SequenceEvent> events;
    bool waited = true;  // the runner's first wait is not overhead
    for (;;) {
      events.clear();
      const bool stopping = DrainInbox(&events);
      Process(events);
      // Plan ahead: with overlap, the next step is planned while one computes.
      // A step of prompt chunks alone is long and no stream's gap hangs on
      // the next one starting at once: plan that one when it ends, so what
      // arrives meanwhile (a short prompt behind a long one) joins it a
      // whole step sooner.
      while (in_flight.size() < depth &&
             (in_flight.empty() || plans[in_flight.back()].num_decode_tokens > 0)) {
        int free_index = 0;
        while (std::find(in_flight.begin(), in_flight.end(), free_index) != in_flight.end()) ++free_index;
        const bool planned = scheduler_->Plan(&plans[free_index], Clock::now());
        DispatchHandoffs();  // imports reserved by the plan
        if (!planned) break;
        runner_thread_.Submit(&plans[free_index], &results[free_index], /*follows_busy=*/!waited);
        in_flight.push_back(free_index);
        ++num_steps_;
        waited = false;
      }
      PublishGauges();
      if (in_flight.empty()) {
        if (stopping && !scheduler_->has_unfinished_requests()) return;
        std::unique_lock<std::mutex> lock(inbox_mu_);
        inbox_cv_.wait(lock, [&] { return !inbox_.empty() || (stopping_ && !aborted_all_); });
        waited = true;
        continue;
      }
      const int index = in_flight.front();
      runner_thread_.Wait(&results[index]);
      in_flight.pop_front();
      events.clear();
      scheduler_->Complete(plans[index], results[index], &events);
      DispatchHandoffs();  // exports whose prompt the step finished
      if (!results[index].status.ok()) TETRA_LOG_ERROR("step failed: {}", results[index].status.message());
      Process(events);
    }
  }

  const Model& model_;
  EngineOptions options_;
  ThreadPool pool_;
  LocalModelRunner runner_;
  RunnerThread runner_thread_;
  std::unique_ptr<Scheduler> scheduler_;  // engine thread only (Validate is const and reads options only)
  int num_kv_blocks_ = 0;
  std::unordered_map<uint64_t, std::unique_ptr<RequestState>> requests_;  // engine thread only
  int64_t num_steps_ = 0;

  std::mutex inbox_mu_;
  std::condition_variable inbox_cv_;
  std::deque<Message> inbox_;  // GUARDED_BY(inbox_mu_)
  bool stopping_ = false;      // GUARDED_BY(inbox_mu_)
  bool aborted_all_ = false;   // engine thread
  uint64_t next_request_id_ = 1;  // GUARDED_BY(inbox_mu_)
  std::atomic<int64_t> inbox_size_{0};
  std::atomic<int64_t> num_waiting_{0};

  mutable std::mutex metrics_mu_;
  EngineMetrics counters_;  // GUARDED_BY(metrics_mu_): gauges and counters
  Histogram ttft_, itl_, e2e_, queue_time_;

  std::mutex shutdown_mu_;
  std::thread thread_;  // last: starts after everything above is built
};

}  // namespace

StatusOr<std::unique_ptr<Engine>> CreateEngine(const Model& model, const EngineOptions& options) {
  if (options.max_num_sequences < 1) return Status::Errorf("max_num_sequences must be at least 1, got {}", options.max_num_sequences);
  if (options.max_step_tokens < 1) return Status::Errorf("max_step_tokens must be at least 1, got {}", options.max_step_tokens);
  const int64_t block_bytes = KvBytesPerBlock(model);
  int64_t bytes = options.kv_cache_bytes;
  if (bytes <= 0) {
    // Room for every sequence at up to 4096 positions, capped at a quarter of RAM.
    const int64_t tokens = static_cast<int64_t>(options.max_num_sequences) *
                           std::min<int64_t>(model.config().max_position, 4096);
    struct sysinfo info {};
    sysinfo(&info);
    const int64_t quarter = static_cast<int64_t>(info.totalram) * info.mem_unit / 4;
    bytes = std::min(tokens / model.kv_cache.block_tokens * block_bytes, quarter);
  }
  const int64_t num_blocks = bytes / block_bytes;
  if (num_blocks < 1) {
    return Status::Errorf("a KV cache of {} bytes holds no block of {} bytes", bytes, block_bytes);
  }
  if (num_blocks > (int64_t{1} << 30)) return Status::Errorf("a KV cache of {} blocks is too large", num_blocks);
  return std::unique_ptr<Engine>(new EngineImpl(model, options, static_cast<int>(num_blocks)));
}

}  // namespace tetra
