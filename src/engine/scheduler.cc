#include "engine/scheduler.h"

#include <algorithm>
#include <cmath>

#include "base/check.h"
#include "engine/speculative/suffix.h"

namespace tetra {

namespace {
// Run order: the request's (priority, arrival), then the sample's index.
bool RunsBefore(const Sequence* a, const Sequence* b) {
  return a->request->RunsBefore(*b->request) || (a->request == b->request && a->sample_index < b->sample_index);
}
}  // namespace

void StepPlan::Clear() {
  step_id = 0;
  kv_ops.clear();
  tokens.clear();
  placeholders.clear();
  block_ids.clear();
  block_offsets.clear();
  sequences.clear();
  sequence_ids.clear();
  shared_prefixes.clear();
  samples.clear();
  draft_tokens.clear();
  kv_exports.clear();
  kv_export_blocks.clear();
  num_prefill_tokens = 0;
  num_decode_tokens = 0;
}

void StepPlan::Finalize() {
  for (size_t i = 0; i < sequences.size(); ++i) {
    const int64_t begin = block_offsets[i];
    const int64_t end = i + 1 < sequences.size() ? block_offsets[i + 1] : static_cast<int64_t>(block_ids.size());
    sequences[i].block_table = std::span<const BlockId>(block_ids.data() + begin, static_cast<size_t>(end - begin));
  }
}

int64_t StepPlan::num_logit_rows() const {
  int64_t rows = 0;
  for (const ForwardSequence& s : sequences) rows += s.num_logit_rows();
  return rows;
}

Scheduler::Scheduler(const SchedulerOptions& options, const ModelLimits& limits)
    : options_(options),
      limits_(limits),
      kv_(options.num_kv_blocks, options.kv_block_tokens, options.max_num_sequences) {
  TETRA_CHECK(options.max_num_sequences > 0 && options.max_step_tokens > 0);
  kv_.blocks().set_prefix_caching(options.enable_prefix_caching);
}

Status Scheduler::Validate(const EngineRequest& r) const {
  if (r.prompt.empty()) return Status::Error("the prompt is empty: nothing to continue");
  for (int32_t id : r.prompt) {
    if (id < 0 || id >= limits_.vocab_size) {
      return Status::Errorf("prompt token id {} is outside the vocabulary of {}", id, limits_.vocab_size);
    }
  }
  if (r.max_tokens < 1) return Status::Errorf("max_tokens must be at least 1, got {}", r.max_tokens);
  if (r.n < 1 || r.n > options_.max_num_sequences) {
    return Status::Errorf("n must be in [1, {}], got {}", options_.max_num_sequences, r.n);
  }
  const int64_t prompt = static_cast<int64_t>(r.prompt.size());
  if (prompt + r.max_tokens > limits_.max_position) {
    return Status::Errorf(
        "this model's maximum context length is {} tokens, but the request has {} prompt tokens and max_tokens {} "
        "({} in total)",
        limits_.max_position, prompt, r.max_tokens, prompt + r.max_tokens);
  }
  // The request must fit the KV pool on its own, or it could never finish.
  const int bt = options_.kv_block_tokens;
  const int64_t total = prompt + r.max_tokens;
  const int64_t blocks = prompt / bt + static_cast<int64_t>(r.n) * ((total + bt - 1) / bt - prompt / bt);
  if (blocks > options_.num_kv_blocks) {
    return Status::Errorf("the request needs {} KV blocks of {} tokens ({} prompt tokens, n {}, max_tokens {}) but the "
                          "cache holds {}",
                          blocks, bt, prompt, r.n, r.max_tokens, options_.num_kv_blocks);
  }
  for (int32_t id : r.stop_token_ids) {
    if (id < 0 || id >= limits_.vocab_size) {
      return Status::Errorf("stop_token_ids: {} is outside the vocabulary of {}", id, limits_.vocab_size);
    }
  }
  for (const std::string& stop : r.stop) {
    if (stop.empty()) return Status::Error("stop: an empty stop string would match everywhere");
  }
  if (r.kv_handoff == EngineRequest::KvHandoff::kExport && r.n != 1) {
    return Status::Errorf("a KV export computes one prompt's KV: n must be 1, got {}", r.n);
  }
  if (r.kv_skip_tokens < 0 || r.kv_skip_tokens > static_cast<int64_t>(r.prompt.size()) ||
      r.kv_skip_tokens % options_.kv_block_tokens != 0) {
    return Status::Errorf("kv_skip_tokens {} is not whole blocks of {} within the prompt", r.kv_skip_tokens,
                          options_.kv_block_tokens);
  }
  if (r.kv_handoff == EngineRequest::KvHandoff::kImport && r.prompt.size() < 2) {
    return Status::Error("a KV import needs at least 2 prompt tokens (the last one is computed here)");
  }
  return ValidateSamplingParams(r.sampling, limits_.vocab_size);
}

StatusOr<Request*> Scheduler::Add(EngineRequest params, Clock::time_point now, uint64_t id) {
  if (num_waiting_requests() >= options_.max_waiting_requests) {
    return Status::WithCode(StatusCode::kResourceExhausted,
                            fmt::format("the engine's queue is full ({} requests waiting)", num_waiting_requests()));
  }
  auto request = std::make_unique<Request>();
  Request& r = *request;
  r.id = id != 0 ? id : next_request_id_++;
  TETRA_CHECK(!requests_.contains(r.id), "request id {} is in use", r.id);
  r.arrival_order = next_arrival_order_++;
  r.params = std::move(params);
  r.arrival_time = now;
  for (int i = 0; i < r.params.n; ++i) {
    auto seq = std::make_unique<Sequence>();
    seq->id = next_sequence_id_++;
    seq->request = &r;
    seq->sample_index = i;
    seq->state = i == 0 ? Sequence::State::kWaiting : Sequence::State::kForkPending;
    seq->tokens = r.params.prompt;
    seq->sampler = std::make_unique<SequenceSampler>(r.params.sampling, static_cast<uint64_t>(i), r.params.prompt);
    sequences_[seq->id] = seq.get();
    r.samples.push_back(std::move(seq));
  }
  Sequence* first = r.samples[0].get();
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), first, RunsBefore), first);
  ++num_unfinished_requests_;
  Request* raw = request.get();
  requests_[r.id] = std::move(request);
  return raw;
}

