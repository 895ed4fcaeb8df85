// Mixtral: llama attention with a sparse MoE FFN (softmax router, top-k
// weights renormalised). GGUF stores it as `llama` with expert_count > 0.
#include "model/archs/archs.h"

namespace tetra {

ArchSpec MixtralSpec() {
  ArchSpec spec;
  spec.name = "mixtral";
  spec.hf_model_types = {"mixtral"};
  spec.gguf_arch = "llama";
  spec.is_moe = true;
  spec.norm_topk_prob_always = true;
  spec.gguf_rope_style = RopeStyle::kInterleaved;
  spec.hf_num_experts_key = "num_local_experts";
  spec.hf_expert_intermediate_key = "intermediate_size";
  spec.create = CreateDecoder;
  return spec;
}

}  // namespace tetra
