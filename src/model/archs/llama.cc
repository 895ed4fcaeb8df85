// Llama (1, 2, 3.x), SmolLM, and any `llama`-type checkpoint: dense SwiGLU
// decoder, GQA, optional llama3 RoPE scaling.
#include "model/archs/archs.h"

namespace tetra {

ArchSpec LlamaSpec() {
  ArchSpec spec;
  spec.name = "llama";
  spec.hf_model_types = {"llama"};
  spec.gguf_arch = "llama";
  spec.gguf_rope_style = RopeStyle::kInterleaved;  // the converter permuted Q/K
  spec.create = CreateDecoder;
  return spec;
}

}  // namespace tetra
