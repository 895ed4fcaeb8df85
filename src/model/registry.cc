#include <algorithm>

#include "model/archs/archs.h"

namespace tetra {

const std::vector<ArchSpec>& ArchRegistry() {
  // One line per architecture.
  static const std::vector<ArchSpec> registry = {
      LlamaSpec(),
      MixtralSpec(),
      Qwen2Spec(),
      Qwen3Spec(),
      Qwen2MoeSpec(),
      Qwen3MoeSpec(),
  };
  return registry;
}

const ArchSpec* FindArchForHf(const std::string& model_type) {
  for (const ArchSpec& spec : ArchRegistry()) {
    const auto& types = spec.hf_model_types;
    if (std::find(types.begin(), types.end(), model_type) != types.end()) return &spec;
  }
  return nullptr;
}

const ArchSpec* FindArchForGguf(const std::string& gguf_arch, bool has_experts) {
  const ArchSpec* fallback = nullptr;
  for (const ArchSpec& spec : ArchRegistry()) {
    if (spec.gguf_arch != gguf_arch) continue;
    if (spec.is_moe == has_experts) return &spec;
    fallback = &spec;
  }
  return fallback;
}

}  // namespace tetra