Sequence* Scheduler::FindSequence(uint64_t id) const {
  const auto it = sequences_.find(id);
  return it == sequences_.end() ? nullptr : it->second;
}

int Scheduler::num_running_requests() const {
  int count = 0;
  const Request* last = nullptr;
  for (const Sequence* seq : running_) {  // a request's samples run next to each other
    if (seq->request != last) ++count;
    last = seq->request;
  }
  return count + static_cast<int>(handing_off_.size());  // one sequence per handing-off request
}

int Scheduler::num_handing_off(Sequence::State state) const {
  return static_cast<int>(std::count_if(handing_off_.begin(), handing_off_.end(),
                                        [&](const Sequence* s) { return s->state == state; }));
}

int64_t Scheduler::num_prompt_tokens_pending() const {
  int64_t pending = 0;
  auto uncomputed = [](const Sequence* s) {
    return std::max<int64_t>(0, s->num_prompt_tokens() - s->num_computed);
  };
  for (const Sequence* s : waiting_) pending += s->sample_index == 0 ? uncomputed(s) : 0;
  for (const Sequence* s : running_) pending += uncomputed(s);
  return pending;
}

int Scheduler::num_waiting_requests() const {
  int count = 0;
  const Request* last = nullptr;
  for (const Sequence* seq : waiting_) {  // a request's samples wait next to each other
    if (seq->request == last) continue;
    last = seq->request;
    bool is_running = false;
    for (const auto& sample : seq->request->samples) is_running |= sample->state == Sequence::State::kRunning;
    count += !is_running;
  }
  return count;
}

bool Scheduler::CanSampleAgain(const Sequence& seq) const {
  const int64_t ahead = seq.num_generated() + seq.num_pending_samples;
  return ahead < seq.request->params.max_tokens &&
         static_cast<int64_t>(seq.tokens.size()) + seq.num_pending_samples < limits_.max_position;
}

Scheduler::Work Scheduler::WorkOf(const Sequence& seq, int64_t budget) const {
  Work work;
  const int64_t known = static_cast<int64_t>(seq.tokens.size());
  const bool exports = seq.request->params.kv_handoff == EngineRequest::KvHandoff::kExport;
  if (known > seq.num_computed) {
    work.count = std::min(known - seq.num_computed, budget);
    work.samples = !exports && seq.num_computed + work.count == known && CanSampleAgain(seq);
    // Without a sample there is nothing to gain from the last known token
    // yet, unless the KV itself is the product (an export).
    if (!exports && !work.samples && seq.num_computed + work.count == known) work.count = 0;
    if (work.count == 1 && work.samples && IsDecoding(seq) && Speculates(seq)) {
      const EngineRequest& params = seq.request->params;
      const int64_t k = std::min<int64_t>({options_.spec_max_tokens, budget - 1,
                                           params.max_tokens - seq.num_generated() - 1,
                                           limits_.max_position - known - 1});
      if (k > 0) {
        if (!seq.proposer) {
          seq.proposer = options_.new_proposer ? options_.new_proposer() : std::make_unique<speculative::SuffixProposer>();
        }
        seq.proposer->Extend(std::span<const int32_t>(seq.tokens).subspan(static_cast<size_t>(seq.proposer->size())));
        work.draft = seq.proposer->Propose(static_cast<int>(k)).tokens;
        work.count += static_cast<int64_t>(work.draft.size());
      }
    }
  } else if (options_.lookahead && !Speculates(seq) && seq.num_pending_samples == 1 && CanSampleAgain(seq) &&
             budget > 0) {
    work.count = 1;
    work.samples = true;
    work.is_placeholder = true;
  }
  return work;
}

