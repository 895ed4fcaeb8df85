#include "kernels/reference/attention.h"

#include <algorithm>
#include <vector>

#include "kernels/reference/matmul.h"
#include "kernels/reference/ops.h"

namespace tetra {

void CausalAttention(const AttentionShape& shape, const float* q, int64_t num_tokens,
                     int64_t first_position, const float* k, const float* v, float* out,
                     ThreadPool& pool) {
  const int group = shape.num_heads / shape.num_kv_heads;
  const int64_t d = shape.head_dim;
  const int64_t kv_row = static_cast<int64_t>(shape.num_kv_heads) * d;
  const int64_t q_row = static_cast<int64_t>(shape.num_heads) * d;
  pool.ParallelFor(num_tokens * shape.num_heads, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / shape.num_heads;
      const int h = static_cast<int>(item % shape.num_heads);
      const int kv_head = h / group;
      const int64_t num_keys = first_position + t + 1;
      scores.resize(static_cast<size_t>(num_keys));
      const float* query = q + t * q_row + h * d;
      for (int64_t j = 0; j < num_keys; ++j) {
        scores[j] = DotF32(query, k + j * kv_row + kv_head * d, d) * shape.scale;
      }
      Softmax(scores.data(), num_keys);
      float* o = out + t * q_row + h * d;
      std::fill(o, o + d, 0.0f);
      for (int64_t j = 0; j < num_keys; ++j) {
        const float p = scores[j];
        const float* value = v + j * kv_row + kv_head * d;
        for (int64_t i = 0; i < d; ++i) o[i] += p * value[i];
      }
    }
  });
}

}  // namespace tetra
