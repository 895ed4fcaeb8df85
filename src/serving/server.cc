#include "serving/server.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <ctime>
#include <string_view>
#include <vector>

#include "base/logging.h"
#include "model/model.h"
#include "serving/openai_protocol.h"
#include "serving/prometheus.h"
#include "tokenizer/tokenizer.h"

namespace tetra::serving {

extern const std::string_view kChatPageHtml;  // web_page.cc, generated from web/index.html

namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kJson = "application/json";

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

void RespondError(HttpExchange& exchange, const ApiError& error) {
  exchange.Respond(error.http_status, kJson, ErrorBody(error));
}

ApiError ServerError(int status, std::string type, std::string message) {
  ApiError e;
  e.http_status = status;
  e.type = std::move(type);
  e.message = std::move(message);
  return e;
}

// API keys compared without an early exit (the length is not secret).
bool SameKey(std::string_view a, std::string_view b) {
  if (a.size() != b.size() || b.empty()) return false;
  unsigned diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i]);
  return diff == 0;
}

// One sample of one prompt, as the answer builds it.
struct Choice {
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<TokenLogprobs> logprobs;
  std::string finish_reason;  // "" while running
  size_t text_offset = 0;     // completions logprobs: where the next token's text starts
};

// One HTTP generation call: one engine request per prompt, n samples each.
class Call : public std::enable_shared_from_this<Call> {
 public:
  Call(OpenAiServer* server, Engine* engine, std::shared_ptr<HttpExchange> exchange, ApiRequest request,
       std::string model_name, uint64_t number)
      : server_(server),
        engine_(engine),
        exchange_(std::move(exchange)),
        request_(std::move(request)),
        model_name_(std::move(model_name)),
        tokenizer_(*engine->model().tokenizer) {
    chat_ = request_.kind == ApiKind::kChat;
    id_ = fmt::format("{}-{:016x}", chat_ ? "chatcmpl" : "cmpl", number * 0x9E3779B97F4A7C15ull);
    created_ = static_cast<int64_t>(std::time(nullptr));
  }
  ~Call() { server_->CallEnded(); }

  // Prompts of at least min_tokens are prefilled at this prefill instance
  // (a decode instance behind the router).
  void PrefillAt(std::string url, int min_tokens) {
    prefill_url_ = std::move(url);
    prefill_min_tokens_ = min_tokens;
  }

  // Tokenizes, checks and submits; answers errors itself.
  void Start();

 private:
  Status Tokenize(std::vector<std::vector<int32_t>>* prompts, std::vector<std::string>* echoes);
  void OnUpdate(size_t prompt, RequestUpdate&& update);
  void FinishLocked();
  Json LogprobsJson(Choice& choice, size_t first, size_t count);
  Json ChunkBase() const;
  // Answers `error`: as a last SSE event once the stream started, else as the response.
  void AnswerErrorLocked(const ApiError& error);
  Json UsageJson() const;
  void AbortAll();

  OpenAiServer* server_;
  Engine* engine_;
  std::shared_ptr<HttpExchange> exchange_;
  ApiRequest request_;
  std::string prefill_url_;
  int prefill_min_tokens_ = 0;
  std::string model_name_;
  const Tokenizer& tokenizer_;
  bool chat_ = false;
  std::string id_;
  int64_t created_ = 0;

  std::mutex mu_;
  std::vector<uint64_t> engine_ids_;   // per prompt; 0 before submission
  std::vector<bool> prompt_done_;
  std::vector<RequestUsage> usage_;    // per prompt
  std::vector<Choice> choices_;        // prompt * n + sample
  size_t prompts_left_ = 0;
  bool answered_ = false;              // the HTTP answer ended (or the client left)
  Status error_;                       // first engine error
  bool aborted_ = false;               // a request ended by abort (client gone, shutdown)
};

