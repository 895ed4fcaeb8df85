// The sparse mixture-of-experts FFN of one layer:
//   router (f32) -> softmax -> top-k -> tokens grouped by expert ->
//   gate+up for every active expert -> SiLU(gate)*up -> down -> weighted sum.
// Each phase is ONE parallel loop over (expert x row tile) work items taken
// from a shared counter, so uneven expert loads keep every thread busy and
// there is no barrier per expert; an expert's weight tile is read once for
// all of its tokens. Immutable after construction; step scratch is the
// caller's (MoeScratch).
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

// Step scratch of MoeFfn::Forward, sized on demand and kept by the caller
// (one per runner, shared by the layers, which run one after another).
struct MoeScratch {
  std::vector<float> router_logits;        // [n, num_experts]
  std::vector<int64_t> slot_begin;         // [num_experts + 1] slots of each expert
  std::vector<int32_t> slot_token;         // [n * k] token of each slot
  std::vector<float> slot_weight;          // [n * k] routing weight of each slot
  std::vector<int32_t> choices;            // [n * k] chosen expert per (token, j)
  std::vector<float> choice_weights;       // [n * k]
  std::vector<int32_t> order;              // [num_experts] sort scratch
  std::vector<int64_t> fill;               // [num_experts] counting-sort cursors
  std::vector<int32_t> active_experts;     // experts with at least one token
  std::vector<float> gathered;             // [n * k, hidden] inputs in slot order
  std::vector<float> gate;                 // [n * k, inter]
  std::vector<float> up;                   // [n * k, inter]
  std::vector<float> down;                 // [n * k, hidden]
  // All slots' activations quantized at once (slot order), and per expert a
  // view of its rows: no buffer per expert, so a step allocates nothing once
  // the step size has been seen, whichever experts it routes to.
  LinearInput all_inputs;                  // gathered rows
  LinearInput all_hidden_inputs;           // gate rows
  std::vector<LinearInput> inputs;         // per expert: its slots of all_inputs
  std::vector<LinearInput> hidden_inputs;  // per expert: its slots of all_hidden_inputs
  std::vector<std::pair<int32_t, int64_t>> items;  // (expert, first row) work items
};

class MoeFfn {
 public:
  MoeFfn() = default;
  MoeFfn(MatrixView router, std::vector<ExpertWeights> experts, int experts_per_token, bool norm_topk_prob);

  // x: [n, hidden] -> out: [n, hidden] (overwritten). Adds the tokens routed
  // to each expert to tokens_per_expert[num_experts].
  void Forward(const float* x, int64_t n, float* out, MoeScratch& scratch, int64_t* tokens_per_expert,
               ThreadPool& pool) const;

  int num_experts() const { return static_cast<int>(experts_.size()); }

 private:
  void Route(const float* x, int64_t n, MoeScratch& scratch, int64_t* tokens_per_expert, ThreadPool& pool) const;

  MatrixView router_;  // [num_experts, hidden], f32 compute
  std::vector<ExpertWeights> experts_;
  int experts_per_token_ = 0;
  bool norm_topk_prob_ = false;
};

}  // namespace tetra
