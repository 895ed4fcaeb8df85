#include "serving/openai_protocol.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

namespace tetra::serving {
namespace {

using Json = nlohmann::ordered_json;

// A short rendering of a JSON value for messages ("ten", [1, 2], {...}).
std::string Show(const Json& value) {
  std::string s = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// Arrays and objects nested deeper than this are refused before parsing:
// printing or copying a value recurses once per level, so a small body of
// brackets would overflow the stack. Requests nest a handful of levels.
constexpr int kMaxNesting = 64;

// Whether the JSON text nests arrays and objects more than `limit` deep (exact
// for valid JSON and for the prefix a parser reads before a syntax error).
bool NestedTooDeeply(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

// Reads one request's fields; the first error wins.
class Reader {
 public:
  explicit Reader(const Json& body) : body_(body) {}

  const std::optional<ApiError>& error() const { return error_; }
  bool failed() const { return error_.has_value(); }

  // The field, or null when absent (null counts as absent everywhere).
  const Json* Get(const char* key) const {
    auto it = body_.find(key);
    return it == body_.end() || it->is_null() ? nullptr : &*it;
  }

  void Fail(std::string message, const std::string& param) {
    if (!error_) error_ = InvalidRequest(std::move(message), param);
  }

  void Bool(const char* key, bool* out) {
    const Json* v = Get(key);
    if (!v || failed()) return;
    if (!v->is_boolean()) return Fail(fmt::format("{} must be true or false, got {}", key, Show(*v)), key);
    *out = v->get<bool>();
  }

  // An integer in [lo, hi].
  template <typename T>
  void Int(const char* key, int64_t lo, int64_t hi, T* out) {
    const Json* v = Get(key);
    if (!v || failed()) return;
    if (!v->is_number_integer()) return Fail(fmt::format("{} must be an integer, got {}", key, Show(*v)), key);
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi)) {
      return Fail(fmt::format("{} must be in [{}, {}], got {}", key, lo, hi, Show(*v)), key);
    }
    const int64_t x = v->get<int64_t>();
    if (x < lo || x > hi) return Fail(fmt::format("{} must be in [{}, {}], got {}", key, lo, hi, x), key);
    *out = static_cast<T>(x);
  }

  // A finite number; the sampler's validation checks its range later.
  void Number(const char* key, float* out) {
    const Json* v = Get(key);
    if (!v || failed()) return;
    if (!v->is_number()) return Fail(fmt::format("{} must be a number, got {}", key, Show(*v)), key);
    const double x = v->get<double>();
    if (!std::isfinite(x) || std::fabs(x) > 1e30) {
      return Fail(fmt::format("{} must be a finite number, got {}", key, Show(*v)), key);
    }
    *out = static_cast<float>(x);
  }

  void String(const char* key, std::string* out) {
    const Json* v = Get(key);
    if (!v || failed()) return;
    if (!v->is_string()) return Fail(fmt::format("{} must be a string, got {}", key, Show(*v)), key);
    *out = v->get<std::string>();
  }

  // A token id list: integers in [0, vocab).
  bool TokenIds(const Json& list, const std::string& what, int64_t vocab, std::vector<int32_t>* out) {
    for (const Json& id : list) {
      if (!id.is_number_integer()) {
        Fail(fmt::format("{} must hold token ids (integers), got {}", what, Show(id)), what);
        return false;
      }
      const int64_t x = id.get<int64_t>();
      if (id.is_number_unsigned() ? id.get<uint64_t>() >= static_cast<uint64_t>(vocab) : (x < 0 || x >= vocab)) {
        Fail(fmt::format("{}: token id {} is outside the vocabulary of {}", what, Show(id), vocab), what);
        return false;
      }
      out->push_back(static_cast<int32_t>(x));
    }
    return true;
  }

 private:
  const Json& body_;
  std::optional<ApiError> error_;
};

void ReadPrompt(Reader& r, int64_t vocab, ApiRequest* out) {
  const Json* prompt = r.Get("prompt");
  if (r.failed()) return;
  if (!prompt) return r.Fail("prompt is required", "prompt");
  auto add_text = [&](const Json& text) {
    if (text.get_ref<const std::string&>().empty()) return r.Fail("prompt must not be empty", "prompt");
    out->prompts.push_back({text.get<std::string>(), {}, false});
  };
  auto add_ids = [&](const Json& ids) {
    if (ids.empty()) return r.Fail("prompt must not be empty", "prompt");
    ApiPrompt p;
    p.is_ids = true;
    if (r.TokenIds(ids, "prompt", vocab, &p.ids)) out->prompts.push_back(std::move(p));
  };
  if (prompt->is_string()) return add_text(*prompt);
  if (!prompt->is_array()) {
    return r.Fail(fmt::format("prompt must be a string, a list of strings or token ids, got {}", Show(*prompt)),
                  "prompt");
  }
  if (prompt->empty()) return r.Fail("prompt must not be empty", "prompt");
  if ((*prompt)[0].is_number()) return add_ids(*prompt);
  if (prompt->size() > static_cast<size_t>(kMaxPromptsPerRequest)) {
    return r.Fail(fmt::format("prompt lists {} prompts; at most {} per request", prompt->size(), kMaxPromptsPerRequest),
                  "prompt");
  }
  for (const Json& item : *prompt) {
    if (item.is_string()) {
      add_text(item);
    } else if (item.is_array()) {
      add_ids(item);
    } else {
      r.Fail(fmt::format("prompt must be a string, a list of strings or token ids, got {}", Show(item)), "prompt");
    }
    if (r.failed()) return;
  }
}

void ReadMessages(Reader& r, ApiRequest* out) {
  const Json* messages = r.Get("messages");
  if (r.failed()) return;
  if (!messages) return r.Fail("messages is required", "messages");
  if (!messages->is_array()) return r.Fail(fmt::format("messages must be a list, got {}", Show(*messages)), "messages");
  if (messages->empty()) return r.Fail("messages must not be empty", "messages");
  out->messages = Json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const Json& m = (*messages)[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) return r.Fail(fmt::format("{} must be an object, got {}", where, Show(m)), "messages");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) return r.Fail(where + ".role must be a string", "messages");
    const std::string& name = role->get_ref<const std::string&>();
    if (name != "system" && name != "developer" && name != "user" && name != "assistant" && name != "tool") {
      return r.Fail(fmt::format("{}.role must be system, developer, user, assistant or tool, got {}", where, Show(*role)),
                    "messages");
    }
    Json message = m;
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      if (name != "assistant") return r.Fail(where + ".content is required", "messages");
      message["content"] = "";
    } else if (content->is_array()) {
      std::string joined;
      for (size_t j = 0; j < content->size(); ++j) {
        const Json& part = (*content)[j];
        auto type = part.is_object() ? part.find("type") : part.end();
        if (type == part.end() || !type->is_string()) {
          return r.Fail(fmt::format("{}.content[{}] must be an object with a type", where, j), "messages");
        }
        if (*type != "text") {
          return r.Fail(fmt::format("{}.content[{}]: type {} is not supported (text only)", where, j, Show(*type)),
                        "messages");
        }
        auto text = part.find("text");
        if (text == part.end() || !text->is_string()) {
          return r.Fail(fmt::format("{}.content[{}].text must be a string", where, j), "messages");
        }
        if (j) joined += "\n";
        joined += text->get_ref<const std::string&>();
      }
      message["content"] = joined;
    } else if (!content->is_string()) {
      return r.Fail(fmt::format("{}.content must be a string or a list of text parts, got {}", where, Show(*content)),
                    "messages");
    }
    out->messages.push_back(std::move(message));
  }
}