Status Call::Tokenize(std::vector<std::vector<int32_t>>* prompts, std::vector<std::string>* echoes) {
  const Model& model = engine_->model();
  if (!chat_) {
    for (const ApiPrompt& p : request_.prompts) {
      if (p.is_ids) {
        prompts->push_back(p.ids);
        echoes->push_back(request_.echo ? tokenizer_.Decode(p.ids, request_.skip_special_tokens) : "");
      } else {
        prompts->push_back(tokenizer_.Encode(p.text, /*add_special=*/true, /*parse_special=*/true));
        echoes->push_back(request_.echo ? p.text : "");
      }
    }
    return Status::Ok();
  }
  if (!model.chat_template) return Status::Error("this model has no chat template; use /v1/completions");
  // As transformers' apply_chat_template calls it (tools and documents null).
  Json context = {
      {"messages", request_.messages},
      {"tools", nullptr},
      {"documents", nullptr},
      {"add_generation_prompt", request_.add_generation_prompt},
      {"bos_token", model.bos_text()},
      {"eos_token", model.eos_text()},
  };
  auto rendered = model.chat_template->Render(context);
  if (!rendered.ok()) return Status::Error("messages: the chat template failed: " + rendered.status().message());
  std::string text = std::move(*rendered);
  if (request_.continue_final_message) {
    // The final message stays open: cut what the template put after its content.
    const Json& last = request_.messages.back();
    const std::string content = last.value("content", "");
    const size_t at = content.empty() ? std::string::npos : text.rfind(content);
    if (at == std::string::npos) {
      return Status::Error("continue_final_message: the final message's content is not in the rendered template");
    }
    text.resize(at + content.size());
  }
  prompts->push_back(tokenizer_.Encode(text, /*add_special=*/false, /*parse_special=*/true));
  echoes->push_back("");
  return Status::Ok();
}

void Call::Start() {
  if (request_.echo && request_.logprobs >= 0) {
    return RespondError(*exchange_, InvalidRequest("echo with logprobs is not supported (no prompt logprobs)", "echo"));
  }
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> echoes;
  if (Status s = Tokenize(&prompts, &echoes); !s.ok()) {
    return RespondError(*exchange_, InvalidRequest(s.message(), chat_ ? "messages" : "prompt"));
  }
  const int64_t context = engine_->model().config().max_position;
  std::vector<EngineRequest> requests;
  for (const std::vector<int32_t>& prompt : prompts) {
    EngineRequest r;
    r.prompt = prompt;
    r.sampling = request_.sampling;
    r.n = request_.n;
    int64_t max_tokens = request_.max_tokens.value_or(std::max<int64_t>(1, context - static_cast<int64_t>(prompt.size())));
    r.max_tokens = static_cast<int>(std::min<int64_t>(max_tokens, std::numeric_limits<int>::max()));
    r.stop = request_.stop;
    r.stop_token_ids = request_.stop_token_ids;
    r.ignore_eos = request_.ignore_eos;
    r.include_stop_string = request_.include_stop_str_in_output;
    r.skip_special_tokens = request_.skip_special_tokens;
    r.priority = request_.priority;
    if (!prefill_url_.empty() && static_cast<int64_t>(prompt.size()) >= std::max(2, prefill_min_tokens_)) {
      r.kv_handoff = EngineRequest::KvHandoff::kImport;
      r.kv_peer = prefill_url_;
    }
    if (prompt.empty()) {
      return RespondError(*exchange_, InvalidRequest(chat_ ? "messages render to an empty prompt" : "prompt must not be empty",
                                                     chat_ ? "messages" : "prompt"));
    }
    if (Status s = engine_->Validate(r); !s.ok()) {
      std::string param;
      if (s.message().find("context length") != std::string::npos) {
        param = chat_ ? "messages" : "prompt";
      } else if (s.message().rfind("max_tokens", 0) == 0) {
        param = "max_tokens";
      } else if (s.message().rfind("n ", 0) == 0) {
        param = "n";
      } else if (s.message().rfind("stop", 0) == 0) {
        param = "stop";
      }
      return RespondError(*exchange_, InvalidRequest(s.message(), param));
    }
    requests.push_back(std::move(r));
  }

  {
    std::lock_guard lock(mu_);
    const size_t n = static_cast<size_t>(request_.n);
    engine_ids_.assign(requests.size(), 0);
    prompt_done_.assign(requests.size(), false);
    usage_.assign(requests.size(), {});
    choices_.resize(requests.size() * n);
    for (size_t p = 0; p < requests.size(); ++p) {
      for (size_t i = 0; i < n; ++i) choices_[p * n + i].text = echoes[p];
    }
    prompts_left_ = requests.size();
    if (request_.stream) {
      exchange_->StartStream(200, "text/event-stream");
      if (chat_) {
        // Every choice opens with the assistant's role, as OpenAI's streams do.
        for (size_t c = 0; c < choices_.size(); ++c) {
          Json chunk = ChunkBase();
          chunk["choices"] = Json::array({{{"index", c},
                                           {"delta", {{"role", "assistant"}, {"content", ""}}},
                                           {"logprobs", nullptr},
                                           {"finish_reason", nullptr}}});
          exchange_->Write("data: " + Dump(chunk) + "\n\n");
        }
      } else if (request_.echo) {
        for (size_t c = 0; c < choices_.size(); ++c) {
          if (choices_[c].text.empty()) continue;
          Json chunk = ChunkBase();
          chunk["choices"] = Json::array(
              {{{"index", c}, {"text", choices_[c].text}, {"logprobs", nullptr}, {"finish_reason", nullptr}}});
          exchange_->Write("data: " + Dump(chunk) + "\n\n");
        }
      }
    }
  }
  std::weak_ptr<Call> weak = weak_from_this();
  exchange_->OnDisconnect([weak] {
    if (auto self = weak.lock()) {
      {
        std::lock_guard lock(self->mu_);
        self->answered_ = true;
      }
      self->AbortAll();
    }
  });

  for (size_t p = 0; p < requests.size(); ++p) {
    auto self = shared_from_this();
    auto submitted = engine_->Submit(std::move(requests[p]),
                                     [self, p](RequestUpdate&& update) { self->OnUpdate(p, std::move(update)); });
    if (!submitted.ok()) {
      AbortAll();
      std::lock_guard lock(mu_);
      if (!answered_) {
        answered_ = true;
        const bool busy = submitted.status().code() == StatusCode::kResourceExhausted;
        const ApiError e = ServerError(busy ? 429 : 503, busy ? "rate_limit_error" : "server_error",
                                       busy ? "the server's queue is full; retry later: " + submitted.status().message()
                                            : "the server is shutting down");
        AnswerErrorLocked(e);
      }
      return;
    }
    std::lock_guard lock(mu_);
    if (!prompt_done_[p]) engine_ids_[p] = *submitted;
    if (answered_) {
      // The client left while we submitted.
      engine_->Abort(*submitted);
    }
  }
}

