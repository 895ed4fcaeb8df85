#include "tokenizer/normalizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <cstdlib>

#include "tokenizer/unicode_text.h"

namespace tetra::tokenizer_internal {

namespace {
using Json = nlohmann::json;

enum class StepKind { kNfc, kNfd, kNfkc, kNfkd, kLowercase, kStripAccents, kStrip, kReplace, kPrepend };

// Rust's char::is_whitespace: the Unicode White_Space property.
bool IsWhiteSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Calls on_char(codepoint, bytes) for each valid character and
// on_invalid(byte) for each byte that is not part of one.
template <typename OnChar, typename OnInvalid>
void ForEachChar(std::string_view text, OnChar on_char, OnInvalid on_invalid) {
  for (size_t pos = 0; pos < text.size();) {
    size_t n = ValidUtf8CharLength(text, pos);
    if (n == 0) {
      on_invalid(text[pos]);
      ++pos;
      continue;
    }
    on_char(DecodeUtf8Char(text, pos, n), text.substr(pos, n));
    pos += n;
  }
}

// One Unicode normalization form over valid UTF-8 (utf8proc options).
void AppendUnicodeForm(std::string_view valid_text, int options, std::string* out) {
  if (valid_text.empty()) return;
  utf8proc_uint8_t* mapped = nullptr;
  utf8proc_ssize_t length = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(valid_text.data()),
                                         static_cast<utf8proc_ssize_t>(valid_text.size()), &mapped,
                                         static_cast<utf8proc_option_t>(options));
  if (length < 0) {
    out->append(valid_text);  // cannot happen for valid UTF-8; keep the text rather than lose it
  } else {
    out->append(reinterpret_cast<const char*>(mapped), static_cast<size_t>(length));
  }
  std::free(mapped);
}

// Each maximal run of valid UTF-8 gets the form; invalid bytes are copied.
std::string UnicodeForm(std::string_view text, int options) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  size_t run_start = 0, pos = 0;
  while (pos < text.size()) {
    size_t n = ValidUtf8CharLength(text, pos);
    if (n > 0) {
      pos += n;
      continue;
    }
    AppendUnicodeForm(text.substr(run_start, pos - run_start), options, &out);
    out.push_back(text[pos]);
    run_start = ++pos;
  }
  AppendUnicodeForm(text.substr(run_start), options, &out);
  return out;
}

std::string Lowercase(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  ForEachChar(
      text,
      [&](uint32_t c, std::string_view) {
        if (c == 0x130) {  // İ: the one unconditional multi-character lowercase mapping
          out.append("i\xCC\x87");
        } else {
          AppendUtf8(static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))), &out);
        }
      },
      [&](char byte) { out.push_back(byte); });
  return out;
}

std::string StripAccents(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  ForEachChar(
      text,
      [&](uint32_t c, std::string_view bytes) {
        utf8proc_category_t category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
        if (category != UTF8PROC_CATEGORY_MN && category != UTF8PROC_CATEGORY_MC &&
            category != UTF8PROC_CATEGORY_ME) {
          out.append(bytes);
        }
      },
      [&](char byte) { out.push_back(byte); });
  return out;
}

std::string Strip(std::string_view text, bool left, bool right) {
  if (left) {
    size_t n;
    while (!text.empty() && (n = ValidUtf8CharLength(text, 0)) > 0 && IsWhiteSpace(DecodeUtf8Char(text, 0, n))) {
      text.remove_prefix(n);
    }
  }
  if (right) {
    while (!text.empty()) {
      // The last character starts at most 4 bytes before the end.
      size_t start = text.size() - 1;
      while (start > 0 && text.size() - start < 4 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
      size_t n = ValidUtf8CharLength(text, start);
      if (n != text.size() - start || !IsWhiteSpace(DecodeUtf8Char(text, start, n))) break;
      text.remove_suffix(n);
    }
  }
  return std::string(text);
}

std::string ReplaceLiteral(std::string_view text, std::string_view pattern, std::string_view content) {
  std::string out;
  out.reserve(text.size());
  size_t copied = 0;
  for (size_t found = text.find(pattern); found != std::string_view::npos;
       found = text.find(pattern, copied)) {
    out.append(text.substr(copied, found - copied));
    out.append(content);
    copied = found + pattern.size();
  }
  out.append(text.substr(copied));
  return out;
}
}  // namespace

struct Normalizer::Step {
  StepKind kind;
  bool strip_left = false, strip_right = false;  // Strip
  std::string pattern;                            // Replace: literal text when regex is null
  std::string content;                            // Replace: the replacement; Prepend: the prefix
  pcre2_code* regex = nullptr;                    // Replace with a Regex pattern

  ~Step() { pcre2_code_free(regex); }

  std::string ReplaceRegex(std::string_view text) const {
    pcre2_match_data* match = pcre2_match_data_create_from_pattern(regex, nullptr);
    std::string out;
    out.reserve(text.size());
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t copied = 0, pos = 0;
    while (pos <= text.size() &&
           pcre2_match(regex, subject, text.size(), pos, 0, match, nullptr) >= 0) {
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
      size_t start = ovector[0], end = ovector[1];
      out.append(text.substr(copied, start - copied));
      out.append(content);
      copied = pos = end;
      if (end == start) {  // an empty match: step over one character, as the library's find_iter does
        if (end >= text.size()) break;
        size_t n = Utf8SymbolLength(text, end);
        out.append(text.substr(end, n));
        copied = pos = end + n;
      }
    }
    out.append(text.substr(std::min(copied, text.size())));
    pcre2_match_data_free(match);
    return out;
  }