void ReadStop(Reader& r, ApiRequest* out) {
  const Json* stop = r.Get("stop");
  if (!stop || r.failed()) return;
  auto add = [&](const Json& s) {
    if (!s.is_string()) return r.Fail(fmt::format("stop must be a string or a list of strings, got {}", Show(s)), "stop");
    if (s.get_ref<const std::string&>().empty()) return r.Fail("stop strings must not be empty", "stop");
    out->stop.push_back(s.get<std::string>());
  };
  if (stop->is_array()) {
    if (stop->size() > static_cast<size_t>(kMaxStopStrings)) {
      return r.Fail(fmt::format("stop lists {} strings; at most {}", stop->size(), kMaxStopStrings), "stop");
    }
    for (const Json& s : *stop) {
      add(s);
      if (r.failed()) return;
    }
  } else {
    add(*stop);
  }
}

void ReadLogitBias(Reader& r, int64_t vocab, ApiRequest* out) {
  const Json* bias = r.Get("logit_bias");
  if (!bias || r.failed()) return;
  if (!bias->is_object()) return r.Fail(fmt::format("logit_bias must be an object, got {}", Show(*bias)), "logit_bias");
  for (auto it = bias->begin(); it != bias->end(); ++it) {
    const std::string& key = it.key();
    int64_t id = -1;
    size_t used = 0;
    try {
      id = std::stoll(key, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != key.size()) {
      return r.Fail(fmt::format("logit_bias keys must be token ids, got \"{}\"", key), "logit_bias");
    }
    if (id < 0 || id >= vocab) {
      return r.Fail(fmt::format("logit_bias token id {} is outside the vocabulary of {}", id, vocab), "logit_bias");
    }
    if (!it.value().is_number()) {
      return r.Fail(fmt::format("logit_bias values must be numbers, got {}", Show(it.value())), "logit_bias");
    }
    out->sampling.logit_bias.emplace_back(static_cast<int32_t>(id), it.value().get<float>());
  }
}

}  // namespace

