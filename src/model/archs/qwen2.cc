// Qwen2 / Qwen2.5: dense decoder with q/k/v biases.
#include "model/archs/archs.h"

namespace tetra {

ArchSpec Qwen2Spec() {
  ArchSpec spec;
  spec.name = "qwen2";
  spec.hf_model_types = {"qwen2"};
  spec.gguf_arch = "qwen2";
  spec.create = CreateDecoder;
  return spec;
}

}  // namespace tetra
