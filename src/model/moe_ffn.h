// The sparse mixture-of-experts FFN of one layer:
//   router (f32) -> softmax -> top-k -> tokens grouped by expert ->
//   gate+up for every active expert -> SiLU(gate)*up -> down -> weighted sum.
// Each phase is ONE parallel loop over (expert x row tile) work items taken
// from a shared counter, so uneven expert loads keep every thread busy and
// there is no barrier per expert; an expert's weight tile is read once for
// all of its tokens. Scratch buffers are members, reused from step to step.
// Engine thread only.
#pragma once

#include <cstdint>
#include <vector>

#include "base/thread_pool.h"
#include "model/linear.h"
#include "tensor/matrix_view.h"

namespace tetra {

struct ExpertWeights {  // SwiGLU: down(silu(gate x) * up x)
  Linear gate, up, down;  // [inter, hidden], [inter, hidden], [hidden, inter]
};

class MoeFfn {
 public:
  MoeFfn() = default;
  MoeFfn(MatrixView router, std::vector<ExpertWeights> experts, int experts_per_token, bool norm_topk_prob);

  // x: [n, hidden] -> out: [n, hidden] (overwritten).
  void Forward(const float* x, int64_t n, float* out, ThreadPool& pool);

  int num_experts() const { return static_cast<int>(experts_.size()); }
  // Tokens routed to each expert since load (for balancing and metrics).
  const std::vector<int64_t>& tokens_per_expert() const { return tokens_per_expert_; }

 private:
  void Route(const float* x, int64_t n, ThreadPool& pool);

  MatrixView router_;  // [num_experts, hidden], f32 compute
  std::vector<ExpertWeights> experts_;
  int experts_per_token_ = 0;
  bool norm_topk_prob_ = false;
  std::vector<int64_t> tokens_per_expert_;

  // Scratch, sized on demand and kept.
  std::vector<float> router_logits_;        // [n, num_experts]
  std::vector<int64_t> slot_begin_;         // [num_experts + 1] slots of each expert
  std::vector<int32_t> slot_token_;         // [n * k] token of each slot
  std::vector<float> slot_weight_;          // [n * k] routing weight of each slot
  std::vector<int32_t> choices_;            // [n * k] chosen expert per (token, j)
  std::vector<float> choice_weights_;       // [n * k]
  std::vector<int32_t> order_;              // [num_experts] sort scratch
  std::vector<int64_t> fill_;               // [num_experts] counting-sort cursors
  std::vector<int32_t> active_experts_;     // experts with at least one token
  std::vector<float> gathered_;             // [n * k, hidden] inputs in slot order
  std::vector<float> gate_;                 // [n * k, inter]
  std::vector<float> up_;                   // [n * k, inter]
  std::vector<float> down_;                 // [n * k, hidden]
  // All slots' activations quantized at once (slot order), and per expert a
  // view of its rows: no buffer per expert, so a step allocates nothing once
  // the step size has been seen, whichever experts it routes to.
  LinearInput all_inputs_;                  // gathered_ rows
  LinearInput all_hidden_inputs_;           // gate_ rows
  std::vector<LinearInput> inputs_;         // per expert: its slots of all_inputs_
  std::vector<LinearInput> hidden_inputs_;  // per expert: its slots of all_hidden_inputs_
  std::vector<std::pair<int32_t, int64_t>> items_;  // (expert, first row) work items
};

}  // namespace tetra
