// ParseApiRequest: OpenAI's request shapes (and vLLM's extras) become an
// ApiRequest with OpenAI's defaults; anything else is an ApiError naming the
// field (param) and what is wrong, never a silent default, an exception or a
// crash (deeply nested bodies included).
#include "serving/openai_protocol.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace tetra::serving {
namespace {

constexpr int64_t kVocab = 49152;

ApiRequest Parse(ApiKind kind, std::string_view body) {
  ApiRequest request;
  auto error = ParseApiRequest(kind, body, kVocab, &request);
  EXPECT_FALSE(error.has_value()) << body << "\n-> " << (error ? error->message : "");
  return request;
}
ApiRequest Completion(std::string_view body) { return Parse(ApiKind::kCompletion, body); }
ApiRequest Chat(std::string_view body) { return Parse(ApiKind::kChat, body); }

ApiError Fail(ApiKind kind, std::string_view body) {
  ApiRequest request;
  auto error = ParseApiRequest(kind, body, kVocab, &request);
  EXPECT_TRUE(error.has_value()) << body << " parsed";
  return error.value_or(ApiError{});
}

// The error for `body`: 400, invalid_request_error, the param, and a message
// holding `words`.
void ExpectError(ApiKind kind, std::string_view body, const std::string& param, const std::string& words) {
  SCOPED_TRACE(std::string(body));
  const ApiError e = Fail(kind, body);
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.type, "invalid_request_error");
  EXPECT_EQ(e.param, param);
  EXPECT_NE(e.message.find(words), std::string::npos) << "message: " << e.message;
}
void CompletionError(std::string_view body, const std::string& param, const std::string& words) {
  ExpectError(ApiKind::kCompletion, body, param, words);
}
void ChatError(std::string_view body, const std::string& param, const std::string& words) {
  ExpectError(ApiKind::kChat, body, param, words);
}

constexpr const char* kUser = R"("messages": [{"role": "user", "content": "Hi"}])";
std::string ChatBody(const std::string& extra) {
  return "{" + std::string(kUser) + (extra.empty() ? "" : ", ") + extra + "}";
}

// --- valid requests -------------------------------------------------------

TEST(ParseCompletion, StringPromptWithOpenAiDefaults) {
  const ApiRequest r = Completion(R"({"model": "m", "prompt": "Hello"})");
  EXPECT_EQ(r.kind, ApiKind::kCompletion);
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_FALSE(r.prompts[0].is_ids);
  EXPECT_EQ(r.prompts[0].text, "Hello");
  ASSERT_TRUE(r.max_tokens.has_value());
  EXPECT_EQ(*r.max_tokens, 16);
  EXPECT_EQ(r.n, 1);
  EXPECT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_EQ(r.sampling.top_p, 1.0f);
  EXPECT_EQ(r.logprobs, -1);
  EXPECT_EQ(r.sampling.top_logprobs, -1);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.echo);
  EXPECT_FALSE(r.ignore_eos);
  EXPECT_FALSE(r.include_stop_str_in_output);
  EXPECT_TRUE(r.skip_special_tokens);
  EXPECT_TRUE(r.stop.empty());
  EXPECT_TRUE(r.stop_token_ids.empty());
  EXPECT_TRUE(r.sampling.logit_bias.empty());
}

TEST(ParseCompletion, ModelIsOptional) { EXPECT_EQ(Completion(R"({"prompt": "x"})").model, ""); }

TEST(ParseCompletion, ListOfStrings) {
  const ApiRequest r = Completion(R"({"prompt": ["one", "two", "three"]})");
  ASSERT_EQ(r.prompts.size(), 3u);
  EXPECT_EQ(r.prompts[0].text, "one");
  EXPECT_EQ(r.prompts[2].text, "three");
  for (const auto& p : r.prompts) EXPECT_FALSE(p.is_ids);
}

TEST(ParseCompletion, ListOfTokenIds) {
  const ApiRequest r = Completion(R"({"prompt": [1, 2, 49151]})");
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_TRUE(r.prompts[0].is_ids);
  EXPECT_EQ(r.prompts[0].ids, (std::vector<int32_t>{1, 2, 49151}));
}