void Scheduler::LimitChunk(int64_t limit, Work* work) {
  if (work->count <= 1 || work->is_placeholder || work->count <= limit) return;
  work->count = std::max<int64_t>(limit, 0);
  work->samples = false;  // a shorter chunk does not reach the end of what is known
}

bool Scheduler::Speculates(const Sequence& seq) const {
  if (options_.spec_max_tokens <= 0) return false;
  const EngineRequest& r = seq.request->params;
  const SamplingParams& s = r.sampling;
  return r.n == 1 && r.kv_handoff == EngineRequest::KvHandoff::kNone && s.temperature < kGreedyTemperature &&
         s.repetition_penalty == 1.0f && s.presence_penalty == 0.0f && s.frequency_penalty == 0.0f;
}

bool Scheduler::IsExport(const Sequence& seq) {
  return seq.request->params.kv_handoff == EngineRequest::KvHandoff::kExport;
}

bool Scheduler::IsDecoding(const Sequence& seq) {
  const int64_t uncomputed = static_cast<int64_t>(seq.tokens.size()) - seq.num_computed;
  return (seq.num_generated() > 0 || seq.num_pending_samples > 0) && uncomputed <= 1;
}

void Scheduler::Preempt(Sequence& seq) {
  TETRA_CHECK(!IsExport(seq), "an export was preempted");
  DropOpsInto(seq.kv.slot);
  kv_.Free(seq.kv);
  seq.num_computed = 0;
  seq.state = Sequence::State::kWaiting;
  running_.erase(std::find(running_.begin(), running_.end(), &seq));
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), &seq, RunsBefore), &seq);
  ++num_preemptions_;
}

bool Scheduler::ReserveOrPreempt(Sequence& seq, int64_t count) {
  for (;;) {
    const Status status = kv_.Reserve(seq.kv, seq.num_computed + count);
    if (status.ok()) return true;
    TETRA_CHECK(status.is_resource_exhausted(), "{}", status.message());
    // Exports are never victims: their KV may be on its way to a decode
    // instance (they hold their whole prompt's blocks from admission, so
    // they never need more either).
    const auto last = std::find_if(running_.rbegin(), running_.rend(),
                                   [&](const Sequence* s) { return s == &seq || !IsExport(*s); });
    TETRA_CHECK(last != running_.rend() && !IsExport(seq), "an export ran out of its reserved KV");
    Sequence* victim = *last;
    if (victim == &seq) {
      Preempt(seq);
      return false;
    }
    Preempt(*victim);
  }
}

int Scheduler::NumForkPending(const Request& request) const {
  int pending = 0;
  for (const auto& sample : request.samples) pending += sample->state == Sequence::State::kForkPending;
  return pending;
}

bool Scheduler::HasRoomToFork(const Request& request, int64_t prompt_tokens) const {
  const int pending = NumForkPending(request);
  const bool has_open_block = prompt_tokens % options_.kv_block_tokens != 0;
  return kv_.num_slots_free() >= pending && (!has_open_block || kv_.blocks().num_blocks_free() >= pending);
}

void Scheduler::ForkSamples(Request& request, StepPlan* plan) {
  Sequence& parent = *request.samples[0];
  const int row = static_cast<int>(plan->num_logit_rows()) - 1;  // the parent's, just added
  for (const auto& sample : request.samples) {
    Sequence& child = *sample;
    if (child.state != Sequence::State::kForkPending) continue;
    std::vector<KvSlotOp> ops;
    const Status status = kv_.Fork(parent.kv, &child.kv, &ops);
    TETRA_CHECK(status.ok(), "fork after checking room: {}", status.message());
    // The copy of the parent's open block waits until this step has written it.
    for (const KvSlotOp& op : ops) deferred_ops_.push_back({plan->step_id, op});
    child.tokens = parent.tokens;
    child.num_computed = parent.num_computed;
    child.state = Sequence::State::kRunning;
    child.planned_in_step = plan->step_id;
    // Right after its parent, so a request's samples stay together.
    running_.insert(std::find(running_.begin(), running_.end(), &parent) + child.sample_index, &child);
    // Its first token comes from the parent's last prompt logits, in this step.
    plan->samples.push_back({child.id, row, child.kv.slot, child.sampler.get(), /*is_fork=*/true});
    ++child.num_pending_samples;
    ++child.num_steps_in_flight;  // its sampler is read by this step
  }
}

void Scheduler::DropOpsInto(int slot) {
  std::erase_if(deferred_ops_, [slot](const DeferredOp& d) { return d.op.to_slot == slot; });
}

