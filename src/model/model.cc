#include "model/model.h"

#include "model/config_reader.h"
#include "model/weight_source.h"

namespace tetra {

std::string Model::bos_text() const {
  auto id = tokenizer->bos_id();
  return id ? tokenizer->TokenText(*id) : std::string();
}

std::string Model::eos_text() const {
  auto id = tokenizer->eos_id();
  return id ? tokenizer->TokenText(*id) : std::string();
}

StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const ModelFiles& files) {
  if (files.format == ModelFiles::Format::kGguf) return Tokenizer::FromGguf(files.gguf_metadata);
  if (files.hf_tokenizer_json_path.empty()) return Status::Errorf("{}: no tokenizer.json", files.path);
  return Tokenizer::FromHfJson(files.hf_tokenizer_json_path, files.hf_tokenizer_config);
}

std::string ChatTemplateSource(const ModelFiles& files) {
  if (files.format == ModelFiles::Format::kGguf) {
    auto it = files.gguf_metadata.find("tokenizer.chat_template");
    return it != files.gguf_metadata.end() && it->is_string() ? it->get<std::string>() : "";
  }
  const auto& tc = files.hf_tokenizer_config;
  if (tc.is_object() && tc.contains("chat_template") && tc["chat_template"].is_string()) {
    return tc["chat_template"].get<std::string>();
  }
  return "";
}

StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path, const LoadOptions& options) {
  auto model = std::make_unique<Model>();
  TETRA_ASSIGN_OR_RETURN(model->files, OpenModelFiles(path));
  const ModelFiles& files = *model->files;
  TETRA_ASSIGN_OR_RETURN(model->spec, DetectArchitecture(files));
  ModelConfig config;
  TETRA_ASSIGN_OR_RETURN(config, ReadModelConfig(files, *model->spec));
  model->arch = model->spec->create(config);
  TETRA_RETURN_IF_ERROR(model->arch->Load(WeightSource(files), options));
  if (options.kv_block_tokens < 1) return Status::Errorf("KV block size must be at least 1 (got {})", options.kv_block_tokens);
  model->kv_cache.block_tokens = options.kv_block_tokens;
  model->kv_cache.dtype = options.kv_dtype.value_or(options.weights == WeightFormat::kReference ? KvDtype::kF32
                                                                                                 : KvDtype::kFp8E4M3);

  TETRA_ASSIGN_OR_RETURN(model->tokenizer, LoadTokenizer(files));
  model->chat_template_source = ChatTemplateSource(files);
  if (model->tokenizer->vocab_size() > model->config().vocab_size) {
    return Status::Errorf("{}: tokenizer has {} tokens but the embedding only {} rows", files.path,
                          model->tokenizer->vocab_size(), model->config().vocab_size);
  }
  if (!model->chat_template_source.empty()) {
    auto parsed = ChatTemplate::Parse(model->chat_template_source);
    if (!parsed.ok()) return parsed.status().WithPrefix(files.path + ": chat template: ");
    model->chat_template.emplace(std::move(parsed).value());
  }
  return model;
}

int64_t KvBytesPerBlock(const Model& model) {
  const ModelConfig& c = model.config();
  const int64_t elements = static_cast<int64_t>(c.num_kv_heads) * model.kv_cache.block_tokens * c.head_dim;
  const int64_t scales = model.kv_cache.dtype == KvDtype::kFp8E4M3 ? c.num_kv_heads * 4 : 0;
  return 2 * (elements * KvDtypeBytes(model.kv_cache.dtype) + scales) * c.num_layers;
}

std::unique_ptr<KvStorage> NewKvStorage(const Model& model, int num_blocks, int num_slots) {
  const ModelConfig& c = model.config();
  return std::make_unique<KvStorage>(KvGeometry{c.num_layers, c.num_kv_heads, c.head_dim}, model.kv_cache, num_blocks,
                                     num_slots);
}

ParameterCounts CountParameters(const ModelConfig& c) {
  const int64_t h = c.hidden_size;
  const int64_t q = static_cast<int64_t>(c.num_heads) * c.head_dim;
  const int64_t kv = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
  const int64_t attention = h * q * 2 + h * kv * 2 + 2 * h;
  int64_t ffn_total = 3 * h * c.intermediate_size;
  int64_t ffn_active = ffn_total;
  if (c.is_moe()) {
    const int64_t expert = 3 * h * c.expert_intermediate_size;
    const int64_t shared = 3 * h * c.shared_expert_intermediate_size + (c.shared_expert_intermediate_size ? h : 0);
    const int64_t router = h * c.num_experts;
    ffn_total = expert * c.num_experts + shared + router;
    ffn_active = expert * c.num_experts_per_token + shared + router;
  }
  const int64_t embeddings = c.vocab_size * h * (c.tie_embeddings ? 1 : 2) + h;
  ParameterCounts counts;
  counts.total = embeddings + c.num_layers * (attention + ffn_total);
  counts.active_per_token = embeddings + c.num_layers * (attention + ffn_active);
  return counts;
}

}  // namespace tetra