TEST(ParseCompletion, ListOfListsOfTokenIds) {
  const ApiRequest r = Completion(R"({"prompt": [[1, 2], [3], [0, 4, 5]]})");
  ASSERT_EQ(r.prompts.size(), 3u);
  for (const auto& p : r.prompts) EXPECT_TRUE(p.is_ids);
  EXPECT_EQ(r.prompts[0].ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(r.prompts[1].ids, (std::vector<int32_t>{3}));
  EXPECT_EQ(r.prompts[2].ids, (std::vector<int32_t>{0, 4, 5}));
}

TEST(ParseCompletion, OpenAiFields) {
  const ApiRequest r = Completion(R"({"prompt": "x", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "n": 3,
      "logprobs": 5, "echo": true, "stream": true, "stream_options": {"include_usage": true}, "seed": 42,
      "presence_penalty": 0.5, "frequency_penalty": -1, "stop": ["\n", "END"], "best_of": 3, "suffix": "",
      "user": "someone", "logit_bias": {"17": -100, "42": 2.5}})");
  EXPECT_EQ(*r.max_tokens, 100);
  EXPECT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.n, 3);
  EXPECT_EQ(r.logprobs, 5);
  EXPECT_EQ(r.sampling.top_logprobs, 5);
  EXPECT_TRUE(r.echo);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  ASSERT_TRUE(r.sampling.seed.has_value());
  EXPECT_EQ(*r.sampling.seed, 42u);
  EXPECT_EQ(r.sampling.presence_penalty, 0.5f);
  EXPECT_EQ(r.sampling.frequency_penalty, -1.0f);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  ASSERT_EQ(r.sampling.logit_bias.size(), 2u);
  EXPECT_EQ(r.sampling.logit_bias[0], (std::pair<int32_t, float>{17, -100.0f}));
  EXPECT_EQ(r.sampling.logit_bias[1], (std::pair<int32_t, float>{42, 2.5f}));
}

TEST(ParseCompletion, StopAsOneString) {
  EXPECT_EQ(Completion(R"({"prompt": "x", "stop": "###"})").stop, (std::vector<std::string>{"###"}));
}

TEST(ParseCompletion, LogprobsZeroMeansTheChosenTokenOnly) {
  EXPECT_EQ(Completion(R"({"prompt": "x", "logprobs": 0})").logprobs, 0);
}

TEST(ParseCompletion, VllmExtras) {
  const ApiRequest r = Completion(R"({"prompt": "x", "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.2,
      "ignore_eos": true, "stop_token_ids": [2, 7], "include_stop_str_in_output": true,
      "skip_special_tokens": false, "priority": -3})");
  EXPECT_EQ(r.sampling.top_k, 40);
  EXPECT_EQ(r.sampling.min_p, 0.05f);
  EXPECT_EQ(r.sampling.repetition_penalty, 1.2f);
  EXPECT_TRUE(r.ignore_eos);
  EXPECT_EQ(r.stop_token_ids, (std::vector<int32_t>{2, 7}));
  EXPECT_TRUE(r.include_stop_str_in_output);
  EXPECT_FALSE(r.skip_special_tokens);
  EXPECT_EQ(r.priority, -3);
  EXPECT_EQ(Completion(R"({"prompt": "x", "top_k": -1})").sampling.top_k, -1);  // off, vLLM's way
}

TEST(ParseCompletion, NullFieldsCountAsAbsent) {
  const ApiRequest r = Completion(R"({"model": null, "prompt": "x", "max_tokens": null, "temperature": null,
      "top_p": null, "n": null, "logprobs": null, "stop": null, "logit_bias": null, "seed": null, "echo": null,
      "stream": null, "stream_options": null, "top_k": null, "stop_token_ids": null, "suffix": null,
      "best_of": null, "user": null})");
  EXPECT_EQ(r.model, "");
  EXPECT_EQ(*r.max_tokens, 16);
  EXPECT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_EQ(r.sampling.top_p, 1.0f);
  EXPECT_EQ(r.n, 1);
  EXPECT_EQ(r.logprobs, -1);
  EXPECT_TRUE(r.stop.empty());
  EXPECT_FALSE(r.sampling.seed.has_value());
  EXPECT_FALSE(r.stream);
}

