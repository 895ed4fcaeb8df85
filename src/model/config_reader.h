// Reads a ModelConfig from GGUF metadata or a HF config.json, for a given
// architecture spec. Errors name the file and the key.
#pragma once

#include "format/model_files.h"
#include "model/architecture.h"

namespace tetra {

// Picks the architecture of the files; error names what was found.
StatusOr<const ArchSpec*> DetectArchitecture(const ModelFiles& files);

StatusOr<ModelConfig> ReadModelConfig(const ModelFiles& files, const ArchSpec& spec);

}  // namespace tetra
