// Tokenizer::FromGguf: the tokenizer.ggml.* key/values of a GGUF file.
#include "tokenizer/tokenizer.h"

namespace tetra {

namespace {
using Json = nlohmann::ordered_json;

StatusOr<const Json*> FindArray(const Json& metadata, const char* key, bool required) {
  auto it = metadata.find(key);
  if (it == metadata.end()) {
    if (required) return Status::Errorf("{}: missing", key);
    return static_cast<const Json*>(nullptr);
  }
  if (!it->is_array()) return Status::Errorf("{}: expected an array, got {}", key, it->type_name());
  return &*it;
}

StatusOr<std::optional<int32_t>> FindId(const Json& metadata, const char* key) {
  auto it = metadata.find(key);
  if (it == metadata.end()) return std::optional<int32_t>();
  if (!it->is_number_integer()) return Status::Errorf("{}: expected an integer", key);
  int64_t value = it->get<int64_t>();
  if (value < 0 || value > INT32_MAX) return Status::Errorf("{}: id {} out of range", key, value);
  return std::optional<int32_t>(static_cast<int32_t>(value));
}

StatusOr<std::optional<bool>> FindBool(const Json& metadata, const char* key) {
  auto it = metadata.find(key);
  if (it == metadata.end()) return std::optional<bool>();
  if (!it->is_boolean()) return Status::Errorf("{}: expected a bool", key);
  return std::optional<bool>(it->get<bool>());
}

std::string FindString(const Json& metadata, const char* key) {
  auto it = metadata.find(key);
  return it != metadata.end() && it->is_string() ? it->get<std::string>() : std::string();
}
}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const nlohmann::ordered_json& metadata) {
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  Tokenizer& t = *tokenizer;
  const std::string model = FindString(metadata, "tokenizer.ggml.model");
  const std::string pre = FindString(metadata, "tokenizer.ggml.pre");
  if (model == "gpt2") {
    t.kind_ = Kind::kByteLevel;
  } else if (model == "llama") {
    t.kind_ = Kind::kSentencePiece;
  } else if (model.empty()) {
    return Status::Error("tokenizer.ggml.model: missing");
  } else {
    return Status::Errorf("tokenizer.ggml.model: unsupported tokenizer model '{}' (supported: gpt2, llama)", model);
  }
  t.model_name_ = pre.empty() ? model : fmt::format("{} (pre: {})", model, pre);

  TETRA_ASSIGN_OR_RETURN(const Json* tokens, FindArray(metadata, "tokenizer.ggml.tokens", true));
  t.tokens_.reserve(tokens->size());
  for (size_t i = 0; i < tokens->size(); ++i) {
    if (!(*tokens)[i].is_string()) return Status::Errorf("tokenizer.ggml.tokens[{}]: expected a string", i);
    t.tokens_.push_back((*tokens)[i].get<std::string>());
  }
  if (t.tokens_.size() > INT32_MAX) return Status::Error("tokenizer.ggml.tokens: too many tokens");
  const size_t n = t.tokens_.size();

  TETRA_ASSIGN_OR_RETURN(const Json* types, FindArray(metadata, "tokenizer.ggml.token_type", false));
  t.token_types_.assign(n, TokenType::kNormal);
  if (types) {
    if (types->size() != n) {
      return Status::Errorf("tokenizer.ggml.token_type: {} entries for {} tokens", types->size(), n);
    }
    for (size_t i = 0; i < n; ++i) {
      const Json& v = (*types)[i];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > 6) {
        return Status::Errorf("tokenizer.ggml.token_type[{}]: expected a token type 0..6", i);
      }
      t.token_types_[i] = static_cast<TokenType>(v.get<int32_t>());
    }
  }

  if (t.kind_ == Kind::kByteLevel) {
    TETRA_ASSIGN_OR_RETURN(const Json* merges, FindArray(metadata, "tokenizer.ggml.merges", true));
    std::unordered_map<std::string, int32_t> ids;
    ids.reserve(n);
    for (size_t i = 0; i < n; ++i) ids.emplace(t.tokens_[i], static_cast<int32_t>(i));
    for (size_t rank = 0; rank < merges->size(); ++rank) {
      const Json& entry = (*merges)[rank];
      if (!entry.is_string()) return Status::Errorf("tokenizer.ggml.merges[{}]: expected a string", rank);
      const std::string& merge = entry.get_ref<const std::string&>();
      size_t space = merge.find(' ', 1);
      if (space == std::string::npos) {
        return Status::Errorf("tokenizer.ggml.merges[{}]: '{}' is not two tokens separated by a space", rank, merge);
      }
      std::string left = merge.substr(0, space), right = merge.substr(space + 1);
      auto l = ids.find(left), r = ids.find(right), m = ids.find(left + right);
      if (l == ids.end() || r == ids.end() || m == ids.end()) {
        return Status::Errorf("tokenizer.ggml.merges[{}]: '{}' uses or makes a token not in the vocabulary", rank,
                              merge);
      }
      t.merges_.Add(l->second, r->second, {static_cast<int32_t>(rank), m->second});
    }
    TETRA_ASSIGN_OR_RETURN(auto regexes, tokenizer_internal::RegexesForGgufPre(pre));
    TETRA_ASSIGN_OR_RETURN(t.pre_tokenizer_, tokenizer_internal::RegexPreTokenizer::Create(std::move(regexes)));
    t.ignore_merges_ = pre == "llama-bpe" || pre == "llama3" || pre == "llama4" || pre == "gpt-4o";
  } else {
    TETRA_ASSIGN_OR_RETURN(const Json* scores, FindArray(metadata, "tokenizer.ggml.scores", true));
    if (scores->size() != n) {
      return Status::Errorf("tokenizer.ggml.scores: {} entries for {} tokens", scores->size(), n);
    }
    t.scores_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      if (!(*scores)[i].is_number()) return Status::Errorf("tokenizer.ggml.scores[{}]: expected a number", i);
      t.scores_[i] = (*scores)[i].get<float>();
    }
    t.use_score_merges_ = true;
    TETRA_ASSIGN_OR_RETURN(std::optional<bool> add_space_prefix,
                           FindBool(metadata, "tokenizer.ggml.add_space_prefix"));
    // As SentencePiece (and HF's legacy Prepend normalizer): every text fragment,
    // also one that follows a special token, gets the U+2581 prefix.
    t.space_prefix_ = add_space_prefix.value_or(true) ? SpacePrefix::kEveryFragment : SpacePrefix::kNever;
    t.strip_leading_space_ = add_space_prefix.value_or(true);
    t.byte_fallback_ = true;
  }

  TETRA_ASSIGN_OR_RETURN(t.bos_id_, FindId(metadata, "tokenizer.ggml.bos_token_id"));
  TETRA_ASSIGN_OR_RETURN(t.eos_id_, FindId(metadata, "tokenizer.ggml.eos_token_id"));
  TETRA_ASSIGN_OR_RETURN(t.unknown_id_, FindId(metadata, "tokenizer.ggml.unknown_token_id"));
  for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    TETRA_ASSIGN_OR_RETURN(std::optional<int32_t> id, FindId(metadata, key));
    if (id) t.stop_ids_.push_back(*id);
  }
  TETRA_ASSIGN_OR_RETURN(std::optional<bool> add_bos, FindBool(metadata, "tokenizer.ggml.add_bos_token"));
  TETRA_ASSIGN_OR_RETURN(std::optional<bool> add_eos, FindBool(metadata, "tokenizer.ggml.add_eos_token"));
  // llama.cpp's defaults: SentencePiece models add BOS unless told otherwise.
  t.add_bos_ = add_bos.value_or(t.kind_ == Kind::kSentencePiece) && t.bos_id_.has_value();
  t.add_eos_ = add_eos.value_or(false);

  for (size_t i = 0; i < n; ++i) {
    TokenType type = t.token_types_[i];
    if (type == TokenType::kControl || type == TokenType::kUserDefined) {
      t.AddAddedToken({static_cast<int32_t>(i), type == TokenType::kControl});
    }
  }
  TETRA_RETURN_IF_ERROR(t.Finish());
  return tokenizer;
}

}  // namespace tetra