TEST(ParseCompletion, UnknownHarmlessFieldsAreAccepted) {
  // Fields that cannot change the answer (metadata, store, ...) are not read.
  EXPECT_EQ(Completion(R"({"prompt": "x", "metadata": {"a": [1, {"b": 2}]}, "store": false})").prompts.size(), 1u);
}

TEST(ParseChat, StringContentWithDefaults) {
  const ApiRequest r = Chat(R"({"messages": [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Hi", "name": "ann"}]})");
  EXPECT_EQ(r.kind, ApiKind::kChat);
  EXPECT_TRUE(r.prompts.empty());
  EXPECT_FALSE(r.max_tokens.has_value());  // the rest of the context
  EXPECT_EQ(r.n, 1);
  EXPECT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_EQ(r.logprobs, -1);
  EXPECT_TRUE(r.add_generation_prompt);
  EXPECT_FALSE(r.continue_final_message);
  ASSERT_TRUE(r.messages.is_array());
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0]["role"], "system");
  EXPECT_EQ(r.messages[0]["content"], "Be brief.");
  EXPECT_EQ(r.messages[1]["content"], "Hi");
  EXPECT_EQ(r.messages[1]["name"], "ann");  // kept for the template
}

TEST(ParseChat, ListOfTextPartsIsJoined) {
  const ApiRequest r = Chat(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "first"},
                                                                          {"type": "text", "text": "second"}]}]})");
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0]["content"], "first\nsecond");
}

TEST(ParseChat, AssistantWithoutContent) {
  const ApiRequest r = Chat(R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": null},
                                            {"role": "assistant"}]})");
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[1]["content"], "");
  EXPECT_EQ(r.messages[2]["content"], "");
}

TEST(ParseChat, MaxTokensAndMaxCompletionTokens) {
  EXPECT_EQ(*Chat(ChatBody(R"("max_tokens": 7)")).max_tokens, 7);
  EXPECT_EQ(*Chat(ChatBody(R"("max_completion_tokens": 9)")).max_tokens, 9);
  EXPECT_FALSE(Chat(ChatBody(R"("max_tokens": null)")).max_tokens.has_value());
}

TEST(ParseChat, Logprobs) {
  EXPECT_EQ(Chat(ChatBody(R"("logprobs": true)")).logprobs, 0);
  const ApiRequest r = Chat(ChatBody(R"("logprobs": true, "top_logprobs": 4)"));
  EXPECT_EQ(r.logprobs, 4);
  EXPECT_EQ(r.sampling.top_logprobs, 4);
  EXPECT_EQ(Chat(ChatBody(R"("logprobs": false)")).logprobs, -1);
}

TEST(ParseChat, AcceptedNoOps) {
  const ApiRequest r = Chat(ChatBody(R"("response_format": {"type": "text"}, "tools": [], "tool_choice": "none")"));
  EXPECT_EQ(r.messages.size(), 1u);
  Chat(ChatBody(R"("tool_choice": "auto")"));
}

TEST(ParseChat, ContinueFinalMessage) {
  const ApiRequest r = Chat(R"({"messages": [{"role": "user", "content": "Hi"},
                                            {"role": "assistant", "content": "Hel"}],
                               "continue_final_message": true})");
  EXPECT_TRUE(r.continue_final_message);
  EXPECT_FALSE(r.add_generation_prompt);
}

// --- errors ---------------------------------------------------------------

