// Rotary position embedding, applied in place to the heads of one token.
// Two pairings exist: NEOX (HF's rotate_half: element i pairs with i + d/2)
// and interleaved (GGUF's llama layout: element 2i pairs with 2i + 1).
#pragma once

#include <cstdint>
#include <vector>

namespace tetra {

enum class RopeStyle { kNeox, kInterleaved };

// Per-position cos/sin tables for one rotary dimension set.
// inv_freq: [rotary_dim / 2] angular frequencies (scaling already folded in).
class RopeTable {
 public:
  RopeTable() = default;
  explicit RopeTable(std::vector<float> inv_freq) : inv_freq_(std::move(inv_freq)) {}
  int64_t num_pairs() const { return static_cast<int64_t>(inv_freq_.size()); }
  // cos_out/sin_out: [num_pairs]
  void Compute(int64_t position, float* cos_out, float* sin_out) const;

 private:
  std::vector<float> inv_freq_;
};

// x: [num_heads, head_dim]; rotates the first 2 * num_pairs dims of each head.
void ApplyRope(float* x, int num_heads, int head_dim, int64_t num_pairs, const float* cos_values,
               const float* sin_values, RopeStyle style);

}  // namespace tetra