void Call::AbortAll() {
  std::vector<uint64_t> ids;
  {
    std::lock_guard lock(mu_);
    for (size_t p = 0; p < engine_ids_.size(); ++p) {
      if (engine_ids_[p] != 0 && !prompt_done_[p]) ids.push_back(engine_ids_[p]);
    }
  }
  for (uint64_t id : ids) engine_->Abort(id);
}

Json Call::ChunkBase() const {
  return Json{{"id", id_}, {"object", chat_ ? "chat.completion.chunk" : "text_completion"}, {"created", created_},
              {"model", model_name_}};
}

Json Call::UsageJson() const {
  int64_t prompt = 0, completion = 0, cached = 0;
  for (const RequestUsage& u : usage_) {
    prompt += u.prompt_tokens;
    completion += u.completion_tokens;
    cached += u.cached_prompt_tokens;
  }
  return Json{{"prompt_tokens", prompt},
              {"completion_tokens", completion},
              {"total_tokens", prompt + completion},
              {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

// Logprobs of choice.logprobs[first, first + count) in the API's shape.
Json Call::LogprobsJson(Choice& choice, size_t first, size_t count) {
  auto token_text = [&](int32_t id) { return tokenizer_.TokenBytes(id, /*skip_special=*/false); };
  auto bytes_of = [](const std::string& s) {
    Json b = Json::array();
    for (unsigned char c : s) b.push_back(static_cast<int>(c));
    return b;
  };
  if (chat_) {
    Json content = Json::array();
    for (size_t i = first; i < first + count; ++i) {
      const TokenLogprobs& t = choice.logprobs[i];
      const std::string text = token_text(t.token);
      Json top = Json::array();
      for (const TokenLogprob& alt : t.top) {
        const std::string alt_text = token_text(alt.token);
        top.push_back({{"token", alt_text}, {"logprob", alt.logprob}, {"bytes", bytes_of(alt_text)}});
      }
      content.push_back({{"token", text}, {"logprob", t.logprob}, {"bytes", bytes_of(text)}, {"top_logprobs", top}});
    }
    return Json{{"content", content}};
  }
  Json tokens = Json::array(), token_logprobs = Json::array(), top_logprobs = Json::array(),
       offsets = Json::array();
  for (size_t i = first; i < first + count; ++i) {
    const TokenLogprobs& t = choice.logprobs[i];
    const std::string text = token_text(t.token);
    tokens.push_back(text);
    token_logprobs.push_back(t.logprob);
    Json top = Json::object();
    for (const TokenLogprob& alt : t.top) {
      std::string alt_text = token_text(alt.token);
      if (!top.contains(alt_text)) top[alt_text] = alt.logprob;
    }
    top_logprobs.push_back(top);
    offsets.push_back(choice.text_offset);
    choice.text_offset += text.size();
  }
  return Json{{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top_logprobs},
              {"text_offset", offsets}};
}

void Call::OnUpdate(size_t prompt, RequestUpdate&& update) {
  std::lock_guard lock(mu_);
  usage_[prompt] = update.usage;
  if (update.finished && !update.error.ok() && error_.ok()) error_ = update.error;
  const size_t n = static_cast<size_t>(request_.n);
  std::string stream_out;
  for (SampleUpdate& s : update.samples) {
    const size_t index = prompt * n + static_cast<size_t>(s.index);
    Choice& c = choices_[index];
    const size_t first = c.logprobs.size();
    c.tokens.insert(c.tokens.end(), s.tokens.begin(), s.tokens.end());
    for (TokenLogprobs& l : s.logprobs) c.logprobs.push_back(std::move(l));
    if (s.finish) {
      if (*s.finish == FinishReason::kAbort) aborted_ = true;
      c.finish_reason = FinishReasonName(*s.finish);
    }
    if (!request_.stream) {
      c.text += s.text;
      continue;
    }
    if (answered_ || (s.text.empty() && !s.finish && c.logprobs.size() == first)) continue;
    if (s.finish && *s.finish == FinishReason::kError) continue;  // reported as an error event
    Json choice = {{"index", index}};
    if (chat_) {
      Json delta = Json::object();
      if (!s.text.empty()) delta["content"] = s.text;
      choice["delta"] = delta;
    } else {
      choice["text"] = s.text;
    }
    choice["logprobs"] = c.logprobs.size() > first ? LogprobsJson(c, first, c.logprobs.size() - first) : Json(nullptr);
    choice["finish_reason"] = s.finish ? Json(FinishReasonName(*s.finish)) : Json(nullptr);
    if (!s.stop_string.empty()) choice["stop_reason"] = s.stop_string;
    if (s.stop_token) choice["stop_reason"] = *s.stop_token;
    Json chunk = ChunkBase();
    chunk["choices"] = Json::array({choice});
    stream_out += "data: " + Dump(chunk) + "\n\n";
  }
  if (!stream_out.empty()) exchange_->Write(std::move(stream_out));
  if (update.finished && !prompt_done_[prompt]) {
    prompt_done_[prompt] = true;
    --prompts_left_;
    if (!update.error.ok()) {
      // One prompt failed: the others cannot make a whole answer.
      for (size_t p = 0; p < engine_ids_.size(); ++p) {
        if (!prompt_done_[p] && engine_ids_[p] != 0) engine_->Abort(engine_ids_[p]);
      }
    }
  }
  if (prompts_left_ == 0) FinishLocked();
}

void Call::AnswerErrorLocked(const ApiError& error) {
  if (!request_.stream) return RespondError(*exchange_, error);
  exchange_->Write("data: " + ErrorBody(error) + "\n\ndata: [DONE]\n\n");
  exchange_->End();
}

void Call::FinishLocked() {
  if (answered_) return;
  answered_ = true;
  if (!error_.ok()) {
    const ApiError e = ServerError(500, "server_error", "the request failed: " + error_.message());
    TETRA_LOG_WARN("{}: {}", id_, error_.message());
    return AnswerErrorLocked(e);
  }
  if (request_.stream) {
    std::string out;
    if (request_.include_usage) {
      Json chunk = ChunkBase();
      chunk["choices"] = Json::array();
      chunk["usage"] = UsageJson();
      out += "data: " + Dump(chunk) + "\n\n";
    }
    out += "data: [DONE]\n\n";
    exchange_->Write(std::move(out));
    exchange_->End();
    return;
  }
  if (aborted_) {
    RespondError(*exchange_, ServerError(503, "server_error", "the request was cancelled: the server is shutting down"));
    return;
  }
  Json choices = Json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    Choice& c = choices_[i];
    Json logprobs = nullptr;
    if (request_.logprobs >= 0) logprobs = LogprobsJson(c, 0, c.logprobs.size());
    if (chat_) {
      choices.push_back({{"index", i},
                         {"message", {{"role", "assistant"}, {"content", c.text}}},
                         {"logprobs", logprobs},
                         {"finish_reason", c.finish_reason}});
    } else {
      choices.push_back({{"index", i}, {"text", c.text}, {"logprobs", logprobs}, {"finish_reason", c.finish_reason}});
    }
  }
  Json body = {{"id", id_}, {"object", chat_ ? "chat.completion" : "text_completion"}, {"created", created_},
               {"model", model_name_}, {"choices", choices}, {"usage", UsageJson()}};
  exchange_->Respond(200, kJson, Dump(body));
}

}  // namespace

OpenAiServer::OpenAiServer(ServerOptions options) : options_(std::move(options)) {}

void OpenAiServer::Attach(Engine* engine) { engine_.store(engine); }

void OpenAiServer::StopTakingRequests() { taking_requests_.store(false); }

void OpenAiServer::CallEnded() {
  std::lock_guard lock(mu_);
  in_flight_.fetch_sub(1);
  idle_.notify_all();
}

bool OpenAiServer::WaitForCalls(double seconds) {
  std::unique_lock lock(mu_);
  return idle_.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return in_flight_.load() == 0; });
}

