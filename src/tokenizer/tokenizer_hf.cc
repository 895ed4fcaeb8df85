// Tokenizer::FromHfJson: a Hugging Face tokenizer.json (+ tokenizer_config.json).
#include <fstream>
#include <sstream>

#include "tokenizer/tokenizer.h"

namespace tetra {

namespace {
using Json = nlohmann::json;
using tokenizer_internal::EscapeRegexLiteral;

std::string JsonString(const Json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}
bool JsonBool(const Json& object, const char* key, bool fallback) {
  auto it = object.find(key);
  return it != object.end() && it->is_boolean() ? it->get<bool>() : fallback;
}
// A token named in tokenizer_config.json: "text" or {"content": "text", ...}.
std::string ConfigTokenText(const Json& config, const char* key) {
  if (!config.is_object()) return {};
  auto it = config.find(key);
  if (it == config.end()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) return JsonString(*it, "content");
  return {};
}

// Appends the regexes of one HF pre-tokenizer. Sets *is_byte_level for ByteLevel.
Status AddPreTokenizer(const Json& pre, std::vector<std::string>* regexes, bool* is_byte_level,
                       bool* add_prefix_space, Json* metaspace) {
  if (pre.is_null()) return Status::Ok();
  const std::string type = JsonString(pre, "type");
  if (type == "Sequence") {
    for (const Json& item : pre.value("pretokenizers", Json::array())) {
      TETRA_RETURN_IF_ERROR(AddPreTokenizer(item, regexes, is_byte_level, add_prefix_space, metaspace));
    }
  } else if (type == "ByteLevel") {
    *is_byte_level = true;
    *add_prefix_space = JsonBool(pre, "add_prefix_space", false);
    if (JsonBool(pre, "use_regex", true)) regexes->push_back(tokenizer_internal::kGpt2SplitRegex);
  } else if (type == "Split") {
    const std::string behavior = JsonString(pre, "behavior");
    if (behavior != "Isolated") return Status::Errorf("pre_tokenizer Split: unsupported behavior '{}'", behavior);
    if (JsonBool(pre, "invert", false)) return Status::Error("pre_tokenizer Split: invert=true is not supported");
    const Json& pattern = pre.value("pattern", Json::object());
    if (pattern.contains("Regex")) {
      regexes->push_back(pattern["Regex"].get<std::string>());
    } else if (pattern.contains("String")) {
      regexes->push_back(EscapeRegexLiteral(pattern["String"].get<std::string>()));
    } else {
      return Status::Error("pre_tokenizer Split: pattern has neither Regex nor String");
    }
  } else if (type == "Digits") {
    regexes->push_back(JsonBool(pre, "individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)");
  } else if (type == "Punctuation") {
    const std::string behavior = JsonString(pre, "behavior");
    std::string cls = tokenizer_internal::kPunctuationClass;
    if (behavior == "Contiguous") {
      regexes->push_back(cls + "+");
    } else if (behavior == "Isolated" || behavior.empty()) {
      regexes->push_back(cls);
    } else {
      return Status::Errorf("pre_tokenizer Punctuation: unsupported behavior '{}'", behavior);
    }
  } else if (type == "Metaspace") {
    *metaspace = pre;
  } else {
    return Status::Errorf("pre_tokenizer type '{}' is not supported", type);
  }
  return Status::Ok();
}
}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromHfJson(const std::string& path, const nlohmann::json& config) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return Status::Errorf("{}: cannot open", path);
  std::stringstream buffer;
  buffer << file.rdbuf();
  Json root = Json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) return Status::Errorf("{}: not valid JSON", path);

  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  Tokenizer& t = *tokenizer;
  const Json& model = root.value("model", Json::object());
  if (JsonString(model, "type") != "BPE") {
    return Status::Errorf("{}: model type '{}' is not supported (only BPE)", path, JsonString(model, "type"));
  }
  const Json& vocab = model.value("vocab", Json::object());
  if (!vocab.is_object() || vocab.empty()) return Status::Errorf("{}: model.vocab is missing or empty", path);