void Scheduler::AddToPlan(Sequence& seq, const Work& work, StepPlan* plan) {
  const int64_t start = seq.num_computed;
  kv_.Commit(seq.kv, {}, start + work.count);
  ForwardSequence f;
  f.first_token = static_cast<int64_t>(plan->tokens.size());
  f.num_tokens = work.count;
  f.start_position = start;
  f.slot = seq.kv.slot;
  f.logits = !work.samples ? LogitsRows::kNone : work.draft.empty() ? LogitsRows::kLast : LogitsRows::kAll;
  const int64_t known_count = work.count - static_cast<int64_t>(work.draft.size());
  if (work.is_placeholder) {
    plan->placeholders.push_back({static_cast<int64_t>(plan->tokens.size()), seq.kv.slot});
    plan->tokens.push_back(-1);
  } else {
    plan->tokens.insert(plan->tokens.end(), seq.tokens.begin() + start, seq.tokens.begin() + start + known_count);
    plan->tokens.insert(plan->tokens.end(), work.draft.begin(), work.draft.end());
  }
  const bool is_decode = work.is_placeholder || start >= seq.num_prompt_tokens();
  (is_decode ? plan->num_decode_tokens : plan->num_prefill_tokens) += work.count;
  plan->block_offsets.push_back(static_cast<int64_t>(plan->block_ids.size()));
  plan->block_ids.insert(plan->block_ids.end(), seq.kv.blocks.begin(), seq.kv.blocks.end());
  plan->sequences.push_back(f);
  plan->sequence_ids.push_back(seq.id);
  seq.num_computed += work.count;
  seq.planned_in_step = plan->step_id;
  ++seq.num_steps_in_flight;
  if (IsExport(seq)) PlanExportPieces(seq, plan);
  if (!work.samples) return;
  StepSample sample{seq.id, static_cast<int>(plan->num_logit_rows() - f.num_logit_rows()), seq.kv.slot,
                    seq.sampler.get()};
  sample.num_draft = static_cast<int>(work.draft.size());
  sample.draft_offset = static_cast<int64_t>(plan->draft_tokens.size());
  plan->draft_tokens.insert(plan->draft_tokens.end(), work.draft.begin(), work.draft.end());
  num_draft_tokens_ += sample.num_draft;
  plan->samples.push_back(sample);
  ++seq.num_pending_samples;
}

void Scheduler::PlanExportPieces(Sequence& seq, StepPlan* plan) {
  const int bt = options_.kv_block_tokens;
  const int64_t first_block = seq.request->params.kv_skip_tokens / bt;
  const int64_t total = static_cast<int64_t>(seq.tokens.size());
  // After this step: its full blocks, and the open block once the prompt is done.
  const bool open = seq.num_computed == total && total % bt != 0;
  const int64_t full_pieces = std::max<int64_t>(0, seq.num_computed / bt - first_block);
  const int64_t end_piece = full_pieces + (open ? 1 : 0);
  if (end_piece <= seq.kv_pieces_planned) return;
  StepPlan::KvExport e;
  e.request_id = seq.request->id;
  e.peer = &seq.request->params.kv_peer;
  e.first_piece = seq.kv_pieces_planned;
  e.end_piece = end_piece;
  e.blocks_offset = static_cast<int64_t>(plan->kv_export_blocks.size());
  e.open_slot = open ? seq.kv.slot : -1;
  for (int64_t p = e.first_piece; p < full_pieces; ++p) plan->kv_export_blocks.push_back(seq.kv.blocks[first_block + p]);
  plan->kv_exports.push_back(e);
  seq.kv_pieces_planned = end_piece;
}

int64_t Scheduler::TokensWithinCost(int64_t start, int64_t cost) const {
  const double k = options_.attention_cost_context;
  if (k <= 0 || cost <= 0) return cost;
  // count * (1 + (start + count / 2) / k) <= cost, solved for count.
  const double a = 1.0 + static_cast<double>(start) / k;
  const double count = k * (std::sqrt(a * a + 2.0 * static_cast<double>(cost) / k) - a);
  return std::clamp<int64_t>(static_cast<int64_t>(count), 1, cost);
}

int64_t Scheduler::CostOf(int64_t start, int64_t count) const {
  const double k = options_.attention_cost_context;
  if (k <= 0) return count;
  return static_cast<int64_t>(std::ceil(static_cast<double>(count) *
                                        (1.0 + (static_cast<double>(start) + 0.5 * static_cast<double>(count)) / k)));
}

int64_t Scheduler::TryPlan(Sequence& seq, int64_t budget, int64_t chunk_limit, StepPlan* plan) {
  Work work = WorkOf(seq, budget);
  LimitChunk(chunk_limit, &work);
  const bool chunk = !work.is_placeholder && !IsDecoding(seq);
  const int64_t start = seq.num_computed;
  // A prompt chunk's cost grows with the context it attends to.
  if (chunk) LimitChunk(TokensWithinCost(start, std::min(budget, chunk_limit)), &work);
  if (work.count == 0) return 0;
  Request& request = *seq.request;
  if (!ReserveOrPreempt(seq, work.count)) return -1;
  // The chunk that finishes a prompt with n > 1 forks the other samples;
  // without room for them yet, it computes all but the last prompt token.
  const bool forks = work.samples && NumForkPending(request) > 0;
  if (forks && !HasRoomToFork(request, seq.num_computed + work.count)) {
    work.count -= 1;
    work.samples = false;
    if (work.count == 0) return 0;
  }
  AddToPlan(seq, work, plan);
  if (forks && work.samples) ForkSamples(request, plan);
  return chunk ? std::min(CostOf(start, work.count), std::max(budget, work.count)) : work.count;
}

