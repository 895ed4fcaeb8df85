// Splits a Jinja template into text and tag tokens, applying whitespace
// control the way jinja2 does with trim_blocks=True, lstrip_blocks=True and
// keep_trailing_newline=False. Pure function of its input; any thread.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace tetra::jinja {

enum class TokenKind {
  kText,
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,
  kString,  // text holds the unescaped value
  kInteger,
  kFloat,
  kOperator,
  kEnd,
};

struct Token {
  TokenKind kind;
  std::string text;
  int line = 1;
  int column = 1;
};

// Errors read "line L column C: <problem>" (unclosed tags, bad characters,
// unterminated strings).
StatusOr<std::vector<Token>> Tokenize(const std::string& source);

}  // namespace tetra::jinja