TEST(ParseErrors, WrongTypes) {
  CompletionError(R"({"prompt": "x", "max_tokens": "ten"})", "max_tokens", "max_tokens must be an integer");
  CompletionError(R"({"prompt": "x", "max_tokens": 1.5})", "max_tokens", "max_tokens must be an integer");
  CompletionError(R"({"prompt": "x", "temperature": "hot"})", "temperature", "temperature must be a number");
  CompletionError(R"({"prompt": "x", "stream": "yes"})", "stream", "stream must be true or false");
  CompletionError(R"({"prompt": "x", "model": 5})", "model", "model must be a string");
  CompletionError(R"({"prompt": "x", "seed": 1.5})", "seed", "seed must be an integer");
  CompletionError(R"({"prompt": "x", "stream_options": 1})", "stream_options", "stream_options must be an object");
  CompletionError(R"({"prompt": "x", "stream_options": {"include_usage": "yes"}})", "stream_options",
                  "include_usage");
  ChatError(ChatBody(R"("logprobs": 3)"), "logprobs", "logprobs must be true or false");
}

TEST(ParseErrors, OutOfRange) {
  CompletionError(R"({"prompt": "x", "n": 0})", "n", "n must be in [1, 128]");
  CompletionError(R"({"prompt": "x", "n": 100000})", "n", "n must be in [1, 128]");
  CompletionError(R"({"prompt": "x", "n": 18446744073709551615})", "n", "n must be in [1, 128]");
  CompletionError(R"({"prompt": "x", "max_tokens": 0})", "max_tokens", "max_tokens must be in");
  CompletionError(R"({"prompt": "x", "max_tokens": -5})", "max_tokens", "max_tokens must be in");
  CompletionError(R"({"prompt": "x", "top_p": 1.5})", "top_p", "top_p must be in (0, 1]");
  CompletionError(R"({"prompt": "x", "top_p": 0})", "top_p", "top_p");
  CompletionError(R"({"prompt": "x", "temperature": -1})", "temperature", "temperature must be in [0, 100]");
  CompletionError(R"({"prompt": "x", "temperature": 1e300})", "temperature", "temperature must be a finite number");
  CompletionError(R"({"prompt": "x", "top_k": -2})", "top_k", "top_k");
  CompletionError(R"({"prompt": "x", "min_p": 2})", "min_p", "min_p must be in [0, 1]");
  CompletionError(R"({"prompt": "x", "repetition_penalty": 0})", "repetition_penalty", "repetition_penalty");
  CompletionError(R"({"prompt": "x", "presence_penalty": 3})", "presence_penalty", "presence_penalty");
  CompletionError(R"({"prompt": "x", "frequency_penalty": -3})", "frequency_penalty", "frequency_penalty");
  CompletionError(R"({"prompt": "x", "logprobs": 21})", "logprobs", "logprobs must be in [0, 20]");
  ChatError(ChatBody(R"("logprobs": true, "top_logprobs": 21)"), "top_logprobs", "top_logprobs must be in [0, 20]");
}

TEST(ParseErrors, Prompt) {
  CompletionError(R"({"max_tokens": 5})", "prompt", "prompt is required");
  CompletionError(R"({"prompt": null})", "prompt", "prompt is required");
  CompletionError(R"({"prompt": ""})", "prompt", "prompt must not be empty");
  CompletionError(R"({"prompt": []})", "prompt", "prompt must not be empty");
  CompletionError(R"({"prompt": [[]]})", "prompt", "prompt must not be empty");
  CompletionError(R"({"prompt": ["a", ""]})", "prompt", "prompt must not be empty");
  CompletionError(R"({"prompt": 5})", "prompt", "prompt must be a string, a list of strings or token ids");
  CompletionError(R"({"prompt": ["a", 5]})", "prompt", "prompt must be a string, a list of strings or token ids");
  CompletionError(R"({"prompt": [1, "a"]})", "prompt", "token ids");
  CompletionError(R"({"prompt": [1.5]})", "prompt", "token ids");
  std::string many = R"({"prompt": [)";
  for (int i = 0; i <= kMaxPromptsPerRequest; ++i) many += std::string(i ? "," : "") + "\"p\"";
  CompletionError(many + "]}", "prompt", "at most 64");
}

TEST(ParseErrors, TokenIdsOutsideTheVocabulary) {
  CompletionError(R"({"prompt": [1, 49152]})", "prompt", "outside the vocabulary");
  CompletionError(R"({"prompt": [[1], [-1]]})", "prompt", "outside the vocabulary");
  CompletionError(R"({"prompt": [18446744073709551615]})", "prompt", "outside the vocabulary");
  CompletionError(R"({"prompt": "x", "stop_token_ids": [49152]})", "stop_token_ids", "outside the vocabulary");
  CompletionError(R"({"prompt": "x", "stop_token_ids": 2})", "stop_token_ids", "stop_token_ids must be a list");
}