void OpenAiServer::Handle(HttpRequest&& request, std::shared_ptr<HttpExchange> exchange) {
  const std::string& path = request.path;
  const bool is_get = request.method == "GET" || request.method == "HEAD";
  const bool is_post = request.method == "POST";
  Engine* engine = engine_.load();
  auto method_not_allowed = [&](const char* allowed) {
    RespondError(*exchange, ServerError(405, "invalid_request_error",
                                        fmt::format("{} does not take {}; use {}", path, request.method, allowed)));
  };

  if (path == "/health") {
    if (!is_get) return method_not_allowed("GET");
    if (engine == nullptr) return exchange->Respond(503, kJson, R"({"status":"loading"})");
    return exchange->Respond(200, kJson, R"({"status":"ok"})");
  }
  if (path == "/" || path == "/index.html") {
    if (!is_get) return method_not_allowed("GET");
    return exchange->Respond(200, "text/html; charset=utf-8", std::string(kChatPageHtml));
  }
  if (path == "/metrics") {
    if (!is_get) return method_not_allowed("GET");
    std::string text = engine ? RenderPrometheus(engine->metrics(), options_.served_model_name) : "";
    if (const KvAgent* agent = kv_agent_.load()) text += RenderKvAgentMetrics(*agent, options_.served_model_name);
    return exchange->Respond(200, "text/plain; version=0.0.4; charset=utf-8", text);
  }
  if (path == "/internal/v1/prefill" && options_.role == ServeRole::kPrefill) {
    if (!is_post) return method_not_allowed("POST");
    return HandlePrefill(std::move(request), std::move(exchange));
  }
  const bool is_v1 = path.rfind("/v1/", 0) == 0;
  const bool known = path == "/v1/models" || path == "/v1/completions" || path == "/v1/chat/completions";
  if (!known) {
    return RespondError(*exchange, ServerError(404, "not_found_error", fmt::format("no route {} {}", request.method, path)));
  }
  if (is_v1 && !options_.api_key.empty()) {
    const std::string_view bearer = "Bearer ";
    const std::string_view auth = request.authorization;
    const bool ok = auth.rfind(bearer, 0) == 0 && SameKey(auth.substr(bearer.size()), options_.api_key);
    if (!ok) {
      ApiError e = ServerError(401, "authentication_error",
                               auth.empty() ? "this server needs an API key: send Authorization: Bearer <key>"
                                            : "the API key is not valid");
      return exchange->Respond(401, kJson, ErrorBody(e), {{"WWW-Authenticate", "Bearer"}});
    }
  }
  if (path == "/v1/models") {
    if (!is_get) return method_not_allowed("GET");
    Json model = {{"id", options_.served_model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "tetra"}};
    if (engine) model["max_model_len"] = engine->model().config().max_position;
    return exchange->Respond(200, kJson, Dump(Json{{"object", "list"}, {"data", Json::array({model})}}));
  }
  if (!is_post) return method_not_allowed("POST");
  HandleGeneration(path == "/v1/chat/completions" ? ApiKind::kChat : ApiKind::kCompletion, std::move(request),
                   std::move(exchange));
}

