#include "engine/model_runner.h"

#include <algorithm>
#include <chrono>
#include <exception>

#include "base/check.h"

namespace tetra {

LocalModelRunner::LocalModelRunner(const Model& model, int num_blocks, int num_slots, ThreadPool& pool)
    : model_(model),
      pool_(pool),
      storage_(NewKvStorage(model, num_blocks, num_slots)),
      workspace_(model.arch->NewWorkspace()),
      last_sampled_(num_slots, -1),
      scratch_(pool.num_threads()) {}

Status LocalModelRunner::RunForward(StepPlan& plan) {
  for (const KvSlotOp& op : plan.kv_ops) storage_->Apply(op);
  for (const StepPlan::Placeholder& p : plan.placeholders) {
    TETRA_CHECK(p.slot >= 0 && p.slot < static_cast<int>(last_sampled_.size()), "placeholder of slot {}", p.slot);
    // Nothing sampled only after a failed step, whose requests are ended: any
    // valid token does, its result is dropped.
    plan.tokens[p.index] = std::max(0, last_sampled_[p.slot]);
  }
  const int64_t vocab = model_.config().vocab_size;
  logits_.resize(static_cast<size_t>(plan.num_logit_rows() * vocab));
  ForwardBatch batch = plan.batch(logits_);
  if (on_layer_written_ && !plan.kv_exports.empty()) {
    batch.on_layer_written = [&](int layer) { on_layer_written_(plan, layer); };
  }
  return model_.arch->Forward(batch, *storage_, *workspace_, pool_);
}

void LocalModelRunner::Run(StepPlan& plan, StepResult* result) {
  result->Clear();
  const auto start = std::chrono::steady_clock::now();
  // A kernel that throws (out of memory, a bug caught as an exception) fails
  // the step's requests, not the process.
  try {
    result->status = RunForward(plan);
  } catch (const std::exception& e) {
    result->status = Status::WithCode(StatusCode::kInternal, fmt::format("forward pass failed: {}", e.what()));
  }
  if (result->status.ok()) {
    const int64_t vocab = model_.config().vocab_size;
    const int64_t num_samples = static_cast<int64_t>(plan.samples.size());
    result->sampled.resize(plan.samples.size());
    // Each chunk of samples has a scratch of its own.
    const int64_t chunks = std::min<int64_t>(num_samples, static_cast<int64_t>(scratch_.size()));
    const int64_t grain = chunks > 0 ? (num_samples + chunks - 1) / chunks : 1;
    pool_.ParallelFor(num_samples, grain, [&](int64_t begin, int64_t end) {
      SamplerScratch& scratch = scratch_[begin / grain];
      for (int64_t i = begin; i < end; ++i) {
        const StepSample& s = plan.samples[i];
        SampledToken& out = result->sampled[i];
        out.sequence_id = s.sequence_id;
        auto sample_row = [&](int row) {
          return s.sampler->Sample(&logits_[static_cast<size_t>(s.logits_row + row) * vocab], vocab, scratch);
        };
        if (s.num_draft > 0) {
          VerifyGuess(std::span<const int32_t>(plan.draft_tokens).subspan(s.draft_offset, s.num_draft), sample_row, &out);
        } else {
          out.more.clear();
          out.sample = sample_row(0);
        }
      }
    });
    for (size_t i = 0; i < plan.samples.size(); ++i) {
      const SampledToken& out = result->sampled[i];
      last_sampled_[plan.samples[i].slot] = out.more.empty() ? out.sample.token : out.more.back().token;
    }
  }
  result->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace tetra
