// Activations quantized for the W4A8 kernels: per token, symmetric int8 with
// scale = max|x| / 127 (q = round(x / scale), in [-127, 127]; a zero row has
// scale 0), plus the sum of q over every group of group_size inputs, which the
// kernels need for the weight mins: Σ_i (q_w*s + m) * a_i = s*Σ q_w*a_i + m*Σ a_i.
//
// A QuantizedActivations is a reusable buffer: QuantizeActivations only
// allocates when it needs more room than any earlier call. One thread writes
// it; after that any number of threads may read it.
#pragma once

#include <cstdint>
#include <vector>

namespace tetra {

struct QuantizedActivations {
  int64_t num_tokens = 0;
  int64_t cols = 0;
  int group_size = 32;
  int64_t num_groups = 0;       // cols / group_size
  int64_t values_stride = 0;    // cols rounded up to 64 bytes
  std::vector<int8_t> values;   // [num_tokens, values_stride] (padding is zero)
  std::vector<float> scales;    // [num_tokens]
  std::vector<float> group_sums;  // [num_tokens, num_groups] Σ q per group (exact integers)

  const int8_t* token_values(int64_t t) const { return values.data() + t * values_stride; }
  const float* token_group_sums(int64_t t) const { return group_sums.data() + t * num_groups; }
};

// x: [num_tokens, cols] f32. cols must be a positive multiple of group_size
// (checked: the caller's shapes come from a PackedW4 validated at load time).
// Non-finite inputs are the caller's bug; they give a NaN scale, not a crash.
void QuantizeActivations(const float* x, int64_t num_tokens, int64_t cols, int group_size,
                         QuantizedActivations* out);

}  // namespace tetra