void OpenAiServer::HandleGeneration(ApiKind kind, HttpRequest&& http, std::shared_ptr<HttpExchange> exchange) {
  Engine* engine = engine_.load();
  if (engine == nullptr) {
    return RespondError(*exchange, ServerError(503, "server_error", "the model is still loading; retry shortly"));
  }
  if (!taking_requests_.load()) {
    return RespondError(*exchange, ServerError(503, "server_error", "the server is shutting down"));
  }
  ApiRequest request;
  if (auto error = ParseApiRequest(kind, http.body, engine->model().config().vocab_size, &request)) {
    return RespondError(*exchange, *error);
  }
  if (!request.model.empty() && request.model != options_.served_model_name) {
    ApiError e = ServerError(404, "not_found_error",
                             fmt::format("the model `{}` does not exist; this server serves `{}`", request.model,
                                         options_.served_model_name));
    e.param = "model";
    return RespondError(*exchange, e);
  }
  in_flight_.fetch_add(1);
  auto call = std::make_shared<Call>(this, engine, std::move(exchange), std::move(request), options_.served_model_name,
                                     next_call_id_.fetch_add(1));
  if (options_.role == ServeRole::kDecode && !http.prefill_url.empty()) {
    call->PrefillAt(http.prefill_url, options_.disagg_min_prompt_tokens);
  }
  call->Start();
}

