// The model runner of one process: executes StepPlans on a loaded model with
// its own KV storage, workspace and thread pool. A step: run the plan's slot
// ops, fill its placeholders with the last tokens sampled for their slots,
// one forward pass over every sequence, then sample each planned token from
// its logits row. Steps run one at a time, in the order given (the thread
// that calls Run; the engine's runner thread).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "base/thread_pool.h"
#include "engine/step.h"
#include "model/model.h"

namespace tetra {

class LocalModelRunner : public ModelRunner {
 public:
  LocalModelRunner(const Model& model, int num_blocks, int num_slots, ThreadPool& pool);

  void Run(StepPlan& plan, StepResult* result) override;

  const KvStorage& storage() const { return *storage_; }
  // Runs on the runner thread as each layer's KV of a step with kv_exports
  // is written (ForwardBatch::on_layer_written). Set before the first step.
  void set_on_layer_written(std::function<void(const StepPlan&, int layer)> hook) {
    on_layer_written_ = std::move(hook);
  }
  const Workspace& workspace() const { return *workspace_; }

 private:
  Status RunForward(StepPlan& plan);

  const Model& model_;
  ThreadPool& pool_;
  std::unique_ptr<KvStorage> storage_;
  std::unique_ptr<Workspace> workspace_;
  std::vector<int32_t> last_sampled_;     // [num_slots]
  std::vector<float> logits_;             // [rows, vocab]
  std::vector<SamplerScratch> scratch_;   // one per parallel sampling chunk
  std::function<void(const StepPlan&, int)> on_layer_written_;
};

}  // namespace tetra