  // Ids: the vocabulary plus added tokens; the table is as long as the largest id.
  int64_t max_id = -1;
  for (const auto& [text, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24)) {
      return Status::Errorf("{}: model.vocab['{}'] has a bad id", path, text);
    }
    max_id = std::max<int64_t>(max_id, id.get<int64_t>());
  }
  const Json& added = root.value("added_tokens", Json::array());
  for (const Json& token : added) {
    if (!token.contains("id") || !token["id"].is_number_integer() || token["id"].get<int64_t>() < 0 ||
        token["id"].get<int64_t>() > (1 << 24) || !token.contains("content") || !token["content"].is_string()) {
      return Status::Errorf("{}: added_tokens entry {} lacks a valid id or content", path, token.dump());
    }
    max_id = std::max<int64_t>(max_id, token["id"].get<int64_t>());
  }
  t.tokens_.resize(max_id + 1);
  t.token_types_.assign(max_id + 1, TokenType::kNormal);
  for (const auto& [text, id] : vocab.items()) t.tokens_[id.get<int32_t>()] = text;
  for (const Json& token : added) {
    int32_t id = token["id"].get<int32_t>();
    t.tokens_[id] = token["content"].get<std::string>();
    bool special = JsonBool(token, "special", false);
    t.token_types_[id] = special ? TokenType::kControl : TokenType::kUserDefined;
    t.AddAddedToken({id, special, JsonBool(token, "lstrip", false), JsonBool(token, "rstrip", false),
                     JsonBool(token, "normalized", !special)});
  }
  for (int32_t id = 0; id <= max_id; ++id) {
    const std::string& text = t.tokens_[id];
    if (t.token_types_[id] == TokenType::kNormal && text.size() == 6 && text.starts_with("<0x") && text.back() == '>') {
      t.token_types_[id] = TokenType::kByte;
    }
  }

  // Merges: "a b" strings (older files) or ["a", "b"] pairs.
  std::unordered_map<std::string, int32_t> ids;
  for (const auto& [text, id] : vocab.items()) ids.emplace(text, id.get<int32_t>());
  const Json& merges = model.value("merges", Json::array());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const Json& merge = merges[rank];
    std::string left, right;
    if (merge.is_string()) {
      const std::string& s = merge.get_ref<const std::string&>();
      size_t space = s.find(' ', 1);
      if (space == std::string::npos) return Status::Errorf("{}: model.merges[{}] '{}' has no space", path, rank, s);
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      return Status::Errorf("{}: model.merges[{}] is neither \"a b\" nor [a, b]", path, rank);
    }
    auto l = ids.find(left), r = ids.find(right), m = ids.find(left + right);
    if (l == ids.end() || r == ids.end() || m == ids.end()) {
      return Status::Errorf("{}: model.merges[{}] '{} {}' uses or makes a token not in the vocabulary", path, rank,
                            left, right);
    }
    t.merges_.Add(l->second, r->second, {static_cast<int32_t>(rank), m->second});
  }
  t.ignore_merges_ = JsonBool(model, "ignore_merges", false);
  t.byte_fallback_ = JsonBool(model, "byte_fallback", false);
  if (std::string unk = JsonString(model, "unk_token"); !unk.empty()) {
    auto it = ids.find(unk);
    if (it != ids.end()) t.unknown_id_ = it->second;
  }

  // The normalizer runs on the text between added tokens (Encode); an empty
  // Sequence or a missing one changes nothing and is dropped.
  auto normalizer = tokenizer_internal::Normalizer::FromJson(root.value("normalizer", Json()));
  if (!normalizer.ok()) return normalizer.status().WithPrefix(path + ": ");
  if (!(*normalizer)->is_identity()) t.normalizer_ = std::move(*normalizer);

  // The pre-tokenizer decides the kind.
  std::vector<std::string> regexes;
  bool is_byte_level = false;
  Json metaspace;
  TETRA_RETURN_IF_ERROR(AddPreTokenizer(root.value("pre_tokenizer", Json()), &regexes, &is_byte_level,
                                        &t.byte_level_add_prefix_space_, &metaspace)
                            .WithPrefix(path + ": "));
  const Json& decoder = root.value("decoder", Json());
  if (JsonString(decoder, "type") == "ByteLevel") is_byte_level = true;
  t.model_name_ = is_byte_level ? "hf byte-level bpe" : "hf sentencepiece bpe";
  if (is_byte_level) {
    t.kind_ = Kind::kByteLevel;
    if (!metaspace.is_null()) return Status::Errorf("{}: Metaspace with ByteLevel is not supported", path);
    auto pre_tokenizer = tokenizer_internal::RegexPreTokenizer::Create(std::move(regexes));
    if (!pre_tokenizer.ok()) return pre_tokenizer.status().WithPrefix(path + ": ");
    t.pre_tokenizer_ = *pre_tokenizer;
  } else {
    t.kind_ = Kind::kSentencePiece;
    if (!regexes.empty()) return Status::Errorf("{}: regex pre-tokenizers without ByteLevel are not supported", path);
    t.replace_spaces_ = false;
    if (!metaspace.is_null()) {
      if (JsonString(metaspace, "replacement") != "\xE2\x96\x81") {
        return Status::Errorf("{}: Metaspace replacement other than U+2581 is not supported", path);
      }
      t.replace_spaces_ = true;
      std::string scheme = JsonString(metaspace, "prepend_scheme");
      if (scheme.empty()) scheme = JsonBool(metaspace, "add_prefix_space", true) ? "always" : "never";
      t.space_prefix_ = scheme == "always" ? SpacePrefix::kEveryFragment
                        : scheme == "first" ? SpacePrefix::kFirstFragment
                                            : SpacePrefix::kNever;
      t.space_prefix_only_if_missing_ = true;
      t.split_on_space_marker_ = JsonBool(metaspace, "split", true);
    }
    // Decoders of SentencePiece-style files end with Strip(" ", 1) or Metaspace.
    const std::string decoder_text = decoder.dump();
    t.strip_leading_space_ = decoder_text.find("\"Strip\"") != std::string::npos ||
                             (JsonString(decoder, "type") == "Metaspace" &&
                              JsonString(decoder, "prepend_scheme") != "never");
  }

  // BOS/EOS from the post-processor template, overridden by tokenizer_config.json.
  const Json& post = root.value("post_processor", Json());
  std::vector<const Json*> templates;
  if (JsonString(post, "type") == "TemplateProcessing") {
    templates.push_back(&post);
  } else if (JsonString(post, "type") == "Sequence") {
    for (const Json& p : post.value("processors", Json::array())) {
      if (JsonString(p, "type") == "TemplateProcessing") templates.push_back(&p);
    }
  }
  auto id_of = [&](const std::string& text) -> std::optional<int32_t> {
    for (int32_t id = 0; id <= max_id; ++id) {
      if (t.token_types_[id] != TokenType::kNormal && t.tokens_[id] == text) return id;
    }
    auto it = ids.find(text);
    if (it != ids.end()) return it->second;
    return std::nullopt;
  };
  for (const Json* tmpl : templates) {
    const Json& single = tmpl->value("single", Json::array());
    bool seen_sequence = false;
    for (const Json& item : single) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        std::optional<int32_t> id = id_of(item["SpecialToken"].value("id", ""));
        if (!id) continue;
        if (!seen_sequence) {
          t.bos_id_ = id;
          t.add_bos_ = true;
        } else {
          t.eos_id_ = id;
          t.add_eos_ = true;
        }
      }
    }
  }
  if (std::string bos = ConfigTokenText(config, "bos_token"); !bos.empty()) {
    if (auto id = id_of(bos)) t.bos_id_ = id;
  }
  if (std::string eos = ConfigTokenText(config, "eos_token"); !eos.empty()) {
    if (auto id = id_of(eos)) t.eos_id_ = id;
  }
  if (config.is_object()) {
    t.add_bos_ = JsonBool(config, "add_bos_token", t.add_bos_);
    t.add_eos_ = JsonBool(config, "add_eos_token", t.add_eos_);
  }
  if (t.add_bos_ && !t.bos_id_) t.add_bos_ = false;
  if (t.add_eos_ && !t.eos_id_) t.add_eos_ = false;
  TETRA_RETURN_IF_ERROR(t.Finish().WithPrefix(path + ": "));
  return tokenizer;
}

}  // namespace tetra
