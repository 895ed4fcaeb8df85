// Qwen2-MoE / Qwen1.5-MoE: sparse experts plus a shared expert whose output
// is scaled by sigmoid(shared_expert_gate · x); top-k weights not
// renormalised unless norm_topk_prob.
#include "model/archs/archs.h"

namespace tetra {

ArchSpec Qwen2MoeSpec() {
  ArchSpec spec;
  spec.name = "qwen2_moe";
  spec.hf_model_types = {"qwen2_moe"};
  spec.gguf_arch = "qwen2moe";
  spec.is_moe = true;
  spec.norm_topk_prob_default = false;
  spec.create = CreateDecoder;
  return spec;
}

}  // namespace tetra
