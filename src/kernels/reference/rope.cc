#include "kernels/reference/rope.h"

#include <cmath>

namespace tetra {

void RopeTable::Compute(int64_t position, float* cos_out, float* sin_out) const {
  const float p = static_cast<float>(position);
  for (int64_t i = 0; i < num_pairs(); ++i) {
    const float angle = p * inv_freq_[i];
    cos_out[i] = std::cos(angle);
    sin_out[i] = std::sin(angle);
  }
}

void ApplyRope(float* x, int num_heads, int head_dim, int64_t num_pairs, const float* cos_values,
               const float* sin_values, RopeStyle style) {
  for (int h = 0; h < num_heads; ++h) {
    float* head = x + static_cast<int64_t>(h) * head_dim;
    for (int64_t i = 0; i < num_pairs; ++i) {
      const int64_t a = style == RopeStyle::kNeox ? i : 2 * i;
      const int64_t b = style == RopeStyle::kNeox ? i + num_pairs : 2 * i + 1;
      const float x0 = head[a];
      const float x1 = head[b];
      head[a] = x0 * cos_values[i] - x1 * sin_values[i];
      head[b] = x1 * cos_values[i] + x0 * sin_values[i];
    }
  }
}

}  // namespace tetra
