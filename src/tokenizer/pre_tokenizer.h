// Regex pre-tokenization: cuts text into the pieces that byte-level BPE merges
// within. A pre-tokenizer is a sequence of regexes; each one cuts every current
// piece into its matches and the gaps between them (HF's Split with behavior
// "Isolated"), so a later regex never sees across an earlier cut.
// Regexes are PCRE2 in UTF + UCP mode with `$` matching only at the very end,
// which reproduces the Rust `regex`/`fancy-regex` semantics of tokenizer.json.
// Immutable after Create; any thread may call Split concurrently.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace tetra::tokenizer_internal {

// GPT-2's pre-tokenizer regex (also what HF's ByteLevel(use_regex=true) uses).
extern const char kGpt2SplitRegex[];
// Characters HF's Punctuation pre-tokenizer splits on (Unicode P + ASCII punctuation).
extern const char kPunctuationClass[];

class RegexPreTokenizer {
 public:
  // Error names the pattern and PCRE2's message when a regex does not compile.
  static StatusOr<std::shared_ptr<const RegexPreTokenizer>> Create(std::vector<std::string> patterns);
  ~RegexPreTokenizer();

  // Appends the non-empty pieces of `text` (views into it) to *pieces, in order.
  // Concatenating them gives back `text`.
  void Split(std::string_view text, std::vector<std::string_view>* pieces) const;
  const std::vector<std::string>& patterns() const { return patterns_; }

 private:
  struct Compiled;
  RegexPreTokenizer() = default;
  void SplitOne(const Compiled& regex, std::string_view text, std::vector<std::string_view>* out) const;

  std::vector<std::string> patterns_;
  std::vector<std::unique_ptr<Compiled>> compiled_;
};

// The regex sequence of a GGUF `tokenizer.ggml.pre` family name ("gpt-2",
// "llama-bpe", "qwen2", "deepseek-llm", ...). Missing/"default" means GPT-2.
// Error for an unknown name.
StatusOr<std::vector<std::string>> RegexesForGgufPre(std::string_view pre_name);

// A PCRE2 pattern matching `literal` exactly.
std::string EscapeRegexLiteral(std::string_view literal);

}  // namespace tetra::tokenizer_internal
