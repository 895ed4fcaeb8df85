// Small element-wise and row-wise reference ops of the transformer block, in
// f32. Pure functions over caller-owned buffers; any thread.
#pragma once

#include <cstdint>

namespace tetra {

// out[i] = x[i] / sqrt(mean(x²) + eps) * weight[i], for one row of n.
void RmsNorm(const float* x, const float* weight, float eps, int64_t n, float* out);

// In-place softmax over n values.
void Softmax(float* x, int64_t n);

// out[i] = silu(gate[i]) * up[i].
void SiluMul(const float* gate, const float* up, int64_t n, float* out);

inline float Sigmoid(float x) { return 1.0f / (1.0f + __builtin_expf(-x)); }

}  // namespace tetra
