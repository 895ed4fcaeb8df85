// OpenAI's request shapes, read strictly: /v1/completions and
// /v1/chat/completions bodies become an ApiRequest, or an ApiError naming
// the field and what is wrong with it (HTTP status, OpenAI error type,
// param). No model or tokenizer here: the server tokenizes and checks the
// context afterwards. Fields are OpenAI's plus vLLM's extensions (top_k,
// min_p, repetition_penalty, ignore_eos, stop_token_ids, ...). Known fields
// we do not implement (suffix, tools, response_format other than text,
// best_of other than n, non-text content) are refused; fields this file does
// not know at all are ignored, as vLLM ignores them (a typo such as
// "max_token" therefore goes unnoticed: see the issue notes).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampler.h"

namespace tetra::serving {

struct ApiError {
  int http_status = 400;
  std::string type = "invalid_request_error";  // | not_found_error | authentication_error | server_error | ...
  std::string message;
  std::string param;  // the field at fault, "" when none
};
ApiError InvalidRequest(std::string message, std::string param = "");
// {"error": {"message", "type", "param", "code"}}, OpenAI's error body.
std::string ErrorBody(const ApiError& error);

enum class ApiKind { kCompletion, kChat };

inline constexpr int kMaxChoices = 128;        // n
inline constexpr int kMaxPromptsPerRequest = 64;  // a completions prompt array
inline constexpr int kMaxStopStrings = 16;

struct ApiPrompt {
  std::string text;              // when !is_ids
  std::vector<int32_t> ids;      // when is_ids (a token-id prompt)
  bool is_ids = false;
};

struct ApiRequest {
  ApiKind kind = ApiKind::kCompletion;
  std::string model;                // as sent; "" when absent
  std::vector<ApiPrompt> prompts;   // completions: one or more
  // chat: the messages, each with "role" and "content" as a string (text
  // parts joined), other fields kept for the template (name, tool_call_id).
  nlohmann::ordered_json messages;
  bool add_generation_prompt = true;
  bool continue_final_message = false;
  bool stream = false;
  bool include_usage = false;       // stream_options.include_usage
  bool echo = false;                // completions: the prompt's text before the answer
  std::optional<int64_t> max_tokens;  // none: 16 for completions, the rest of the context for chat
  int n = 1;
  SamplingParams sampling;          // OpenAI defaults: temperature 1, top_p 1
  int logprobs = -1;                // alternatives per token (-1: no logprobs; 0: the chosen token's only)
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool include_stop_str_in_output = false;
  bool skip_special_tokens = true;
  int priority = 0;
};

// Parses a request body. The vocabulary size bounds token ids (prompt ids,
// logit_bias, stop_token_ids); sampling values are checked as the engine's
// sampler requires them.
std::optional<ApiError> ParseApiRequest(ApiKind kind, std::string_view body, int64_t vocab_size, ApiRequest* out);

}  // namespace tetra::serving
