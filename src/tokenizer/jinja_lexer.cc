#include "tokenizer/jinja_lexer.h"

#include <algorithm>
#include <cstring>

namespace tetra::jinja {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool IsNameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

void AppendUtf8(std::string& out, uint32_t code) {
  if (code < 0x80) {
    out += static_cast<char>(code);
  } else if (code < 0x800) {
    out += static_cast<char>(0xC0 | (code >> 6));
    out += static_cast<char>(0x80 | (code & 0x3F));
  } else if (code < 0x10000) {
    out += static_cast<char>(0xE0 | (code >> 12));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code >> 18));
    out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  }
}

class Lexer {
 public:
  explicit Lexer(std::string source) : source_(std::move(source)) {
    for (size_t i = 0; i < source_.size(); ++i) {
      if (source_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < source_.size()) {
      size_t start = FindTagStart(pos);
      std::string text = source_.substr(pos, start - pos);
      if (start == std::string::npos || start >= source_.size()) {
        Emit(TokenKind::kText, source_.substr(pos), pos);
        break;
      }
      const char opener = source_[start + 1];
      const char modifier = start + 2 < source_.size() ? source_[start + 2] : '\0';
      if (modifier == '-') {
        while (!text.empty() && IsSpace(text.back())) text.pop_back();
      } else if (modifier != '+' && opener != '{') {
        const size_t line_begin = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        if (line_begin > 0 || line_starting) {
          const bool only_blanks = std::all_of(text.begin() + line_begin, text.end(), [](char c) {
            return c == ' ' || c == '\t' || c == '\f' || c == '\v';
          });
          if (only_blanks) text.resize(line_begin);
        }
      }
      if (!text.empty()) Emit(TokenKind::kText, text, pos);
      size_t inner = start + 2 + ((modifier == '-' || modifier == '+') ? 1 : 0);
      if (opener == '#') {
        const size_t close = source_.find("#}", inner);
        if (close == std::string::npos) return Error(start, "comment is never closed with '#}'");
        pos = close + 2;
        const char close_modifier = close > inner ? source_[close - 1] : '\0';
        line_starting = FinishTag(pos, close_modifier, /*trims_newline=*/true);
        continue;
      }
      if (opener == '%' && IsRawBlock(inner)) {
        auto result = LexRaw(start, inner, &pos);
        if (!result.ok()) return result;
        line_starting = false;
        continue;
      }
      const bool is_block = opener == '%';
      Emit(is_block ? TokenKind::kBlockBegin : TokenKind::kVariableBegin, "", start);
      auto end = LexTagBody(inner, is_block);
      if (!end.ok()) return end.status();
      pos = *end;
      line_starting = FinishTag(pos, close_modifier_, /*trims_newline=*/is_block);
    }
    Emit(TokenKind::kEnd, "", source_.size());
    return std::move(tokens_);
  }

 private:
  // Position of the next "{{", "{%" or "{#" at or after pos, or npos.
  size_t FindTagStart(size_t pos) const {
    while (true) {
      pos = source_.find('{', pos);
      if (pos == std::string::npos || pos + 1 >= source_.size()) return std::string::npos;
      const char next = source_[pos + 1];
      if (next == '{' || next == '%' || next == '#') return pos;
      ++pos;
    }
  }

  // After a tag's closing delimiter at pos: "-" strips all following
  // whitespace, otherwise trim_blocks drops one newline. Returns whether the
  // consumed text ended a line (jinja2's lstrip_blocks "line_starting").
  bool FinishTag(size_t& pos, char close_modifier, bool trims_newline) {
    const size_t before = pos;
    if (close_modifier == '-') {
      while (pos < source_.size() && IsSpace(source_[pos])) ++pos;
    } else if (close_modifier != '+' && trims_newline && pos < source_.size() &&
               source_[pos] == '\n') {
      ++pos;
    }
    return pos > before && source_[pos - 1] == '\n';
  }

  bool IsRawBlock(size_t inner) const {
    size_t p = inner;
    while (p < source_.size() && IsSpace(source_[p])) ++p;
    return source_.compare(p, 3, "raw") == 0 && p + 3 < source_.size() &&
           !IsNameStart(source_[p + 3]) && !IsDigit(source_[p + 3]);
  }

  Status LexRaw(size_t start, size_t inner, size_t* pos) {
    size_t close = source_.find("%}", inner);
    if (close == std::string::npos) return Error(start, "raw tag is never closed");
    size_t body_start = close + 2;
    if (source_[close - 1] == '-') {
      while (body_start < source_.size() && IsSpace(source_[body_start])) ++body_start;
    } else if (body_start < source_.size() && source_[body_start] == '\n') {
      ++body_start;
    }
    size_t search = body_start;
    while (true) {
      size_t tag = source_.find("{%", search);
      if (tag == std::string::npos) return Error(start, "raw block is never closed with endraw");
      size_t p = tag + 2;
      const bool strip_before = p < source_.size() && source_[p] == '-';
      if (p < source_.size() && (source_[p] == '-' || source_[p] == '+')) ++p;
      while (p < source_.size() && IsSpace(source_[p])) ++p;
      if (source_.compare(p, 6, "endraw") == 0) {
        size_t end_close = source_.find("%}", p);
        if (end_close == std::string::npos) return Error(tag, "endraw tag is never closed");
        std::string body = source_.substr(body_start, tag - body_start);
        if (strip_before) {
          while (!body.empty() && IsSpace(body.back())) body.pop_back();
        }
        if (!body.empty()) Emit(TokenKind::kText, body, body_start);
        *pos = end_close + 2;
        FinishTag(*pos, source_[end_close - 1], true);
        return Status::Ok();
      }
      search = tag + 2;
    }
  }

  // Lexes the expression tokens of a tag up to its closing delimiter; returns
  // the position after the delimiter and sets close_modifier_.
  StatusOr<size_t> LexTagBody(size_t pos, bool is_block) {
    int depth = 0;
    const char* end_text = is_block ? "%}" : "}}";
    while (true) {
      while (pos < source_.size() && IsSpace(source_[pos])) ++pos;
      if (pos >= source_.size()) {
        return Error(pos, std::string("tag is never closed with '") + end_text + "'");
      }
      if (depth == 0) {
        for (char modifier : {'-', '+', '\0'}) {
          if (modifier == '+' && !is_block) continue;
          const size_t skip = modifier ? 1 : 0;
          if ((modifier == '\0' || source_[pos] == modifier) &&
              source_.compare(pos + skip, 2, end_text) == 0) {
            Emit(is_block ? TokenKind::kBlockEnd : TokenKind::kVariableEnd, "", pos);
            close_modifier_ = modifier;
            return pos + skip + 2;
          }
        }
      }
      const char c = source_[pos];
      const size_t start = pos;
      if (IsNameStart(c)) {
        while (pos < source_.size() && (IsNameStart(source_[pos]) || IsDigit(source_[pos]))) ++pos;
        Emit(TokenKind::kName, source_.substr(start, pos - start), start);
      } else if (IsDigit(c)) {
        TETRA_RETURN_IF_ERROR(LexNumber(pos));
      } else if (c == '\'' || c == '"') {
        TETRA_RETURN_IF_ERROR(LexString(pos));
      } else {
        static const char* kTwoCharOperators[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (const char* two : kTwoCharOperators) {
          if (source_.compare(pos, 2, two) == 0) op = two;
        }
        if (op.empty()) {
          if (std::strchr("+-*/%~()[]{},.:|=<>;!", c) == nullptr || c == '\0') {
            return Error(pos, std::string("unexpected character '") + c + "' in tag");
          }
          op = std::string(1, c);
        }
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") {
          if (depth == 0) return Error(pos, "unexpected '" + op + "'");
          --depth;
        }
        pos += op.size();
        Emit(TokenKind::kOperator, op, start);
      }
    }
  }

  Status LexNumber(size_t& pos) {
    const size_t start = pos;
    auto digits = [&] {
      while (pos < source_.size() && (IsDigit(source_[pos]) || source_[pos] == '_')) ++pos;
    };
    digits();
    bool is_float = false;
    if (pos + 1 < source_.size() && source_[pos] == '.' && IsDigit(source_[pos + 1])) {
      is_float = true;
      ++pos;
      digits();
    }
    if (pos < source_.size() && (source_[pos] == 'e' || source_[pos] == 'E')) {
      size_t p = pos + 1;
      if (p < source_.size() && (source_[p] == '+' || source_[p] == '-')) ++p;
      if (p < source_.size() && IsDigit(source_[p])) {
        is_float = true;
        pos = p;
        digits();
      }
    }
    std::string text = source_.substr(start, pos - start);
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    Emit(is_float ? TokenKind::kFloat : TokenKind::kInteger, text, start);
    return Status::Ok();
  }

  Status LexString(size_t& pos) {
    const size_t start = pos;
    const char quote = source_[pos++];
    std::string value;
    while (true) {
      if (pos >= source_.size()) return Error(start, "string literal is never closed");
      const char c = source_[pos];
      if (c == quote) {
        ++pos;
        break;
      }
      if (c != '\\') {
        value += c;
        ++pos;
        continue;
      }
      if (pos + 1 >= source_.size()) return Error(start, "string literal is never closed");
      const char e = source_[pos + 1];
      pos += 2;
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case '0': value += '\0'; break;
        case 'a': value += '\a'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'v': value += '\v'; break;
        case '\\': value += '\\'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case '\n': break;
        case 'x':
        case 'u':
        case 'U': {
          const size_t count = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (pos + count > source_.size()) return Error(pos, "truncated escape in string literal");
          uint32_t code = 0;
          for (size_t i = 0; i < count; ++i) {
            const char h = source_[pos + i];
            int digit = IsDigit(h) ? h - '0'
                        : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                        : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
            if (digit < 0) return Error(pos, "bad escape in string literal");
            code = code * 16 + digit;
          }
          if (code > 0x10FFFF) return Error(pos, "escape out of Unicode range");
          pos += count;
          AppendUtf8(value, code);
          break;
        }
        default:
          value += '\\';
          value += e;
      }
    }
    Emit(TokenKind::kString, value, start);
    return Status::Ok();
  }

  void Emit(TokenKind kind, std::string text, size_t offset) {
    Token token{kind, std::move(text), 1, 1};
    Locate(offset, &token.line, &token.column);
    tokens_.push_back(std::move(token));
  }

  void Locate(size_t offset, int* line, int* column) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    *line = static_cast<int>(it - line_starts_.begin()) + 1;
    const size_t line_start = it == line_starts_.begin() ? 0 : *(it - 1);
    *column = static_cast<int>(offset - line_start) + 1;
  }

  Status Error(size_t offset, const std::string& problem) const {
    int line = 1, column = 1;
    Locate(offset, &line, &column);
    return Status::Errorf("line {} column {}: {}", line, column, problem);
  }

  std::string source_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
  char close_modifier_ = '\0';
};

}  // namespace

StatusOr<std::vector<Token>> Tokenize(const std::string& source) {
  std::string normalized;
  normalized.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      normalized += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      normalized += source[i];
    }
  }
  if (!normalized.empty() && normalized.back() == '\n') normalized.pop_back();
  return Lexer(std::move(normalized)).Run();
}

}  // namespace tetra::jinja