ApiError InvalidRequest(std::string message, std::string param) {
  return ApiError{400, "invalid_request_error", std::move(message), std::move(param)};
}

std::string ErrorBody(const ApiError& error) {
  Json body = {{"error",
                {{"message", error.message},
                 {"type", error.type},
                 {"param", error.param.empty() ? Json(nullptr) : Json(error.param)},
                 {"code", error.http_status}}}};
  return body.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::optional<ApiError> ParseApiRequest(ApiKind kind, std::string_view text, int64_t vocab_size, ApiRequest* out) {
  *out = ApiRequest{};
  out->kind = kind;
  if (NestedTooDeeply(text, kMaxNesting)) {
    return InvalidRequest(fmt::format("the request body nests arrays and objects more than {} deep", kMaxNesting));
  }
  const Json body = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return InvalidRequest("the request body is not valid JSON (UTF-8)");
  if (!body.is_object()) return InvalidRequest(fmt::format("the request body must be a JSON object, got {}", Show(body)));
  Reader r(body);

  r.String("model", &out->model);
  r.Bool("stream", &out->stream);
  if (const Json* options = r.Get("stream_options"); options && !r.failed()) {
    if (!options->is_object()) {
      r.Fail(fmt::format("stream_options must be an object, got {}", Show(*options)), "stream_options");
    } else {
      Reader(*options).Bool("include_usage", &out->include_usage);
      auto usage = options->find("include_usage");
      if (usage != options->end() && !usage->is_boolean() && !usage->is_null()) {
        r.Fail("stream_options.include_usage must be true or false", "stream_options");
      }
    }
  }
  r.Int("n", 1, kMaxChoices, &out->n);
  if (kind == ApiKind::kChat) {
    int64_t max_tokens = 0;
    r.Int("max_tokens", 1, std::numeric_limits<int32_t>::max(), &max_tokens);
    if (r.Get("max_tokens") && !r.failed()) out->max_tokens = max_tokens;
    r.Int("max_completion_tokens", 1, std::numeric_limits<int32_t>::max(), &max_tokens);
    if (r.Get("max_completion_tokens") && !r.failed()) out->max_tokens = max_tokens;
  } else {
    int64_t max_tokens = 16;
    r.Int("max_tokens", 1, std::numeric_limits<int32_t>::max(), &max_tokens);
    out->max_tokens = max_tokens;
  }
  SamplingParams& s = out->sampling;
  r.Number("temperature", &s.temperature);
  r.Number("top_p", &s.top_p);
  r.Int("top_k", -1, std::numeric_limits<int32_t>::max(), &s.top_k);
  r.Number("min_p", &s.min_p);
  r.Number("repetition_penalty", &s.repetition_penalty);
  r.Number("presence_penalty", &s.presence_penalty);
  r.Number("frequency_penalty", &s.frequency_penalty);
  if (const Json* seed = r.Get("seed"); seed && !r.failed()) {
    if (!seed->is_number_integer()) {
      r.Fail(fmt::format("seed must be an integer, got {}", Show(*seed)), "seed");
    } else {
      s.seed = seed->is_number_unsigned() ? seed->get<uint64_t>() : static_cast<uint64_t>(seed->get<int64_t>());
    }
  }
  ReadLogitBias(r, vocab_size, out);
  ReadStop(r, out);
  if (const Json* ids = r.Get("stop_token_ids"); ids && !r.failed()) {
    if (!ids->is_array()) {
      r.Fail(fmt::format("stop_token_ids must be a list of token ids, got {}", Show(*ids)), "stop_token_ids");
    } else {
      r.TokenIds(*ids, "stop_token_ids", vocab_size, &out->stop_token_ids);
    }
  }
  r.Bool("ignore_eos", &out->ignore_eos);
  r.Bool("include_stop_str_in_output", &out->include_stop_str_in_output);
  r.Bool("skip_special_tokens", &out->skip_special_tokens);
  r.Int("priority", -1000000, 1000000, &out->priority);
  std::string ignored;
  r.String("user", &ignored);

  if (kind == ApiKind::kCompletion) {
    ReadPrompt(r, vocab_size, out);
    r.Bool("echo", &out->echo);
    r.Int("logprobs", 0, kMaxTopLogprobs, &out->logprobs);
    // An empty suffix changes nothing (json's empty() is false for any string).
    const Json* suffix = r.Get("suffix");
    if (suffix && !r.failed() && !(suffix->is_string() && suffix->get_ref<const std::string&>().empty())) {
      r.Fail("suffix is not supported", "suffix");
    }
    int best_of = out->n;
    r.Int("best_of", 1, kMaxChoices, &best_of);
    if (!r.failed() && best_of != out->n) r.Fail("best_of other than n is not supported", "best_of");
  } else {
    ReadMessages(r, out);
    bool logprobs = false;
    r.Bool("logprobs", &logprobs);
    int top = 0;
    r.Int("top_logprobs", 0, kMaxTopLogprobs, &top);
    if (!r.failed() && r.Get("top_logprobs") && !logprobs) r.Fail("top_logprobs needs logprobs: true", "top_logprobs");
    if (logprobs) out->logprobs = top;
    r.Bool("add_generation_prompt", &out->add_generation_prompt);
    r.Bool("continue_final_message", &out->continue_final_message);
    if (!r.failed() && out->continue_final_message && out->add_generation_prompt && r.Get("add_generation_prompt")) {
      r.Fail("continue_final_message and add_generation_prompt cannot both be true", "continue_final_message");
    }
    if (out->continue_final_message) out->add_generation_prompt = false;
    if (const Json* format = r.Get("response_format"); format && !r.failed()) {
      if (!format->is_object() || !format->contains("type") || format->at("type") != "text") {
        r.Fail(fmt::format("response_format {} is not supported (only {{\"type\": \"text\"}})", Show(*format)),
               "response_format");
      }
    }
    if (const Json* tools = r.Get("tools"); tools && !r.failed() && !(tools->is_array() && tools->empty())) {
      r.Fail("tools are not supported", "tools");
    }
    if (const Json* choice = r.Get("tool_choice"); choice && !r.failed() && *choice != "none" && *choice != "auto") {
      r.Fail("tool_choice is not supported", "tool_choice");
    }
    if (r.Get("functions") && !r.failed()) r.Fail("functions are not supported", "functions");
  }
  if (r.failed()) return r.error();

  s.top_logprobs = out->logprobs;
  if (Status status = ValidateSamplingParams(s, vocab_size); !status.ok()) {
    std::string param;
    for (const char* field : {"temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty",
                              "frequency_penalty", "logit_bias", "top_logprobs"}) {
      if (status.message().rfind(field, 0) == 0) param = field;
    }
    return InvalidRequest(status.message(), param);
  }
  return std::nullopt;
}

}  // namespace tetra::serving
