// Qwen3: dense decoder with per-head RMSNorm of q and k before RoPE.
#include "model/archs/archs.h"

namespace tetra {

ArchSpec Qwen3Spec() {
  ArchSpec spec;
  spec.name = "qwen3";
  spec.hf_model_types = {"qwen3"};
  spec.gguf_arch = "qwen3";
  spec.create = CreateDecoder;
  return spec;
}

}  // namespace tetra