TEST(ParseErrors, LogitBias) {
  CompletionError(R"({"prompt": "x", "logit_bias": {"abc": 1}})", "logit_bias", "logit_bias keys must be token ids");
  CompletionError(R"({"prompt": "x", "logit_bias": {"1.5": 1}})", "logit_bias", "logit_bias keys must be token ids");
  CompletionError(R"({"prompt": "x", "logit_bias": {"": 1}})", "logit_bias", "logit_bias keys must be token ids");
  CompletionError(R"({"prompt": "x", "logit_bias": {"99999999999999999999": 1}})", "logit_bias",
                  "logit_bias keys must be token ids");
  CompletionError(R"({"prompt": "x", "logit_bias": {"49152": 1}})", "logit_bias", "outside the vocabulary");
  CompletionError(R"({"prompt": "x", "logit_bias": {"-1": 1}})", "logit_bias", "outside the vocabulary");
  CompletionError(R"({"prompt": "x", "logit_bias": {"5": 150}})", "logit_bias", "must be in [-100, 100]");
  CompletionError(R"({"prompt": "x", "logit_bias": {"5": "up"}})", "logit_bias", "logit_bias values must be numbers");
  CompletionError(R"({"prompt": "x", "logit_bias": [1]})", "logit_bias", "logit_bias must be an object");
}

TEST(ParseErrors, Stop) {
  CompletionError(R"({"prompt": "x", "stop": 5})", "stop", "stop must be a string or a list of strings");
  CompletionError(R"({"prompt": "x", "stop": ["a", 5]})", "stop", "stop must be a string or a list of strings");
  CompletionError(R"({"prompt": "x", "stop": ""})", "stop", "stop strings must not be empty");
  CompletionError(R"({"prompt": "x", "stop": ["a", ""]})", "stop", "stop strings must not be empty");
  std::string many = R"({"prompt": "x", "stop": [)";
  for (int i = 0; i <= kMaxStopStrings; ++i) many += std::string(i ? "," : "") + "\"s" + std::to_string(i) + "\"";
  CompletionError(many + "]}", "stop", "at most 16");
}

TEST(ParseErrors, Messages) {
  ChatError(R"({})", "messages", "messages is required");
  ChatError(R"({"messages": "Hi"})", "messages", "messages must be a list");
  ChatError(R"({"messages": {"role": "user"}})", "messages", "messages must be a list");
  ChatError(R"({"messages": []})", "messages", "messages must not be empty");
  ChatError(R"({"messages": ["Hi"]})", "messages", "messages[0] must be an object");
  ChatError(R"({"messages": [{"content": "Hi"}]})", "messages", "messages[0].role must be a string");
  ChatError(R"({"messages": [{"role": "robot", "content": "Hi"}]})", "messages", "messages[0].role must be");
  ChatError(R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "user"}]})", "messages",
            "messages[1].content is required");
  ChatError(R"({"messages": [{"role": "user", "content": 5}]})", "messages",
            "messages[0].content must be a string or a list of text parts");
  ChatError(R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})",
            "messages", "not supported");
  ChatError(R"({"messages": [{"role": "user", "content": ["Hi"]}]})", "messages",
            "messages[0].content[0] must be an object with a type");
  ChatError(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]})", "messages",
            "messages[0].content[0].text must be a string");
}

