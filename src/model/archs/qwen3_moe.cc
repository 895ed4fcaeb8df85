// Qwen3-MoE (Qwen3-30B-A3B, 235B-A22B): q/k norm, many small experts, top-k
// weights renormalised (norm_topk_prob), no shared expert.
#include "model/archs/archs.h"

namespace tetra {

ArchSpec Qwen3MoeSpec() {
  ArchSpec spec;
  spec.name = "qwen3_moe";
  spec.hf_model_types = {"qwen3_moe"};
  spec.gguf_arch = "qwen3moe";
  spec.is_moe = true;
  spec.norm_topk_prob_default = true;
  spec.create = CreateDecoder;
  return spec;
}

}  // namespace tetra
