#include "model/moe_ffn.h"

#include <algorithm>
#include <numeric>

#include "kernels/reference/matmul.h"
#include "kernels/reference/ops.h"

namespace tetra {

namespace {
constexpr int64_t kRowsPerItem = 64;  // four 16-row weight tiles per work item
}  // namespace

MoeFfn::MoeFfn(MatrixView router, std::vector<ExpertWeights> experts, int experts_per_token,
               bool norm_topk_prob)
    : router_(router),
      experts_(std::move(experts)),
      experts_per_token_(experts_per_token),
      norm_topk_prob_(norm_topk_prob) {}

void MoeFfn::Route(const float* x, int64_t n, MoeScratch& scratch, int64_t* tokens_per_expert,
                   ThreadPool& pool) const {
  const int num_experts = this->num_experts();
  const int k = experts_per_token_;
  scratch.router_logits.resize(static_cast<size_t>(n * num_experts));
  MatMul(router_, x, n, scratch.router_logits.data(), pool);

  // Top-k per token (softmax, then the k largest; ties to the lower index).
  scratch.choices.resize(static_cast<size_t>(n * k));
  scratch.choice_weights.resize(static_cast<size_t>(n * k));
  scratch.order.resize(num_experts);
  for (int64_t t = 0; t < n; ++t) {
    float* probs = &scratch.router_logits[t * num_experts];
    Softmax(probs, num_experts);
    std::iota(scratch.order.begin(), scratch.order.end(), 0);
    std::partial_sort(scratch.order.begin(), scratch.order.begin() + k, scratch.order.end(),
                      [&](int a, int b) { return probs[a] > probs[b] || (probs[a] == probs[b] && a < b); });
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum += probs[scratch.order[j]];
    for (int j = 0; j < k; ++j) {
      scratch.choices[t * k + j] = scratch.order[j];
      scratch.choice_weights[t * k + j] = norm_topk_prob_ ? probs[scratch.order[j]] / sum : probs[scratch.order[j]];
    }
  }
  // Counting sort of the n*k (token, expert) pairs into per-expert slots.
  scratch.slot_begin.assign(static_cast<size_t>(num_experts + 1), 0);
  for (int64_t i = 0; i < n * k; ++i) ++scratch.slot_begin[scratch.choices[i] + 1];
  for (int e = 0; e < num_experts; ++e) scratch.slot_begin[e + 1] += scratch.slot_begin[e];
  scratch.fill.assign(scratch.slot_begin.begin(), scratch.slot_begin.end() - 1);
  scratch.slot_token.resize(static_cast<size_t>(n * k));
  scratch.slot_weight.resize(static_cast<size_t>(n * k));
  for (int64_t i = 0; i < n * k; ++i) {
    const int64_t slot = scratch.fill[scratch.choices[i]]++;
    scratch.slot_token[slot] = static_cast<int32_t>(i / k);
    scratch.slot_weight[slot] = scratch.choice_weights[i];
  }
  scratch.active_experts.clear();
  for (int e = 0; e < num_experts; ++e) {
    const int64_t count = scratch.slot_begin[e + 1] - scratch.slot_begin[e];
    tokens_per_expert[e] += count;
    if (count > 0) scratch.active_experts.push_back(e);
  }
}

void MoeFfn::Forward(const float* x, int64_t n, float* out, MoeScratch& scratch, int64_t* tokens_per_expert,
                     ThreadPool& pool) const {
  const int64_t hidden = router_.cols;
  const int64_t inter = experts_[0].gate.rows();
  const int64_t num_slots = n * experts_per_token_;
  if (n == 0) return;
  Route(x, n, scratch, tokens_per_expert, pool);
  scratch.inputs.resize(experts_.size());
  scratch.hidden_inputs.resize(experts_.size());

  scratch.gathered.resize(static_cast<size_t>(num_slots * hidden));
  for (int64_t s = 0; s < num_slots; ++s) {
    std::copy_n(x + static_cast<int64_t>(scratch.slot_token[s]) * hidden, hidden, &scratch.gathered[s * hidden]);
  }
  scratch.gate.resize(static_cast<size_t>(num_slots * inter));
  scratch.up.resize(static_cast<size_t>(num_slots * inter));
  scratch.down.resize(static_cast<size_t>(num_slots * hidden));

  // Runs fn(expert, row_begin, row_end) over every active expert's rows in
  // chunks of kRowsPerItem, all experts in one parallel loop.
  auto for_each_item = [&](int64_t rows, const auto& fn) {
    scratch.items.clear();
    for (int32_t e : scratch.active_experts) {
      for (int64_t r = 0; r < rows; r += kRowsPerItem) scratch.items.emplace_back(e, r);
    }
    pool.ParallelFor(static_cast<int64_t>(scratch.items.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const auto [e, r] = scratch.items[i];
        fn(e, r, std::min(rows, r + kRowsPerItem));
      }
    });
  };

  // Phase 1: prepare (quantize) the gathered tokens once, shared by every
  // expert's gate and up projections; each expert reads its slots' rows.
  // (Every expert's layers take the same width and format.)
  const Linear& any_gate = experts_[scratch.active_experts[0]].gate;
  any_gate.Prepare(scratch.gathered.data(), num_slots, &scratch.all_inputs, pool);
  for (int32_t e : scratch.active_experts) {
    any_gate.Slice(scratch.all_inputs, scratch.slot_begin[e], scratch.slot_begin[e + 1] - scratch.slot_begin[e], &scratch.inputs[e]);
  }
  // Phase 2: gate and up rows of every expert, fused with SiLU(gate) * up.
  for_each_item(inter, [&](int e, int64_t row_begin, int64_t row_end) {
    const int64_t first = scratch.slot_begin[e];
    const int64_t m = scratch.slot_begin[e + 1] - first;
    float* gate = &scratch.gate[first * inter];
    float* up = &scratch.up[first * inter];
    experts_[e].gate.ApplyRows(scratch.inputs[e], row_begin, row_end, gate, inter);
    experts_[e].up.ApplyRows(scratch.inputs[e], row_begin, row_end, up, inter);
    for (int64_t t = 0; t < m; ++t) {
      SiluMul(gate + t * inter + row_begin, up + t * inter + row_begin, row_end - row_begin,
              gate + t * inter + row_begin);
    }
  });
  // Phase 3: prepare the hidden activations, then the down projections.
  const Linear& any_down = experts_[scratch.active_experts[0]].down;
  any_down.Prepare(scratch.gate.data(), num_slots, &scratch.all_hidden_inputs, pool);
  for (int32_t e : scratch.active_experts) {
    any_down.Slice(scratch.all_hidden_inputs, scratch.slot_begin[e], scratch.slot_begin[e + 1] - scratch.slot_begin[e], &scratch.hidden_inputs[e]);
  }
  for_each_item(hidden, [&](int e, int64_t row_begin, int64_t row_end) {
    experts_[e].down.ApplyRows(scratch.hidden_inputs[e], row_begin, row_end, &scratch.down[scratch.slot_begin[e] * hidden], hidden);
  });
  // Weighted combine, in slot order (the same order for every run).
  std::fill(out, out + n * hidden, 0.0f);
  for (int64_t s = 0; s < num_slots; ++s) {
    float* dst = out + static_cast<int64_t>(scratch.slot_token[s]) * hidden;
    const float* src = &scratch.down[s * hidden];
    const float w = scratch.slot_weight[s];
    for (int64_t i = 0; i < hidden; ++i) dst[i] += w * src[i];
  }
}

}  // namespace tetra