void OpenAiServer::HandlePrefill(HttpRequest&& http, std::shared_ptr<HttpExchange> exchange) {
  Engine* engine = engine_.load();
  if (engine == nullptr || !taking_requests_.load()) {
    return RespondError(*exchange, ServerError(503, "server_error", "the prefill instance is not ready"));
  }
  Json body = Json::parse(http.body, nullptr, /*allow_exceptions=*/false);
  EngineRequest r;
  std::string host;
  int64_t port = 0;
  uint64_t transfer_id = 0;
  std::string format;
  try {
    if (!body.is_object()) throw std::invalid_argument("the body is not a JSON object");
    r.prompt = body.at("tokens").get<std::vector<int32_t>>();
    r.kv_skip_tokens = body.at("kv_skip_tokens").get<int64_t>();
    host = body.at("kv_host").get<std::string>();
    port = body.at("kv_port").get<int64_t>();
    transfer_id = body.at("transfer_id").get<uint64_t>();
    format = body.at("kv_format").get<std::string>();
  } catch (const std::exception& e) {
    return RespondError(*exchange, InvalidRequest(fmt::format("prefill request: {}", e.what()), ""));
  }
  if (port < 1 || port > 65535) return RespondError(*exchange, InvalidRequest("prefill request: bad kv_port", ""));
  r.max_tokens = 1;
  r.kv_handoff = EngineRequest::KvHandoff::kExport;
  r.kv_peer = KvAgent::ExportPeer(host, static_cast<int>(port), transfer_id, format);
  if (Status s = engine->Validate(r); !s.ok()) return RespondError(*exchange, InvalidRequest(s.message(), ""));
  in_flight_.fetch_add(1);
  struct Answer {
    OpenAiServer* server;
    std::shared_ptr<HttpExchange> exchange;
    ~Answer() { server->CallEnded(); }
  };
  std::shared_ptr<Answer> answer(new Answer{this, exchange});  // no temporary: its destructor ends the call
  auto submitted = engine->Submit(std::move(r), [answer](RequestUpdate&& update) {
    if (!update.finished) return;
    if (update.error.ok()) return answer->exchange->Respond(200, kJson, R"({"status":"sent"})");
    RespondError(*answer->exchange, ServerError(502, "server_error", update.error.message()));
  });
  if (!submitted.ok()) RespondError(*exchange, ServerError(503, "server_error", submitted.status().message()));
}

}  // namespace tetra::serving