bool Scheduler::HeadMayBeAdmitted() const {
  if (waiting_.empty()) return false;
  const Sequence& head = *waiting_.front();
  const bool imports = head.request->params.kv_handoff == EngineRequest::KvHandoff::kImport && head.kv.blocks.empty();
  return !imports && head.num_steps_in_flight == 0 && kv_.num_slots_free() >= 1 + NumForkPending(*head.request);
}

bool Scheduler::Plan(StepPlan* plan, Clock::time_point now) {
  ReleaseDone();
  plan->Clear();
  plan->step_id = next_step_id_++;
  int64_t budget = options_.max_step_tokens;
  // Chunks beside decodes are held short: the step's time is every decoding
  // stream's inter-token gap.
  int64_t chunk_budget = budget;
  if (options_.max_prefill_tokens_with_decodes > 0 &&
      std::any_of(running_.begin(), running_.end(), [](const Sequence* s) { return IsDecoding(*s); })) {
    chunk_budget = options_.max_prefill_tokens_with_decodes;
  }
  // With several prompts to compute (running, or the waiting head about to
  // be admitted), a running prompt's chunk takes at most an even share of
  // the chunk budget: a short prompt is not held behind a long one's chunks
  // (its first token, or on a prefill instance its KV, comes a step later,
  // not after the long prompt).
  const int64_t prompts = std::count_if(running_.begin(), running_.end(),
                                        [](const Sequence* s) { return !IsDecoding(*s); }) +
                          (HeadMayBeAdmitted() ? 1 : 0);
  const int64_t share = prompts > 1 ? std::max<int64_t>(1, chunk_budget / prompts) : chunk_budget;
  // 1. The running set, in order; a sequence is planned at most once a step.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence& seq = *running_[i];
    if (seq.planned_in_step == plan->step_id) {
      ++i;
      continue;
    }
    const bool decode = IsDecoding(seq);
    const int64_t used = TryPlan(seq, budget, decode ? budget : std::min(chunk_budget, share), plan);
    if (used < 0) continue;  // seq itself was preempted: running_[i] is the next one
    budget -= used;
    if (!decode) chunk_budget -= used;
    ++i;
  }
  // 2. The waiting queue, head first, never skipping the head.
  while (!waiting_.empty() && budget > 0) {
    Sequence& seq = *waiting_.front();
    Request& request = *seq.request;
    if (seq.num_steps_in_flight > 0 || kv_.num_slots_free() < 1 + NumForkPending(request)) break;
    if (request.params.kv_handoff == EngineRequest::KvHandoff::kImport && seq.kv.blocks.empty()) {
      const ImportAdmission admission = TryReserveImport(seq);
      if (admission == ImportAdmission::kNoRoom) break;
      if (admission == ImportAdmission::kReserved) {
        if (!request.first_scheduled_time) request.first_scheduled_time = now;
        continue;  // takes no step budget: the KV arrives from elsewhere
      }
      // kNotNeeded: every position is cached here; it runs as any request.
    }
    if (seq.kv.blocks.empty()) {
      seq.num_computed = kv_.AttachCachedPrefix(seq.kv, seq.tokens);
      if (!request.first_scheduled_time) {
        request.cached_prompt_tokens = std::min<int64_t>(seq.num_computed, seq.num_prompt_tokens());
      }
    }
    Work work = WorkOf(seq, budget);
    LimitChunk(chunk_budget, &work);
    // Room for this chunk, and a block of headroom for every running
    // sequence's next step (when nothing runs, just the chunk).
    // An export reserves its whole prompt now (it is never preempted).
    const int64_t reserve_to = IsExport(seq) ? static_cast<int64_t>(seq.tokens.size()) : seq.num_computed + work.count;
    const int needed = kv_.BlocksToReserve(seq.kv, reserve_to);
    const int headroom = static_cast<int>(running_.size());
    if (work.count == 0 || needed + headroom > kv_.blocks().num_blocks_free()) {
      kv_.Free(seq.kv);  // the attached prefix goes back; it stays cached
      seq.num_computed = 0;
      break;
    }
    if (IsExport(seq)) {
      const Status reserved = kv_.Reserve(seq.kv, reserve_to);
      TETRA_CHECK(reserved.ok(), "reserving an export's prompt after checking room: {}", reserved.message());
    }
    waiting_.pop_front();
    seq.state = Sequence::State::kRunning;
    running_.insert(std::upper_bound(running_.begin(), running_.end(), &seq, RunsBefore), &seq);
    if (!request.first_scheduled_time) request.first_scheduled_time = now;
    const int64_t used = TryPlan(seq, budget, chunk_budget, plan);
    if (used < 0) break;  // cannot happen with the room checked, but never loop on it
    budget -= used;
    chunk_budget -= used;
  }
  if (plan->empty()) return false;  // slot ops stay queued for the next step that runs
  if (options_.shared_prefix_attention) GroupSharedPrefixes(plan);
  // Slot ops from forks planned in earlier steps run before this one.
  for (const DeferredOp& d : deferred_ops_) {
    if (d.after_step < plan->step_id) plan->kv_ops.push_back(d.op);
  }
  std::erase_if(deferred_ops_, [&](const DeferredOp& d) { return d.after_step < plan->step_id; });
  plan->Finalize();
  ++num_steps_in_flight_;
  return true;
}