  std::string Apply(std::string_view text) const {
    switch (kind) {
      case StepKind::kNfc:
        return UnicodeForm(text, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
      case StepKind::kNfd:
        return UnicodeForm(text, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
      case StepKind::kNfkc:
        return UnicodeForm(text, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
      case StepKind::kNfkd:
        return UnicodeForm(text, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
      case StepKind::kLowercase:
        return Lowercase(text);
      case StepKind::kStripAccents:
        return StripAccents(text);
      case StepKind::kStrip:
        return Strip(text, strip_left, strip_right);
      case StepKind::kReplace:
        return regex != nullptr ? ReplaceRegex(text) : ReplaceLiteral(text, pattern, content);
      case StepKind::kPrepend:
        return text.empty() ? std::string() : content + std::string(text);
    }
    return std::string(text);
  }
};

Normalizer::~Normalizer() = default;

StatusOr<std::unique_ptr<const Normalizer>> Normalizer::FromJson(const Json& spec) {
  std::unique_ptr<Normalizer> normalizer(new Normalizer());
  if (!spec.is_null()) TETRA_RETURN_IF_ERROR(normalizer->AddSteps(spec));
  return std::unique_ptr<const Normalizer>(std::move(normalizer));
}

Status Normalizer::AddSteps(const Json& spec) {
  if (!spec.is_object() || !spec.contains("type") || !spec["type"].is_string()) {
    return Status::Errorf("normalizer {} has no \"type\"", spec.dump());
  }
  const std::string type = spec["type"].get<std::string>();
  auto string_field = [&](const char* key, std::string* value) -> Status {
    auto it = spec.find(key);
    if (it == spec.end() || !it->is_string()) {
      return Status::Errorf("normalizer {}: \"{}\" must be a string", type, key);
    }
    *value = it->get<std::string>();
    return Status::Ok();
  };
  auto step = std::make_unique<Step>();
  if (type == "Sequence") {
    auto it = spec.find("normalizers");
    if (it == spec.end() || !it->is_array()) {
      return Status::Error("normalizer Sequence: \"normalizers\" must be an array");
    }
    for (const Json& item : *it) TETRA_RETURN_IF_ERROR(AddSteps(item));
    return Status::Ok();
  } else if (type == "NFC") {
    step->kind = StepKind::kNfc;
  } else if (type == "NFD") {
    step->kind = StepKind::kNfd;
  } else if (type == "NFKC") {
    step->kind = StepKind::kNfkc;
  } else if (type == "NFKD") {
    step->kind = StepKind::kNfkd;
  } else if (type == "Lowercase") {
    step->kind = StepKind::kLowercase;
  } else if (type == "StripAccents") {
    step->kind = StepKind::kStripAccents;
  } else if (type == "Strip") {
    step->kind = StepKind::kStrip;
    for (const char* key : {"strip_left", "strip_right"}) {
      auto it = spec.find(key);
      if (it == spec.end() || !it->is_boolean()) {
        return Status::Errorf("normalizer Strip: \"{}\" must be a boolean", key);
      }
    }
    step->strip_left = spec["strip_left"].get<bool>();
    step->strip_right = spec["strip_right"].get<bool>();
  } else if (type == "Prepend") {
    step->kind = StepKind::kPrepend;
    TETRA_RETURN_IF_ERROR(string_field("prepend", &step->content));
  } else if (type == "Replace") {
    step->kind = StepKind::kReplace;
    TETRA_RETURN_IF_ERROR(string_field("content", &step->content));
    const Json pattern = spec.value("pattern", Json());
    if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
      step->pattern = pattern["String"].get<std::string>();
      if (step->pattern.empty()) return Status::Error("normalizer Replace: the String pattern is empty");
    } else if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
      step->pattern = pattern["Regex"].get<std::string>();
      int error_code = 0;
      PCRE2_SIZE error_offset = 0;
      step->regex = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(step->pattern.data()), step->pattern.size(),
                                  PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code, &error_offset,
                                  nullptr);
      if (step->regex == nullptr) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(error_code, message, sizeof(message));
        return Status::Errorf("normalizer Replace: regex '{}' does not compile at offset {}: {}", step->pattern,
                              error_offset, reinterpret_cast<const char*>(message));
      }
    } else {
      return Status::Error("normalizer Replace: \"pattern\" must be {\"String\": ...} or {\"Regex\": ...}");
    }
  } else {
    return Status::Errorf("normalizer type '{}' is not supported", type);
  }
  steps_.push_back(std::move(step));
  return Status::Ok();
}

std::string Normalizer::Normalize(std::string_view text) const {
  if (steps_.empty()) return std::string(text);
  std::string current(text);
  for (const auto& step : steps_) current = step->Apply(current);
  return current;
}

}  // namespace tetra::tokenizer_internal
