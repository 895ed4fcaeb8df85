#include "model/config_reader.h"

#include <cmath>

#include "kernels/attention/attention.h"  // kMaxQueryHeadsPerKvHead

namespace tetra {
namespace {

// Typed look-ups in a JSON object with errors naming the file and key.
class JsonReader {
 public:
  JsonReader(const nlohmann::json& object, std::string file) : object_(object), file_(std::move(file)) {}

  bool Has(const std::string& key) const {
    return object_.is_object() && object_.contains(key) && !object_.at(key).is_null();
  }

  StatusOr<int64_t> Int(const std::string& key) const {
    if (!Has(key)) return Status::Errorf("{}: missing key '{}'", file_, key);
    const auto& v = object_.at(key);
    if (!v.is_number_integer()) return Status::Errorf("{}: key '{}' is not an integer", file_, key);
    return v.get<int64_t>();
  }
  StatusOr<int64_t> Int(const std::string& key, int64_t fallback) const {
    return Has(key) ? Int(key) : StatusOr<int64_t>(fallback);
  }
  StatusOr<double> Number(const std::string& key, double fallback) const {
    if (!Has(key)) return fallback;
    const auto& v = object_.at(key);
    if (!v.is_number()) return Status::Errorf("{}: key '{}' is not a number", file_, key);
    return v.get<double>();
  }
  bool Bool(const std::string& key, bool fallback) const {
    if (!Has(key) || !object_.at(key).is_boolean()) return fallback;
    return object_.at(key).get<bool>();
  }
  std::string String(const std::string& key) const {
    if (!Has(key) || !object_.at(key).is_string()) return "";
    return object_.at(key).get<std::string>();
  }

