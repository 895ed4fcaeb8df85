// One function per architecture file; registry.cc lists them.
#pragma once

#include "model/architecture.h"

namespace tetra {

ArchSpec LlamaSpec();
ArchSpec MixtralSpec();
ArchSpec Qwen2Spec();
ArchSpec Qwen3Spec();
ArchSpec Qwen2MoeSpec();
ArchSpec Qwen3MoeSpec();

}  // namespace tetra