void Scheduler::GroupSharedPrefixes(StepPlan* plan) const {
  const int bt = options_.kv_block_tokens;
  const size_t count = plan->sequences.size();
  auto decodes_alone = [&](size_t i) { return plan->sequences[i].num_tokens == 1; };
  for (size_t i = 0; i < count;) {
    const Request* request = FindSequence(plan->sequence_ids[i])->request;
    size_t end = i + 1;
    while (end < count && decodes_alone(i) && decodes_alone(end) &&
           FindSequence(plan->sequence_ids[end])->request == request) {
      ++end;
    }
    if (end - i >= 2) {
      // The blocks every member's table starts with, all before its new position.
      int64_t blocks = plan->sequences[i].start_position / bt;
      for (size_t j = i + 1; j < end; ++j) {
        blocks = std::min<int64_t>(blocks, plan->sequences[j].start_position / bt);
        int64_t same = 0;
        while (same < blocks && plan->block_ids[plan->block_offsets[j] + same] ==
                                    plan->block_ids[plan->block_offsets[i] + same]) {
          ++same;
        }
        blocks = same;
      }
      if (blocks > 0) {
        plan->shared_prefixes.push_back({static_cast<int>(i), static_cast<int>(end - i), blocks * bt});
      }
    }
    i = end;
  }
}

Scheduler::ImportAdmission Scheduler::TryReserveImport(Sequence& seq) {
  Request& request = *seq.request;
  const int64_t arriving = static_cast<int64_t>(seq.tokens.size()) - 1;  // every prompt token but the last
  const int64_t cached = kv_.AttachCachedPrefix(seq.kv, seq.tokens);     // whole blocks, at most `arriving`
  if (cached == arriving) {  // nothing to move: computed here like any request
    request.params.kv_handoff = EngineRequest::KvHandoff::kNone;
    kv_.Free(seq.kv);  // re-attached by the normal admission
    return ImportAdmission::kNotNeeded;
  }
  const int needed = kv_.BlocksToReserve(seq.kv, arriving);
  const int headroom = static_cast<int>(running_.size());
  if (needed + headroom > kv_.blocks().num_blocks_free() || !kv_.Reserve(seq.kv, arriving).ok()) {
    kv_.Free(seq.kv);
    return ImportAdmission::kNoRoom;
  }
  if (!request.first_scheduled_time) request.cached_prompt_tokens = cached;
  seq.num_computed = cached;
  waiting_.pop_front();
  seq.state = Sequence::State::kAwaitingKv;
  handing_off_.push_back(&seq);
  EmitHandoff(KvHandoffEvent::Kind::kReserved, seq, cached);
  return ImportAdmission::kReserved;
}

void Scheduler::EmitHandoff(KvHandoffEvent::Kind kind, const Sequence& seq, int64_t num_cached_tokens) {
  KvHandoffEvent event;
  event.kind = kind;
  event.request_id = seq.request->id;
  event.blocks = seq.kv.blocks;
  event.slot = seq.kv.slot;
  const int64_t known = static_cast<int64_t>(seq.tokens.size());
  event.num_tokens = kind == KvHandoffEvent::Kind::kReserved ? known - 1 : known;
  event.tokens.assign(seq.tokens.begin(), seq.tokens.begin() + event.num_tokens);
  event.num_cached_tokens = num_cached_tokens;
  kv_events_.push_back(std::move(event));
}

std::vector<KvHandoffEvent> Scheduler::TakeKvHandoffEvents() {
  std::vector<KvHandoffEvent> events;
  events.swap(kv_events_);
  return events;
}

bool Scheduler::IsHandingOffKv(uint64_t request_id) const {
  const auto it = requests_.find(request_id);
  if (it == requests_.end()) return false;
  const Sequence::State state = it->second->samples[0]->state;
  return state == Sequence::State::kAwaitingKv || state == Sequence::State::kHoldingKv;
}

