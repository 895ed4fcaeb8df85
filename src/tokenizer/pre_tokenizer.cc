#include "tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <map>

namespace tetra::tokenizer_internal {

const char kGpt2SplitRegex[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char kPunctuationClass[] = R"([\p{P}!-/:-@\[-`{-~])";

namespace {
// (Characters that Unicode normalization would change are written as \x{...}.)
// The regex strings below are the families' published pre-tokenizer patterns
// (tokenizer.json files; llama.cpp's table of them for GGUF `pre` names).
const char kLlama3Regex[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char kQwen2Regex[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char kTekkenRegex[] =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char kGpt4oRegex[] =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char kBloomRegex[] = R"( ?[^(\s|.,!?…。，、।۔،)]+)";
const char kDeepseekLetters[] =
    R"(\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝ\x{1F5F}-\x{1F7D}ᾀ-ᾴᾶ-ᾼ\x{1FBE}ῂ-ῄῆ-ῌ\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\x{2126}ℨ\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+)";
const char kDeepseekCjk[] = R"([一-龥ࠀ-一가-퟿]+)";

const std::map<std::string, std::vector<std::string>, std::less<>>& FamilyTable() {
  static const auto* table = new std::map<std::string, std::vector<std::string>, std::less<>>{
      {"gpt-2", {kGpt2SplitRegex}},
      {"mpt", {kGpt2SplitRegex}},
      {"olmo", {kGpt2SplitRegex}},
      {"jais", {kGpt2SplitRegex}},
      {"trillion", {kGpt2SplitRegex}},
      {"llama-bpe", {kLlama3Regex}},
      {"llama3", {kLlama3Regex}},
      {"dbrx", {kLlama3Regex}},
      {"smaug-bpe", {kLlama3Regex}},
      {"chatglm-bpe", {kLlama3Regex}},
      {"falcon3", {kLlama3Regex}},
      {"qwen2", {kQwen2Regex}},
      {"stablelm2", {kQwen2Regex}},
      {"deepseek-r1-qwen", {kQwen2Regex}},
      {"tekken", {kTekkenRegex}},
      {"gpt-4o", {kGpt4oRegex}},
      {"llama4", {kGpt4oRegex}},
      {"deepseek-llm",
       {"[\r\n]", kDeepseekLetters, R"(\s?[!-/:-~！-／：-～‘-‟　-。]+)", R"(\s+$)", kDeepseekCjk, R"(\p{N}+)"}},
      {"deepseek-coder", {"[\r\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kDeepseekCjk, R"(\p{N})"}},
      {"deepseek-v3",
       {R"(\p{N}{1,3})", R"([一-龥぀-ゟ゠-ヿ]+)",
        R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}},
      {"falcon", {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2SplitRegex, "[0-9][0-9][0-9]"}},
      {"starcoder", {R"(\p{N})", kGpt2SplitRegex}},
      {"refact", {R"(\p{N})", kGpt2SplitRegex}},
      {"command-r", {R"(\p{N})", kGpt2SplitRegex}},
      {"smollm", {R"(\p{N})", kGpt2SplitRegex}},
      {"codeshell", {R"(\p{N})", kGpt2SplitRegex}},
      {"exaone", {R"(\p{N})", kGpt2SplitRegex}},
      {"minerva-7b", {R"(\p{N})", kGpt2SplitRegex}},
      {"poro-chat", {kBloomRegex}},
      {"bloom", {kBloomRegex}},
      {"gpt3-finnish", {kBloomRegex}},
      {"viking", {kBloomRegex, R"(\p{N})"}},
  };
  return *table;
}
}  // namespace

StatusOr<std::vector<std::string>> RegexesForGgufPre(std::string_view pre_name) {
  if (pre_name.empty() || pre_name == "default") return std::vector<std::string>{kGpt2SplitRegex};
  const auto& table = FamilyTable();
  auto it = table.find(pre_name);
  if (it == table.end()) {
    return Status::Errorf("tokenizer.ggml.pre: unknown pre-tokenizer family '{}'", pre_name);
  }
  return it->second;
}

std::string EscapeRegexLiteral(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}-/#&~ \t\n\r").find(c) != std::string_view::npos) {
      if (c == '\n') { out += "\\n"; continue; }
      if (c == '\r') { out += "\\r"; continue; }
      if (c == '\t') { out += "\\t"; continue; }
      out.push_back('\\');
    }
    out.push_back(c);
  }
  return out;
}

struct RegexPreTokenizer::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

RegexPreTokenizer::~RegexPreTokenizer() = default;

StatusOr<std::shared_ptr<const RegexPreTokenizer>> RegexPreTokenizer::Create(
    std::vector<std::string> patterns) {
  std::shared_ptr<RegexPreTokenizer> result(new RegexPreTokenizer());
  for (const std::string& pattern : patterns) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY | PCRE2_MATCH_INVALID_UTF;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     options, &error_code, &error_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      return Status::Errorf("pre-tokenizer regex '{}': {} at offset {}", pattern,
                            reinterpret_cast<const char*>(message), error_offset);
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter on failure
    auto compiled = std::make_unique<Compiled>();
    compiled->code = code;
    result->compiled_.push_back(std::move(compiled));
  }
  result->patterns_ = std::move(patterns);
  return std::shared_ptr<const RegexPreTokenizer>(std::move(result));
}

void RegexPreTokenizer::SplitOne(const Compiled& regex, std::string_view text,
                                 std::vector<std::string_view>* out) const {
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(regex.code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t gap_start = 0, offset = 0;
  while (offset <= text.size()) {
    int rc = pcre2_match(regex.code, subject, text.size(), offset, 0, match, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(regex.code, subject, text.size(), offset, PCRE2_NO_JIT, match, nullptr);
    }
    if (rc < 0) break;  // no (further) match; other errors also end the scan: rest is a gap
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
    size_t begin = ovector[0], end = ovector[1];
    if (end == begin) {  // empty match: step over one character, it stays in the gap
      if (begin >= text.size()) break;
      offset = begin + 1;
      while (offset < text.size() && (static_cast<uint8_t>(text[offset]) & 0xC0) == 0x80) ++offset;
      continue;
    }
    if (begin > gap_start) out->push_back(text.substr(gap_start, begin - gap_start));
    out->push_back(text.substr(begin, end - begin));
    gap_start = offset = end;
  }
  if (gap_start < text.size()) out->push_back(text.substr(gap_start));
  pcre2_match_data_free(match);
}

void RegexPreTokenizer::Split(std::string_view text, std::vector<std::string_view>* pieces) const {
  if (text.empty()) return;
  std::vector<std::string_view> current{text}, next;
  for (const auto& regex : compiled_) {
    next.clear();
    for (std::string_view piece : current) SplitOne(*regex, piece, &next);
    current.swap(next);
  }
  pieces->insert(pieces->end(), current.begin(), current.end());
}

}  // namespace tetra::tokenizer_internal
