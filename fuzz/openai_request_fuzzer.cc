// libFuzzer target: the OpenAI request path on arbitrary bytes. The first
// byte picks the mode: bit 0 the API (completions or chat), bit 1 whether
// the rest is a request body for ParseApiRequest or raw HTTP/1.1 bytes for
// Beast's request parser (with body and header limits) whose body, when a
// whole message parses, goes to ParseApiRequest; bits 2-4 pick how the raw
// bytes arrive (at once, or in pieces of 1, 2, 4, ... bytes, as reads would
// deliver them). Any ApiError or parse error is fine; crashes, exceptions,
// leaks and undefined behaviour are findings, and so is a parsed request
// that breaks the limits ParseApiRequest promises (checked with traps).
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>

#include "engine/sampler.h"
#include "serving/openai_protocol.h"

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using tetra::serving::ApiError;
using tetra::serving::ApiKind;
using tetra::serving::ApiRequest;

constexpr int64_t kVocab = 49152;
constexpr size_t kBodyLimit = 1u << 20;  // the server allows 32 MiB; 1 MiB keeps runs fast
constexpr uint32_t kHeaderLimit = 64 * 1024;  // as the server sets it

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

bool InVocab(int32_t id) { return id >= 0 && id < kVocab; }

void CheckError(const ApiError& error) {
  Check(error.http_status >= 400 && error.http_status < 600);
  Check(!error.message.empty());
  Check(!error.type.empty());
  // The error body the server sends is valid JSON whatever the message holds.
  const auto body = nlohmann::json::parse(tetra::serving::ErrorBody(error), nullptr, /*allow_exceptions=*/false);
  Check(!body.is_discarded() && body.contains("error"));
}

void CheckRequest(ApiKind kind, const ApiRequest& r) {
  Check(r.kind == kind);
  Check(r.n >= 1 && r.n <= tetra::serving::kMaxChoices);
  Check(r.logprobs >= -1 && r.logprobs <= tetra::kMaxTopLogprobs);
  Check(r.sampling.top_logprobs == r.logprobs);
  if (r.max_tokens) Check(*r.max_tokens >= 1 && *r.max_tokens <= std::numeric_limits<int32_t>::max());
  if (kind == ApiKind::kCompletion) {
    Check(r.max_tokens.has_value());
    Check(!r.prompts.empty() && r.prompts.size() <= static_cast<size_t>(tetra::serving::kMaxPromptsPerRequest));
    for (const auto& p : r.prompts) {
      if (p.is_ids) {
        Check(!p.ids.empty() && p.text.empty());
        Check(std::all_of(p.ids.begin(), p.ids.end(), InVocab));
      } else {
        Check(!p.text.empty() && p.ids.empty());
      }
    }
    Check(r.messages.is_null());
  } else {
    Check(r.prompts.empty());
    Check(r.messages.is_array() && !r.messages.empty());
    for (const auto& m : r.messages) {
      Check(m.is_object());
      Check(m.contains("role") && m["role"].is_string());
      const std::string& role = m["role"].get_ref<const std::string&>();
      Check(role == "system" || role == "developer" || role == "user" || role == "assistant" || role == "tool");
      Check(m.contains("content") && m["content"].is_string());
    }
    // The chat template renders these; dumping must not throw.
    (void)r.messages.dump();
    Check(!(r.continue_final_message && r.add_generation_prompt));
  }
  Check(r.stop.size() <= static_cast<size_t>(tetra::serving::kMaxStopStrings));
  for (const auto& s : r.stop) Check(!s.empty());
  Check(std::all_of(r.stop_token_ids.begin(), r.stop_token_ids.end(), InVocab));
  for (const auto& [id, bias] : r.sampling.logit_bias) Check(InVocab(id) && bias >= -100.0f && bias <= 100.0f);
  Check(r.priority >= -1000000 && r.priority <= 1000000);
  Check(tetra::ValidateSamplingParams(r.sampling, kVocab).ok());
}

void ParseBody(ApiKind kind, std::string_view body) {
  ApiRequest request;
  if (auto error = tetra::serving::ParseApiRequest(kind, body, kVocab, &request)) {
    CheckError(*error);
  } else {
    CheckRequest(kind, request);
  }
}

// Feeds the bytes to the parser as reads would: `step` bytes at a time
// (0: all at once), then end of stream.
void ParseHttp(ApiKind kind, const uint8_t* data, size_t size, size_t step) {
  http::request_parser<http::string_body> parser;
  parser.body_limit(kBodyLimit);
  parser.header_limit(kHeaderLimit);
  beast::flat_buffer buffer;
  size_t pos = 0;
  beast::error_code ec;
  for (;;) {
    if (parser.is_done()) break;
    if (pos < size && (buffer.size() == 0 || step != 0)) {
      const size_t n = step == 0 ? size - pos : std::min(step, size - pos);
      auto room = buffer.prepare(n);
      std::memcpy(room.data(), data + pos, n);
      buffer.commit(n);
      pos += n;
    }
    if (buffer.size() == 0) {
      // End of stream: a message without a length ends here; others are partial.
      if (parser.got_some()) parser.put_eof(ec);
      break;
    }
    const size_t used = parser.put(buffer.data(), ec);
    Check(used <= buffer.size());
    buffer.consume(used);
    if (ec == http::error::need_more) {
      ec = {};
      if (pos >= size) {
        if (parser.got_some()) parser.put_eof(ec);
        break;
      }
      continue;
    }
    if (ec) break;
    if (used == 0 && pos >= size && !parser.is_done()) break;  // no progress possible
  }
  if (ec || !parser.is_done()) return;
  const auto& message = parser.get();
  Check(message.body().size() <= kBodyLimit);
  if (const auto length = parser.content_length()) Check(message.body().size() == *length);
  (void)message.keep_alive();
  const std::string_view target(message.target().data(), message.target().size());
  (void)target.substr(0, target.find('?'));
  (void)std::string(message[http::field::authorization]);
  ParseBody(kind, message.body());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const ApiKind kind = (mode & 1) ? ApiKind::kChat : ApiKind::kCompletion;
  ++data;
  --size;
  if (mode & 2) {
    const unsigned shift = (mode >> 2) & 7;
    ParseHttp(kind, data, size, shift == 0 ? 0 : size_t{1} << (shift - 1));
  } else {
    ParseBody(kind, std::string_view(reinterpret_cast<const char*>(data), size));
  }
  return 0;
}