void Scheduler::KvArrived(uint64_t request_id, const Status& status) {
  const auto it = requests_.find(request_id);
  if (it == requests_.end()) return;
  Request& request = *it->second;
  Sequence& seq = *request.samples[0];
  if (seq.state != Sequence::State::kAwaitingKv) return;
  handing_off_.erase(std::find(handing_off_.begin(), handing_off_.end(), &seq));
  if (status.ok()) {
    const int64_t arrived = static_cast<int64_t>(seq.tokens.size()) - 1;
    kv_.Commit(seq.kv, seq.tokens, arrived);  // full blocks join the prefix cache
    seq.num_computed = arrived;
    seq.state = Sequence::State::kRunning;
    running_.insert(std::upper_bound(running_.begin(), running_.end(), &seq, RunsBefore), &seq);
  } else {
    // Prefilled here instead, from the front of its place in the queue.
    kv_.Free(seq.kv);
    seq.num_computed = 0;
    request.params.kv_handoff = EngineRequest::KvHandoff::kNone;
    seq.state = Sequence::State::kWaiting;
    waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), &seq, RunsBefore), &seq);
  }
}

void Scheduler::ReleaseHeldKv(uint64_t request_id, const Status& status, std::vector<SequenceEvent>* events) {
  const auto it = requests_.find(request_id);
  if (it == requests_.end()) return;
  Request& request = *it->second;
  Sequence& seq = *request.samples[0];
  if (seq.state != Sequence::State::kHoldingKv) return;
  if (!status.ok()) request.error = status;
  FinishSequence(seq, status.ok() ? FinishReason::kLength : FinishReason::kError, std::nullopt, events);
}

void Scheduler::FinishSequence(Sequence& seq, FinishReason reason, std::optional<int32_t> stop_token,
                               std::vector<SequenceEvent>* events, bool has_token, SampleResult sample) {
  TETRA_CHECK(!seq.is_finished());
  Request& request = *seq.request;
  if (seq.state == Sequence::State::kRunning) running_.erase(std::find(running_.begin(), running_.end(), &seq));
  if (seq.state == Sequence::State::kAwaitingKv || seq.state == Sequence::State::kHoldingKv) {
    handing_off_.erase(std::find(handing_off_.begin(), handing_off_.end(), &seq));
  }
  if (seq.state == Sequence::State::kWaiting) {
    if (const auto it = std::find(waiting_.begin(), waiting_.end(), &seq); it != waiting_.end()) waiting_.erase(it);
  }
  if (seq.kv.holds_kv()) DropOpsInto(seq.kv.slot);
  if (IsExport(seq) && seq.kv_pieces_planned > 0) {
    seq.kv_free_deferred = true;  // sends may read its blocks: freed by ReleaseDone
  } else {
    kv_.Free(seq.kv);
  }
  seq.state = Sequence::State::kFinished;
  seq.finish = reason;
  ++request.num_finished_samples;
  SequenceEvent event;
  event.request_id = request.id;
  event.sample_index = seq.sample_index;
  event.has_token = has_token;
  event.sample = std::move(sample);
  event.finish = reason;
  event.stop_token = stop_token;
  event.scheduled_time = request.first_scheduled_time;
  if (request.is_finished()) {
    event.request_finished = true;
    event.cached_prompt_tokens = request.cached_prompt_tokens;
    event.error = request.error;
    --num_unfinished_requests_;
    released_.push_back(&request);
  }
  events->push_back(std::move(event));
}

void Scheduler::Abort(uint64_t request_id, std::vector<SequenceEvent>* events) {
  const auto it = requests_.find(request_id);
  if (it == requests_.end() || it->second->is_finished()) return;
  for (const auto& sample : it->second->samples) {
    if (!sample->is_finished()) FinishSequence(*sample, FinishReason::kAbort, std::nullopt, events);
  }
}

void Scheduler::Finish(uint64_t request_id, int sample_index, FinishReason reason, std::vector<SequenceEvent>* events) {
  const auto it = requests_.find(request_id);
  if (it == requests_.end() || sample_index < 0 || sample_index >= static_cast<int>(it->second->samples.size())) return;
  Sequence& seq = *it->second->samples[sample_index];
  if (!seq.is_finished()) FinishSequence(seq, reason, std::nullopt, events);
}

void Scheduler::FinishAll(FinishReason reason, const Status& error, std::vector<SequenceEvent>* events) {
  for (auto& [id, request] : requests_) {
    if (request->is_finished()) continue;
    if (!error.ok()) request->error = error;
    for (const auto& sample : request->samples) {
      if (!sample->is_finished()) FinishSequence(*sample, reason, std::nullopt, events);
    }
  }
}

