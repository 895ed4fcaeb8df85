#include "model/config.h"

#include <cmath>
#include <numbers>

namespace tetra {

std::vector<float> RopeConfig::InverseFrequencies() const {
  const int num_pairs = rotary_dim / 2;
  std::vector<float> inv_freq(num_pairs);
  for (int i = 0; i < num_pairs; ++i) {
    // As HF computes it: 1 / theta^(2i / d), in f32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rotary_dim);
    inv_freq[i] = 1.0f / std::pow(theta, exponent);
  }
  if (!freq_factors.empty()) {
    for (int i = 0; i < num_pairs && i < static_cast<int>(freq_factors.size()); ++i) {
      inv_freq[i] /= freq_factors[i];
    }
    return inv_freq;
  }
  switch (scaling) {
    case RopeScaling::kNone:
      break;
    case RopeScaling::kLinear:
      for (float& f : inv_freq) f /= factor;
      break;
    case RopeScaling::kLlama3: {
      const float low_freq_wavelen = original_max_position / low_freq_factor;
      const float high_freq_wavelen = original_max_position / high_freq_factor;
      for (float& f : inv_freq) {
        const float wavelen = 2.0f * std::numbers::pi_v<float> / f;
        if (wavelen > low_freq_wavelen) {
          f = f / factor;
        } else if (wavelen >= high_freq_wavelen) {
          const float smooth = (original_max_position / wavelen - low_freq_factor) /
                               (high_freq_factor - low_freq_factor);
          f = (1.0f - smooth) * f / factor + smooth * f;
        }
      }
      break;
    }
  }
  return inv_freq;
}

double AttentionCostContext(const ModelConfig& c) {
  const double hidden = static_cast<double>(c.hidden_size);
  const double q = static_cast<double>(c.num_heads) * c.head_dim;
  const double kv = static_cast<double>(c.num_kv_heads) * c.head_dim;
  double ffn = 3.0 * hidden * static_cast<double>(c.intermediate_size);  // gate, up, down
  if (c.is_moe()) {
    ffn = 3.0 * hidden * static_cast<double>(c.expert_intermediate_size) * c.num_experts_per_token +
          3.0 * hidden * static_cast<double>(c.shared_expert_intermediate_size) + hidden * c.num_experts;  // + router
  }
  const double linear = hidden * (2.0 * q + 2.0 * kv) + ffn;  // multiply-adds per token and layer
  const double attention = 2.0 * q;                           // per position attended: QK and PV
  return attention > 0 && linear > 0 ? linear / attention : 0.0;
}

}  // namespace tetra