 private:
  const nlohmann::json& object_;
  std::string file_;
};

Status Validate(const ModelConfig& c, const std::string& file) {
  auto positive = [&](int64_t v, const char* what) -> Status {
    if (v <= 0 || v > (int64_t{1} << 31)) return Status::Errorf("{}: {} = {} is out of range", file, what, v);
    return Status::Ok();
  };
  TETRA_RETURN_IF_ERROR(positive(c.vocab_size, "vocab size"));
  TETRA_RETURN_IF_ERROR(positive(c.hidden_size, "hidden size"));
  TETRA_RETURN_IF_ERROR(positive(c.num_layers, "layer count"));
  TETRA_RETURN_IF_ERROR(positive(c.num_heads, "head count"));
  TETRA_RETURN_IF_ERROR(positive(c.num_kv_heads, "KV head count"));
  TETRA_RETURN_IF_ERROR(positive(c.head_dim, "head dim"));
  if (c.num_heads % c.num_kv_heads != 0) {
    return Status::Errorf("{}: {} heads are not a multiple of {} KV heads", file, c.num_heads, c.num_kv_heads);
  }
  if (c.num_heads / c.num_kv_heads > kMaxQueryHeadsPerKvHead) {
    return Status::Errorf("{}: {} query heads per KV head is more than the {} the attention kernels support", file,
                          c.num_heads / c.num_kv_heads, kMaxQueryHeadsPerKvHead);
  }
  if (c.rope.rotary_dim <= 0 || c.rope.rotary_dim > c.head_dim || c.rope.rotary_dim % 2 != 0) {
    return Status::Errorf("{}: rotary dim {} does not fit head dim {}", file, c.rope.rotary_dim, c.head_dim);
  }
  if (!(c.rope.theta > 0.0f) || !std::isfinite(c.rope.theta)) {
    return Status::Errorf("{}: RoPE theta {} is not a positive number", file, c.rope.theta);
  }
  if (c.is_moe()) {
    TETRA_RETURN_IF_ERROR(positive(c.expert_intermediate_size, "expert FFN size"));
    if (c.num_experts_per_token <= 0 || c.num_experts_per_token > c.num_experts) {
      return Status::Errorf("{}: {} experts per token does not fit {} experts", file,
                            c.num_experts_per_token, c.num_experts);
    }
  } else {
    TETRA_RETURN_IF_ERROR(positive(c.intermediate_size, "FFN size"));
  }
  return Status::Ok();
}

StatusOr<ModelConfig> ReadGgufConfig(const ModelFiles& files, const ArchSpec& spec) {
  const auto& meta = files.gguf_metadata;
  const std::string arch = spec.gguf_arch;
  // ordered_json and json differ in type; convert the needed keys.
  nlohmann::json keys = nlohmann::json::object();
  const std::string prefix = arch + ".";
  for (auto it = meta.begin(); it != meta.end(); ++it) {
    if (it.key().rfind(prefix, 0) == 0 && !it.value().is_array()) keys[it.key().substr(prefix.size())] = it.value();
  }
  JsonReader r(keys, files.path);
  ModelConfig c;
  c.arch = spec.name;
  TETRA_ASSIGN_OR_RETURN(c.hidden_size, r.Int("embedding_length"));
  int64_t value = 0;
  TETRA_ASSIGN_OR_RETURN(value, r.Int("block_count"));
  c.num_layers = static_cast<int>(value);
  TETRA_ASSIGN_OR_RETURN(value, r.Int("attention.head_count"));
  c.num_heads = static_cast<int>(value);
  TETRA_ASSIGN_OR_RETURN(value, r.Int("attention.head_count_kv", c.num_heads));
  c.num_kv_heads = static_cast<int>(value);
  TETRA_ASSIGN_OR_RETURN(value, r.Int("attention.key_length", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0));
  c.head_dim = static_cast<int>(value);
  TETRA_ASSIGN_OR_RETURN(c.intermediate_size, r.Int("feed_forward_length", 0));
  TETRA_ASSIGN_OR_RETURN(c.max_position, r.Int("context_length", 4096));
  double number = 0;
  TETRA_ASSIGN_OR_RETURN(number, r.Number("attention.layer_norm_rms_epsilon", 1e-5));
  c.rms_norm_eps = static_cast<float>(number);
  TETRA_ASSIGN_OR_RETURN(number, r.Number("rope.freq_base", 10000.0));
  c.rope.theta = static_cast<float>(number);
  TETRA_ASSIGN_OR_RETURN(value, r.Int("rope.dimension_count", c.head_dim));
  c.rope.rotary_dim = static_cast<int>(value);
  c.rope.style = spec.gguf_rope_style;
  const std::string scaling = r.String("rope.scaling.type");
  if (scaling == "linear") {
    c.rope.scaling = RopeScaling::kLinear;
    TETRA_ASSIGN_OR_RETURN(number, r.Number("rope.scaling.factor", 1.0));
    c.rope.factor = static_cast<float>(number);
  } else if (!scaling.empty() && scaling != "none") {
    return Status::Errorf("{}: RoPE scaling '{}' is not supported yet", files.path, scaling);
  }
  TETRA_ASSIGN_OR_RETURN(value, r.Int("expert_count", 0));
  c.num_experts = static_cast<int>(value);
  TETRA_ASSIGN_OR_RETURN(value, r.Int("expert_used_count", 0));
  c.num_experts_per_token = static_cast<int>(value);
  TETRA_ASSIGN_OR_RETURN(c.expert_intermediate_size, r.Int("expert_feed_forward_length", c.intermediate_size));
  TETRA_ASSIGN_OR_RETURN(c.shared_expert_intermediate_size, r.Int("expert_shared_feed_forward_length", 0));
  c.norm_topk_prob = spec.norm_topk_prob_always || r.Bool("expert_weights_norm", spec.norm_topk_prob_default);

  // Vocabulary size: the embedding's row count (the tensor is authoritative).
  const WeightTensor* embedding = files.weights.Find("token_embd.weight");
  if (embedding == nullptr) return Status::Errorf("{}: missing tensor 'token_embd.weight'", files.path);
  if (embedding->shape.size() != 2) {
    return Status::Errorf("{}: tensor 'token_embd.weight' is not a matrix", files.path);
  }
  c.vocab_size = embedding->shape[0];
  c.tie_embeddings = files.weights.Find("output.weight") == nullptr;
  return c;
}

StatusOr<ModelConfig> ReadHfConfig(const ModelFiles& files, const ArchSpec& spec) {
  const std::string file = files.path + "/config.json";
  const nlohmann::json& json = files.hf_config;
  JsonReader r(json, file);
  ModelConfig c;
  c.arch = spec.name;
  int64_t value = 0;
  TETRA_ASSIGN_OR_RETURN(c.vocab_size, r.Int("vocab_size"));
  TETRA_ASSIGN_OR_RETURN(c.hidden_size, r.Int("hidden_size"));
  TETRA_ASSIGN_OR_RETURN(value, r.Int("num_hidden_layers"));
  c.num_layers = static_cast<int>(value);
  TETRA_ASSIGN_OR_RETURN(value, r.Int("num_attention_heads"));
  c.num_heads = static_cast<int>(value);
  TETRA_ASSIGN_OR_RETURN(value, r.Int("num_key_value_heads", c.num_heads));
  c.num_kv_heads = static_cast<int>(value);
  TETRA_ASSIGN_OR_RETURN(value, r.Int("head_dim", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0));
  c.head_dim = static_cast<int>(value);
  TETRA_ASSIGN_OR_RETURN(c.intermediate_size, r.Int("intermediate_size", 0));
  TETRA_ASSIGN_OR_RETURN(c.max_position, r.Int("max_position_embeddings", 4096));
  double number = 0;
  TETRA_ASSIGN_OR_RETURN(number, r.Number("rms_norm_eps", 1e-6));
  c.rms_norm_eps = static_cast<float>(number);
  c.tie_embeddings = r.Bool("tie_word_embeddings", false);

  // RoPE: transformers 5 writes "rope_parameters"; older configs "rope_theta"
  // plus an optional "rope_scaling" object.
  const nlohmann::json* rope = nullptr;
  if (r.Has("rope_parameters") && json.at("rope_parameters").is_object()) {
    rope = &json.at("rope_parameters");
  } else if (r.Has("rope_scaling") && json.at("rope_scaling").is_object()) {
    rope = &json.at("rope_scaling");
  }
  static const nlohmann::json kEmpty = nlohmann::json::object();
  JsonReader rr(rope ? *rope : kEmpty, file + " rope parameters");
  TETRA_ASSIGN_OR_RETURN(number, r.Number("rope_theta", 10000.0));
  TETRA_ASSIGN_OR_RETURN(number, rr.Number("rope_theta", number));
  c.rope.theta = static_cast<float>(number);
  c.rope.rotary_dim = c.head_dim;
  if (r.Has("partial_rotary_factor")) {
    TETRA_ASSIGN_OR_RETURN(number, r.Number("partial_rotary_factor", 1.0));
    c.rope.rotary_dim = static_cast<int>(c.head_dim * number);
  }
  c.rope.style = RopeStyle::kNeox;
  std::string rope_type = rr.String("rope_type");
  if (rope_type.empty()) rope_type = rr.String("type");
  if (rope_type == "llama3") {
    c.rope.scaling = RopeScaling::kLlama3;
    TETRA_ASSIGN_OR_RETURN(number, rr.Number("factor", 8.0));
    c.rope.factor = static_cast<float>(number);
    TETRA_ASSIGN_OR_RETURN(number, rr.Number("low_freq_factor", 1.0));
    c.rope.low_freq_factor = static_cast<float>(number);
    TETRA_ASSIGN_OR_RETURN(number, rr.Number("high_freq_factor", 4.0));
    c.rope.high_freq_factor = static_cast<float>(number);
    TETRA_ASSIGN_OR_RETURN(value, rr.Int("original_max_position_embeddings", 8192));
    c.rope.original_max_position = static_cast<int>(value);
  } else if (rope_type == "linear") {
    c.rope.scaling = RopeScaling::kLinear;
    TETRA_ASSIGN_OR_RETURN(number, rr.Number("factor", 1.0));
    c.rope.factor = static_cast<float>(number);
  } else if (!rope_type.empty() && rope_type != "default") {
    return Status::Errorf("{}: RoPE type '{}' is not supported yet", file, rope_type);
  }

  if (spec.is_moe) {
    // transformers 5 writes "num_local_experts" for every MoE family.
    const std::string experts_key = r.Has(spec.hf_num_experts_key) ? spec.hf_num_experts_key : "num_local_experts";
    TETRA_ASSIGN_OR_RETURN(value, r.Int(experts_key));
    c.num_experts = static_cast<int>(value);
    TETRA_ASSIGN_OR_RETURN(value, r.Int("num_experts_per_tok"));
    c.num_experts_per_token = static_cast<int>(value);
    TETRA_ASSIGN_OR_RETURN(c.expert_intermediate_size, r.Int(spec.hf_expert_intermediate_key));
    TETRA_ASSIGN_OR_RETURN(c.shared_expert_intermediate_size, r.Int("shared_expert_intermediate_size", 0));
    c.norm_topk_prob = spec.norm_topk_prob_always || r.Bool("norm_topk_prob", spec.norm_topk_prob_default);
  }
  return c;
}

}  // namespace

StatusOr<const ArchSpec*> DetectArchitecture(const ModelFiles& files) {
  if (files.format == ModelFiles::Format::kGguf) {
    const auto& meta = files.gguf_metadata;
    auto it = meta.find("general.architecture");
    if (it == meta.end() || !it->is_string()) {
      return Status::Errorf("{}: missing key 'general.architecture'", files.path);
    }
    const std::string arch = it->get<std::string>();
    auto experts = meta.find(arch + ".expert_count");
    const bool has_experts = experts != meta.end() && experts->is_number_integer() && experts->get<int64_t>() > 0;
    const ArchSpec* spec = FindArchForGguf(arch, has_experts);
    if (spec == nullptr) return Status::Errorf("{}: architecture '{}' is not supported", files.path, arch);
    return spec;
  }
  JsonReader r(files.hf_config, files.path + "/config.json");
  const std::string model_type = r.String("model_type");
  if (model_type.empty()) return Status::Errorf("{}/config.json: missing key 'model_type'", files.path);
  const ArchSpec* spec = FindArchForHf(model_type);
  if (spec == nullptr) return Status::Errorf("{}/config.json: model_type '{}' is not supported", files.path, model_type);
  return spec;
}

StatusOr<ModelConfig> ReadModelConfig(const ModelFiles& files, const ArchSpec& spec) {
  StatusOr<ModelConfig> config = files.format == ModelFiles::Format::kGguf
                                     ? ReadGgufConfig(files, spec)
                                     : ReadHfConfig(files, spec);
  if (!config.ok()) return config;
  TETRA_RETURN_IF_ERROR(Validate(*config, files.path));
  return config;
}

}  // namespace tetra
