// Activations quantized for the W4A8 kernels: symmetric int8 with one scale
// per (token, group of group_size inputs), the weight group size:
//   scale[t, g] = max |x[t, c in g]| / 127,  q[t, c] = round(x[t, c] / scale[t, g])
// in [-127, 127] (half to even; an all-zero group has scale 0 and q 0). One
// scale per group, as GGUF Q8_0 does per 32 values, keeps an outlier channel
// from coarsening the steps of every other input of the token.
// Per (token, group) it also keeps Σ q, which the kernels need for the weight
// mins: Σ_c (q_w*s + m) * a_c = s*Σ q_w*a_c + m*Σ a_c, and that sum times the
// group's scale, so the kernels' per-group float step stays two fused
// multiply-adds and one multiply.
//
// A QuantizedActivations is a reusable buffer: QuantizeActivations only
// allocates when it needs more room than any earlier call. One thread writes
// it (or disjoint token ranges, one thread each); after that any number of
// threads may read it. The kernels read tokens through the *_base pointers,
// which point into the object's own vectors, or, for a slice
// (SliceActivations), into another object's rows, which must outlive it.
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
  std::vector<float> scales;    // [num_tokens, num_groups] max |x| / 127 per group
  std::vector<float> group_sums;  // [num_tokens, num_groups] Σ q per group (exact integers)
  std::vector<float> scaled_group_sums;  // [num_tokens, num_groups] scales * group_sums (rounded once)
  // [num_tokens, cols / kSubSumInputs] Σ q per 16 inputs (the Q6_K sub-blocks
  // of W6A8), computed once here rather than by every GEMM call; empty when
  // the group size is not a multiple of 16.
  static constexpr int kSubSumInputs = 16;
  std::vector<int32_t> sub_sums;
  const int8_t* values_base = nullptr;
  const float* scales_base = nullptr;
  const float* group_sums_base = nullptr;
  const float* scaled_group_sums_base = nullptr;
  const int32_t* sub_sums_base = nullptr;

  const int8_t* token_values(int64_t t) const { return values_base + t * values_stride; }
  const float* token_scales(int64_t t) const { return scales_base + t * num_groups; }
  const float* token_group_sums(int64_t t) const { return group_sums_base + t * num_groups; }
  const float* token_scaled_group_sums(int64_t t) const { return scaled_group_sums_base + t * num_groups; }
  const int32_t* token_sub_sums(int64_t t) const { return sub_sums_base + t * (cols / kSubSumInputs); }
};

// x: [num_tokens, cols] f32. cols must be a positive multiple of group_size
// (checked: the caller's shapes come from a PackedW4 validated at load time).
// Non-finite inputs are the caller's bug; they give a NaN or infinite scale
// for their group, not a crash.
void QuantizeActivations(const float* x, int64_t num_tokens, int64_t cols, int group_size,
                         QuantizedActivations* out);

// The same in two steps, so that token ranges can be quantized in parallel:
// ResizeActivations shapes `out` for num_tokens (allocating only when it
// needs more room than ever before), then QuantizeActivationRows fills
// tokens [begin, end) from x [num_tokens, cols].
void ResizeActivations(int64_t num_tokens, int64_t cols, int group_size, QuantizedActivations* out);
void QuantizeActivationRows(const float* x, int64_t begin, int64_t end, QuantizedActivations* out);

// `out` becomes a view of tokens [first, first + count) of `all` (no copy, no
// allocation); `all` must outlive it and not be resized meanwhile.
void SliceActivations(const QuantizedActivations& all, int64_t first, int64_t count, QuantizedActivations* out);

}  // namespace tetra
