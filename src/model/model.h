// A loaded model: its files, config, forward implementation, tokenizer and
// chat template. Immutable after LoadModel: runners share it, each with its
// own workspace and KV storage.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "base/status.h"
#include "format/model_files.h"
#include "model/architecture.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace tetra {

struct Model {
  std::unique_ptr<ModelFiles> files;
  const ArchSpec* spec = nullptr;
  std::unique_ptr<Architecture> arch;
  std::unique_ptr<Tokenizer> tokenizer;
  std::optional<ChatTemplate> chat_template;  // nullopt when the model has none
  std::string chat_template_source;
  KvCacheOptions kv_cache;  // what NewKvStorage gives this model's sequences

  const ModelConfig& config() const { return arch->config(); }
  // bos/eos token strings for chat templates ("" when absent).
  std::string bos_text() const;
  std::string eos_text() const;
};

// Opens a GGUF file or HF directory and binds every tensor. Errors name the
// file and the problem.
StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path, const LoadOptions& options = {});

// Bytes one KV block takes across all layers (keys, values, scales).
int64_t KvBytesPerBlock(const Model& model);
// KV storage for this model's layers: num_blocks blocks and num_slots sequence slots.
std::unique_ptr<KvStorage> NewKvStorage(const Model& model, int num_blocks, int num_slots);

// The tokenizer alone (works on vocab-only GGUF files).
StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const ModelFiles& files);
// The chat template's Jinja source, "" when the model has none.
std::string ChatTemplateSource(const ModelFiles& files);

// Parameter counts: total, and active per token (experts_per_token of the
// experts, not all of them), embeddings included once.
struct ParameterCounts {
  int64_t total = 0;
  int64_t active_per_token = 0;
};
ParameterCounts CountParameters(const ModelConfig& config);

}  // namespace tetra
