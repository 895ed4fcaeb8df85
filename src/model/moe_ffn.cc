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
      norm_topk_prob_(norm_topk_prob),
      tokens_per_expert_(experts_.size(), 0),
      inputs_(experts_.size()),
      hidden_inputs_(experts_.size()) {}

void MoeFfn::Route(const float* x, int64_t n, ThreadPool& pool) {
  const int num_experts = this->num_experts();
  const int k = experts_per_token_;
  router_logits_.resize(static_cast<size_t>(n * num_experts));
  MatMul(router_, x, n, router_logits_.data(), pool);

  // Top-k per token (softmax, then the k largest; ties to the lower index).
  choices_.resize(static_cast<size_t>(n * k));
  choice_weights_.resize(static_cast<size_t>(n * k));
  order_.resize(num_experts);
  for (int64_t t = 0; t < n; ++t) {
    float* probs = &router_logits_[t * num_experts];
    Softmax(probs, num_experts);
    std::iota(order_.begin(), order_.end(), 0);
    std::partial_sort(order_.begin(), order_.begin() + k, order_.end(),
                      [&](int a, int b) { return probs[a] > probs[b] || (probs[a] == probs[b] && a < b); });
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum += probs[order_[j]];
    for (int j = 0; j < k; ++j) {
      choices_[t * k + j] = order_[j];
      choice_weights_[t * k + j] = norm_topk_prob_ ? probs[order_[j]] / sum : probs[order_[j]];
    }
  }
  // Counting sort of the n*k (token, expert) pairs into per-expert slots.
  slot_begin_.assign(static_cast<size_t>(num_experts + 1), 0);
  for (int64_t i = 0; i < n * k; ++i) ++slot_begin_[choices_[i] + 1];
  for (int e = 0; e < num_experts; ++e) slot_begin_[e + 1] += slot_begin_[e];
  fill_.assign(slot_begin_.begin(), slot_begin_.end() - 1);
  slot_token_.resize(static_cast<size_t>(n * k));
  slot_weight_.resize(static_cast<size_t>(n * k));
  for (int64_t i = 0; i < n * k; ++i) {
    const int64_t slot = fill_[choices_[i]]++;
    slot_token_[slot] = static_cast<int32_t>(i / k);
    slot_weight_[slot] = choice_weights_[i];
  }
  active_experts_.clear();
  for (int e = 0; e < num_experts; ++e) {
    const int64_t count = slot_begin_[e + 1] - slot_begin_[e];
    tokens_per_expert_[e] += count;
    if (count > 0) active_experts_.push_back(e);
  }
}

void MoeFfn::Forward(const float* x, int64_t n, float* out, ThreadPool& pool) {
  const int64_t hidden = router_.cols;
  const int64_t inter = experts_[0].gate.rows();
  const int64_t num_slots = n * experts_per_token_;
  if (n == 0) return;
  Route(x, n, pool);

  gathered_.resize(static_cast<size_t>(num_slots * hidden));
  for (int64_t s = 0; s < num_slots; ++s) {
    std::copy_n(x + static_cast<int64_t>(slot_token_[s]) * hidden, hidden, &gathered_[s * hidden]);
  }
  gate_.resize(static_cast<size_t>(num_slots * inter));
  up_.resize(static_cast<size_t>(num_slots * inter));
  down_.resize(static_cast<size_t>(num_slots * hidden));

  // Runs fn(expert, row_begin, row_end) over every active expert's rows in
  // chunks of kRowsPerItem, all experts in one parallel loop.
  auto for_each_item = [&](int64_t rows, const auto& fn) {
    items_.clear();
    for (int32_t e : active_experts_) {
      for (int64_t r = 0; r < rows; r += kRowsPerItem) items_.emplace_back(e, r);
    }
    pool.ParallelFor(static_cast<int64_t>(items_.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const auto [e, r] = items_[i];
        fn(e, r, std::min(rows, r + kRowsPerItem));
      }
    });
  };

  // Phase 1: prepare (quantize) the gathered tokens once, shared by every
  // expert's gate and up projections; each expert reads its slots' rows.
  // (Every expert's layers take the same width and format.)
  const Linear& any_gate = experts_[active_experts_[0]].gate;
  any_gate.Prepare(gathered_.data(), num_slots, &all_inputs_, pool);
  for (int32_t e : active_experts_) {
    any_gate.Slice(all_inputs_, slot_begin_[e], slot_begin_[e + 1] - slot_begin_[e], &inputs_[e]);
  }
  // Phase 2: gate and up rows of every expert, fused with SiLU(gate) * up.
  for_each_item(inter, [&](int e, int64_t row_begin, int64_t row_end) {
    const int64_t first = slot_begin_[e];
    const int64_t m = slot_begin_[e + 1] - first;
    float* gate = &gate_[first * inter];
    float* up = &up_[first * inter];
    experts_[e].gate.ApplyRows(inputs_[e], row_begin, row_end, gate, inter);
    experts_[e].up.ApplyRows(inputs_[e], row_begin, row_end, up, inter);
    for (int64_t t = 0; t < m; ++t) {
      SiluMul(gate + t * inter + row_begin, up + t * inter + row_begin, row_end - row_begin,
              gate + t * inter + row_begin);
    }
  });
  // Phase 3: prepare the hidden activations, then the down projections.
  const Linear& any_down = experts_[active_experts_[0]].down;
  any_down.Prepare(gate_.data(), num_slots, &all_hidden_inputs_, pool);
  for (int32_t e : active_experts_) {
    any_down.Slice(all_hidden_inputs_, slot_begin_[e], slot_begin_[e + 1] - slot_begin_[e], &hidden_inputs_[e]);
  }
  for_each_item(hidden, [&](int e, int64_t row_begin, int64_t row_end) {
    experts_[e].down.ApplyRows(hidden_inputs_[e], row_begin, row_end, &down_[slot_begin_[e] * hidden], hidden);
  });
  // Weighted combine, in slot order (the same order for every run).
  std::fill(out, out + n * hidden, 0.0f);
  for (int64_t s = 0; s < num_slots; ++s) {
    float* dst = out + static_cast<int64_t>(slot_token_[s]) * hidden;
    const float* src = &down_[s * hidden];
    const float w = slot_weight_[s];
    for (int64_t i = 0; i < hidden; ++i) dst[i] += w * src[i];
  }
}

}  // namespace tetra
