// Renders a model's chat template (the Jinja source in tokenizer_config.json
// or GGUF `tokenizer.chat_template`) exactly as Python jinja2 does inside
// transformers' apply_chat_template: trim_blocks, lstrip_blocks, the
// loopcontrols extension, `{% generation %}`, and the globals
// raise_exception, strftime_now, namespace, dict and range.
//
// Immutable after Parse; Render may be called from any thread at once.
// Context key order matters (tojson and dict iteration print it), so pass an
// nlohmann::ordered_json where order is known; plain nlohmann::json sorts keys.
// See doc/chat-templates.md for the supported subset and limits.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "base/status.h"

namespace tetra {

namespace jinja {
struct Node;
}

struct ChatTemplateOptions {
  size_t max_output_bytes = 64u << 20;       // a render that prints more fails
  int64_t max_loop_iterations = 10'000'000;  // summed over all loops of one render
  int max_call_depth = 128;                  // nested macro calls
  // The time strftime_now() reports; nullopt = the real local time.
  std::optional<std::chrono::system_clock::time_point> now;
};

class ChatTemplate {
 public:
  // Syntax errors read "chat template line L column C: <problem>"; unknown
  // filters and tests are errors here, as jinja2 reports them at compile time.
  static StatusOr<ChatTemplate> Parse(std::string source);

  // context: {"messages": [...], "add_generation_prompt": bool, "bos_token": "...",
  // "eos_token": "...", "tools": [...], other keys}. Runtime errors read
  // "chat template line N: <problem>"; raise_exception(msg) gives exactly msg.
  StatusOr<std::string> Render(const nlohmann::ordered_json& context,
                               const ChatTemplateOptions& options = {}) const;
  StatusOr<std::string> Render(const nlohmann::json& context,
                               const ChatTemplateOptions& options = {}) const;

  const std::string& source() const { return *source_; }

 private:
  ChatTemplate(std::shared_ptr<const std::string> source, std::shared_ptr<const jinja::Node> root)
      : source_(std::move(source)), root_(std::move(root)) {}

  std::shared_ptr<const std::string> source_;
  std::shared_ptr<const jinja::Node> root_;
};

}  // namespace tetra
