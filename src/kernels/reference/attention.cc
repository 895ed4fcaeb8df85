#include "kernels/reference/attention.h"

#include <algorithm>
#include <vector>

#include "kernels/reference/matmul.h"
#include "kernels/reference/ops.h"

namespace tetra {

namespace {

// One query row (token t of a sequence, head h) against keys [0, first + t].
void AttendOne(const AttentionShape& shape, const AttentionSequence& seq, int64_t t, int h,
               std::vector<float>& scores) {
  const int group = shape.num_heads / shape.num_kv_heads;
  const int64_t d = shape.head_dim;
  const int64_t kv_row = static_cast<int64_t>(shape.num_kv_heads) * d;
  const int64_t q_row = static_cast<int64_t>(shape.num_heads) * d;
  const int kv_head = h / group;
  const int64_t num_keys = seq.first_position + t + 1;
  scores.resize(static_cast<size_t>(num_keys));
  const float* query = seq.q + t * q_row + h * d;
  for (int64_t j = 0; j < num_keys; ++j) {
    scores[j] = DotF32(query, seq.k + j * kv_row + kv_head * d, d) * shape.scale;
  }
  Softmax(scores.data(), num_keys);
  float* o = seq.out + t * q_row + h * d;
  std::fill(o, o + d, 0.0f);
  for (int64_t j = 0; j < num_keys; ++j) {
    const float p = scores[j];
    const float* value = seq.v + j * kv_row + kv_head * d;
    for (int64_t i = 0; i < d; ++i) o[i] += p * value[i];
  }
}

}  // namespace

void CausalAttentionBatch(const AttentionShape& shape, std::span<const AttentionSequence> sequences,
                          ThreadPool& pool) {
  // Item i covers (sequence s, token t, head h); first_item[s] starts sequence s.
  thread_local std::vector<int64_t> first_item;
  std::vector<int64_t>& starts = first_item;  // named: lambdas would see each thread's own copy
  starts.assign(sequences.size() + 1, 0);
  for (size_t s = 0; s < sequences.size(); ++s) {
    starts[s + 1] = starts[s] + sequences[s].num_tokens * shape.num_heads;
  }
  pool.ParallelFor(starts.back(), 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    size_t s = static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), begin) - starts.begin() - 1);
    for (int64_t item = begin; item < end; ++item) {
      while (item >= starts[s + 1]) ++s;
      const int64_t local = item - starts[s];
      AttendOne(shape, sequences[s], local / shape.num_heads, static_cast<int>(local % shape.num_heads), scores);
    }
  });
}

}  // namespace tetra
