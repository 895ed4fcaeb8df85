// The hyper-parameters of a decoder-only model, read from GGUF metadata or a
// HF config.json into one form. Plain value type.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/reference/rope.h"

namespace tetra {

enum class RopeScaling { kNone, kLinear, kLlama3 };

struct RopeConfig {
  float theta = 10000.0f;
  int rotary_dim = 0;  // dims rotated per head (= head_dim unless partial)
  RopeStyle style = RopeStyle::kNeox;
  RopeScaling scaling = RopeScaling::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;         // llama3
  float high_freq_factor = 4.0f;        // llama3
  int original_max_position = 8192;     // llama3
  // GGUF rope_freqs tensor: inv_freq[i] is divided by freq_factors[i] (llama3
  // scaling baked in by the converter). Empty when absent.
  std::vector<float> freq_factors;

  // The angular frequencies, scaling folded in: [rotary_dim / 2].
  std::vector<float> InverseFrequencies() const;
};

struct ModelConfig {
  std::string arch;  // registry name: "llama", "qwen2", "qwen3", "mixtral", ...
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int64_t intermediate_size = 0;  // dense FFN
  float rms_norm_eps = 1e-6f;
  int64_t max_position = 4096;
  bool tie_embeddings = false;
  RopeConfig rope;

  // Mixture of experts (num_experts == 0 for dense models).
  int num_experts = 0;
  int num_experts_per_token = 0;
  int64_t expert_intermediate_size = 0;
  int64_t shared_expert_intermediate_size = 0;  // 0: no shared expert
  bool norm_topk_prob = false;                  // renormalise the top-k weights

  bool is_moe() const { return num_experts > 0; }
};

// The context length at which one token's attention (QK and PV over that
// many positions) costs as many FLOPs as its linear layers (projections and
// the FFN, the active experts of an MoE): the scale of the scheduler's
// attention-cost model of prompt chunks. 0 when the config lacks the sizes.
double AttentionCostContext(const ModelConfig& config);

}  // namespace tetra