TEST(ParseErrors, UnsupportedFeatures) {
  ChatError(ChatBody(R"("tools": [{"type": "function", "function": {"name": "f"}}])"), "tools", "tools");
  ChatError(ChatBody(R"("tool_choice": "required")"), "tool_choice", "tool_choice");
  ChatError(ChatBody(R"("functions": [{"name": "f"}])"), "functions", "functions");
  ChatError(ChatBody(R"("response_format": {"type": "json_object"})"), "response_format", "response_format");
  ChatError(ChatBody(R"("response_format": "text")"), "response_format", "response_format");
  ChatError(ChatBody(R"("response_format": {})"), "response_format", "response_format");
  // A type that is not a string is refused too (once an exception that took the server down).
  ChatError(ChatBody(R"("response_format": {"type": 1})"), "response_format", "response_format");
  ChatError(ChatBody(R"("response_format": {"type": ["text"]})"), "response_format", "response_format");
  CompletionError(R"({"prompt": "x", "best_of": 2})", "best_of", "best_of");
  CompletionError(R"({"prompt": "x", "n": 2, "best_of": 3})", "best_of", "best_of");
  EXPECT_EQ(Completion(R"({"prompt": "x", "n": 2, "best_of": 2})").n, 2);
  CompletionError(R"({"prompt": "x", "suffix": "tail"})", "suffix", "suffix");
  ChatError(ChatBody(R"("top_logprobs": 2)"), "top_logprobs", "top_logprobs needs logprobs");
  ChatError(ChatBody(R"("logprobs": false, "top_logprobs": 2)"), "top_logprobs", "top_logprobs needs logprobs");
  ChatError(ChatBody(R"("continue_final_message": true, "add_generation_prompt": true)"), "continue_final_message",
            "add_generation_prompt");
}

TEST(ParseErrors, TheBody) {
  CompletionError(R"([{"prompt": "x"}])", "", "JSON object");
  CompletionError(R"("prompt")", "", "JSON object");
  CompletionError("42", "", "JSON object");
  CompletionError(R"({"prompt": "x")", "", "not valid JSON");
  CompletionError("", "", "not valid JSON");
  CompletionError(R"({"prompt": "x"} trailing)", "", "not valid JSON");
  CompletionError("{\"prompt\": \"\xff\xfe\"}", "", "not valid JSON");        // invalid UTF-8
  CompletionError("{\"prompt\": \"\xc3\x28\"}", "", "not valid JSON");        // a bad continuation byte
  // A UTF-16 surrogate encoded as UTF-8.
  ChatError("{\"messages\": [{\"role\": \"user\", \"content\": \"\xed\xa0\x80\"}]}", "", "not valid JSON");
}

TEST(ParseErrors, DeepNestingIsRefusedNotACrash) {
  // Printing or copying a nested value recurses per level: a small body of
  // brackets overflowed the stack before the depth limit.
  const int depth = 200000;
  const std::string brackets = std::string(depth, '[') + std::string(depth, ']');
  CompletionError(brackets, "", "nests");
  CompletionError(R"({"prompt": )" + brackets + "}", "", "nests");
  ChatError(R"({"messages": [{"role": "user", "content": "Hi", "name": )" + brackets + "}]}", "", "nests");
  std::string objects;
  for (int i = 0; i < depth; ++i) objects += R"({"a":)";
  objects += "1" + std::string(depth, '}');
  CompletionError(objects, "", "nests");
  // Brackets inside strings do not count, nor escaped quotes.
  Completion(R"({"prompt": ")" + std::string(1000, '[') + R"(\"[[[["})");
  // A modest depth in an unread field is fine.
  Completion(R"({"prompt": "x", "metadata": )" + std::string(40, '[') + std::string(40, ']') + "}");
}

TEST(ErrorBody, IsOpenAisShape) {
  const auto body = nlohmann::json::parse(ErrorBody(InvalidRequest("n must be in [1, 128], got 0", "n")));
  EXPECT_EQ(body["error"]["message"], "n must be in [1, 128], got 0");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["param"], "n");
  EXPECT_EQ(body["error"]["code"], 400);
  EXPECT_TRUE(nlohmann::json::parse(ErrorBody(InvalidRequest("x")))["error"]["param"].is_null());
  // Messages quoting the request stay valid JSON whatever bytes they hold.
  const auto quoted = nlohmann::json::parse(ErrorBody(InvalidRequest("bad \xff byte")), nullptr, false);
  EXPECT_FALSE(quoted.is_discarded());
}

}  // namespace
}  // namespace tetra::serving