void Scheduler::Complete(const StepPlan& plan, const StepResult& result, std::vector<SequenceEvent>* events) {
  TETRA_CHECK(num_steps_in_flight_ > 0, "Complete without a step in flight");
  --num_steps_in_flight_;
  TETRA_CHECK(!result.status.ok() || result.sampled.size() == plan.samples.size(), "{} samples for {} planned",
              result.sampled.size(), plan.samples.size());
  std::vector<Sequence*> to_recompute;
  for (size_t i = 0; i < plan.samples.size(); ++i) {
    Sequence* seq = FindSequence(plan.samples[i].sequence_id);
    TETRA_CHECK(seq != nullptr, "a sample for a released sequence");
    --seq->num_pending_samples;
    if (seq->is_finished()) continue;
    Request& request = *seq->request;
    if (!result.status.ok()) {
      request.error = result.status;
      for (const auto& sample : request.samples) {
        if (!sample->is_finished()) FinishSequence(*sample, FinishReason::kError, std::nullopt, events);
      }
      continue;
    }
    // One token, or a verified guess's run of them, each as if decoded alone.
    const SampledToken& sampled = result.sampled[i];
    for (size_t j = 0; j <= sampled.more.size() && !seq->is_finished(); ++j) {
      if (!ApplySample(*seq, j == 0 ? sampled.sample : sampled.more[j - 1], events)) break;
    }
    const int num_draft = plan.samples[i].num_draft;
    if (num_draft == 0 || seq->is_finished()) continue;
    num_accepted_tokens_ += static_cast<int64_t>(sampled.more.size());
    // The rejected guesses' KV goes: every known token but the last is computed.
    const int64_t valid = static_cast<int64_t>(seq->tokens.size()) - 1;
    if (seq->num_computed > valid) {
      std::vector<KvSlotOp> ops;
      if (kv_.Truncate(seq->kv, valid, &ops).ok()) {
        for (const KvSlotOp& op : ops) deferred_ops_.push_back({plan.step_id, op});
        seq->num_computed = valid;
      } else {
        to_recompute.push_back(seq);  // no private block to keep its end in: recomputed
      }
    }
  }
  for (uint64_t id : plan.sequence_ids) {
    Sequence* seq = FindSequence(id);
    TETRA_CHECK(seq != nullptr, "a planned sequence was released");
    --seq->num_steps_in_flight;
    if (seq->kv.holds_kv()) kv_.PublishKnown(seq->kv, seq->tokens);
    // An export whose prompt is computed holds its KV for the transfer; one
    // whose step failed ends (its KV may be wrong).
    if (seq->request->params.kv_handoff != EngineRequest::KvHandoff::kExport ||
        seq->state != Sequence::State::kRunning) {
      continue;
    }
    if (!result.status.ok()) {
      seq->request->error = result.status;
      FinishSequence(*seq, FinishReason::kError, std::nullopt, events);
    } else if (seq->num_steps_in_flight == 0 && seq->num_computed == static_cast<int64_t>(seq->tokens.size())) {
      running_.erase(std::find(running_.begin(), running_.end(), seq));
      seq->state = Sequence::State::kHoldingKv;
      handing_off_.push_back(seq);
      EmitHandoff(KvHandoffEvent::Kind::kReady, *seq, 0);
    }
  }
  for (const StepSample& s : plan.samples) {  // forked samples: the step read their samplers
    if (s.is_fork) --FindSequence(s.sequence_id)->num_steps_in_flight;
  }
  for (Sequence* seq : to_recompute) {
    if (seq->state == Sequence::State::kRunning && seq->num_steps_in_flight == 0) Preempt(*seq);
  }
}

bool Scheduler::ApplySample(Sequence& seq, const SampleResult& sample, std::vector<SequenceEvent>* events) {
  Request& request = *seq.request;
  if (sample.logits_were_all_invalid) {
    request.error = Status::WithCode(StatusCode::kInternal, "the model produced no valid logits (NaN or -inf)");
    for (const auto& s : request.samples) {
      if (!s->is_finished()) FinishSequence(*s, FinishReason::kError, std::nullopt, events);
    }
    return false;
  }
  const int32_t token = sample.token;
  const EngineRequest& params = request.params;
  const bool is_end = !params.ignore_eos && std::find(limits_.end_token_ids.begin(), limits_.end_token_ids.end(),
                                                      token) != limits_.end_token_ids.end();
  const bool is_stop_id =
      std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(), token) != params.stop_token_ids.end();
  if (is_end || is_stop_id) {
    FinishSequence(seq, FinishReason::kStop, token, events);
    return false;
  }
  seq.tokens.push_back(token);
  if (seq.num_generated() >= params.max_tokens || static_cast<int64_t>(seq.tokens.size()) >= limits_.max_position) {
    FinishSequence(seq, FinishReason::kLength, std::nullopt, events, true, sample);
    return false;
  }
  SequenceEvent event;
  event.request_id = request.id;
  event.sample_index = seq.sample_index;
  event.has_token = true;
  event.sample = sample;
  event.scheduled_time = request.first_scheduled_time;
  events->push_back(std::move(event));
  return true;
}

void Scheduler::ReleaseDone() {
  for (size_t i = 0; i < released_.size();) {
    Request* request = released_[i];
    bool in_flight = false;
    for (const auto& sample : request->samples) in_flight |= sample->num_steps_in_flight > 0;
    if (in_flight) {
      ++i;
      continue;
    }
    for (const auto& sample : request->samples) {
      if (sample->kv_free_deferred) {
        if (on_export_released_) on_export_released_(request->id);
        kv_.Free(sample->kv);
      }
      sequences_.erase(sample->id);
    }
    requests_.erase(request->id);
    released_[i] = released_.back();
    released_.pop_back();
  }
}

}  // namespace tetra
