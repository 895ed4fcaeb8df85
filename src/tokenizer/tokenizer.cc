// Encoding, decoding and the added-token splitter shared by both loaders
// (tokenizer_gguf.cc, tokenizer_hf.cc fill the fields and call Finish).
#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "base/check.h"
#include "tokenizer/unicode_text.h"

namespace tetra {

using tokenizer_internal::ByteToUnicode;
using tokenizer_internal::Utf8SymbolLength;

namespace {
constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581
constexpr size_t kMaxCachedWordLength = 256;
constexpr size_t kMaxCacheEntries = 1 << 16;

// HF's ByteLevel decoder on an added token: when every character is in the
// GPT-2 byte map the token becomes those bytes, otherwise it stays as it is.
std::string ByteLevelDecodeAddedToken(const std::string& text) {
  std::string bytes;
  for (size_t pos = 0; pos < text.size();) {
    size_t n = tokenizer_internal::ValidUtf8CharLength(text, pos);
    int byte = n == 0 ? -1 : tokenizer_internal::UnicodeToByte(tokenizer_internal::DecodeUtf8Char(text, pos, n));
    if (byte < 0) return text;
    bytes.push_back(static_cast<char>(byte));
    pos += n;
  }
  return bytes;
}

bool IsWhitespaceByte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
}  // namespace

Status Tokenizer::Finish() {
  const int32_t n = vocab_size();
  if (n == 0) return Status::Error("tokenizer: empty vocabulary");
  token_types_.resize(n, TokenType::kNormal);
  token_ids_.reserve(n);
  for (int32_t id = 0; id < n; ++id) token_ids_.emplace(tokens_[id], id);  // first id wins
  byte_token_ids_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    auto it = token_ids_.find(fmt::format("<0x{:02X}>", b));
    if (it != token_ids_.end()) byte_token_ids_[b] = it->second;
  }
  auto check_id = [&](const char* what, std::optional<int32_t> id) -> Status {
    if (id && (*id < 0 || *id >= n)) {
      return Status::Errorf("tokenizer: {} token id {} outside the vocabulary of {}", what, *id, n);
    }
    return Status::Ok();
  };
  TETRA_RETURN_IF_ERROR(check_id("bos", bos_id_));
  TETRA_RETURN_IF_ERROR(check_id("eos", eos_id_));
  TETRA_RETURN_IF_ERROR(check_id("unknown", unknown_id_));
  for (int32_t id : stop_ids_) TETRA_RETURN_IF_ERROR(check_id("stop", id));
  if (add_bos_ && !bos_id_) return Status::Error("tokenizer: add_bos_token is set but there is no bos token");
  if (add_eos_ && !eos_id_) return Status::Error("tokenizer: add_eos_token is set but there is no eos token");
  if (eos_id_ && std::find(stop_ids_.begin(), stop_ids_.end(), *eos_id_) == stop_ids_.end()) {
    stop_ids_.insert(stop_ids_.begin(), *eos_id_);
  }
  for (std::string_view name : {"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                "<|endoftext|>", "<|end_of_text|>", "<EOT>", "<｜end▁of▁sentence｜>"}) {
    AddStopIdIfPresent(name);
  }
  // Tries of added-token texts, for longest-match splitting: tokens marked
  // "normalized" are matched by their normalized text in normalized pieces.
  std::vector<std::pair<std::string, int32_t>> raw_texts, normalized_texts;
  for (size_t index = 0; index < added_tokens_.size(); ++index) {
    const std::string& text = tokens_[added_tokens_[index].id];
    if (!added_tokens_[index].is_normalized) {
      raw_texts.emplace_back(text, static_cast<int32_t>(index));
    } else {
      std::string normalized = normalizer_ ? normalizer_->Normalize(text) : text;
      if (normalized != text) normalized_added_texts_[added_tokens_[index].id] = normalized;
      normalized_texts.emplace_back(std::move(normalized), static_cast<int32_t>(index));
    }
  }
  trie_ = BuildTrie(raw_texts);
  if (!normalized_texts.empty()) normalized_trie_ = BuildTrie(normalized_texts);
  return Status::Ok();
}

void Tokenizer::AddAddedToken(AddedToken token) { added_tokens_.push_back(token); }

void Tokenizer::AddStopIdIfPresent(std::string_view text) {
  auto it = token_ids_.find(std::string(text));
  if (it == token_ids_.end()) return;
  TokenType type = token_types_[it->second];
  if (type != TokenType::kControl && type != TokenType::kUserDefined) return;
  if (std::find(stop_ids_.begin(), stop_ids_.end(), it->second) == stop_ids_.end()) {
    stop_ids_.push_back(it->second);
  }
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view text) const {
  auto it = token_ids_.find(std::string(text));
  if (it == token_ids_.end()) return std::nullopt;
  return it->second;
}

std::string Tokenizer::TokenText(int32_t id) const {
  return id >= 0 && id < vocab_size() ? tokens_[id] : std::string();
}

bool Tokenizer::IsControl(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return false;
  return token_types_[id] == TokenType::kControl || token_types_[id] == TokenType::kUnknown;
}

std::vector<Tokenizer::TrieNode> Tokenizer::BuildTrie(const std::vector<std::pair<std::string, int32_t>>& texts) {
  std::vector<TrieNode> trie(1);
  for (const auto& [text, added_index] : texts) {
    if (text.empty()) continue;
    int32_t node = 0;
    for (char c : text) {
      uint8_t byte = static_cast<uint8_t>(c);
      int32_t child = -1;
      for (auto [b, next] : trie[node].children) {
        if (b == byte) child = next;
      }
      if (child < 0) {
        child = static_cast<int32_t>(trie.size());
        trie[node].children.emplace_back(byte, child);
        trie.emplace_back();
      }
      node = child;
    }
    if (trie[node].added_index < 0) trie[node].added_index = added_index;
  }
  return trie;
}

std::vector<Tokenizer::Fragment> Tokenizer::SplitAddedTokens(std::string_view text, bool parse_special,
                                                             const std::vector<TrieNode>& trie) const {
  std::vector<Fragment> fragments;
  size_t text_start = 0, pos = 0;
  while (pos < text.size()) {
    // Longest added token starting at pos.
    int32_t node = 0, best = -1;
    size_t best_end = pos;
    for (size_t i = pos; i < text.size(); ++i) {
      uint8_t byte = static_cast<uint8_t>(text[i]);
      int32_t child = -1;
      for (auto [b, next] : trie[node].children) {
        if (b == byte) { child = next; break; }
      }
      if (child < 0) break;
      node = child;
      int32_t index = trie[node].added_index;
      if (index >= 0 && (parse_special || !added_tokens_[index].is_special)) {
        best = index;
        best_end = i + 1;
      }
    }
    if (best < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = added_tokens_[best];
    size_t text_end = pos;
    if (token.lstrip) {
      while (text_end > text_start && IsWhitespaceByte(text[text_end - 1])) --text_end;
    }
    if (text_end > text_start) fragments.push_back({text.substr(text_start, text_end - text_start), -1});
    fragments.push_back({{}, token.id});
    pos = best_end;
    if (token.rstrip) {
      while (pos < text.size() && IsWhitespaceByte(text[pos])) ++pos;
    }
    text_start = pos;
  }
  if (text_start < text.size()) fragments.push_back({text.substr(text_start), -1});
  return fragments;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special, bool parse_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special && add_bos_) ids.push_back(*bos_id_);
  std::vector<Fragment> fragments = SplitAddedTokens(text, parse_special, trie_);
  std::vector<std::string> normalized_texts;  // owns the text of normalized fragments
  if (normalizer_ || !normalized_trie_.empty()) {
    fragments = NormalizeAndSplit(std::move(fragments), parse_special, &normalized_texts);
  }
  bool is_first_fragment = true;
  for (const Fragment& fragment : fragments) {
    if (fragment.token_id >= 0) {
      ids.push_back(fragment.token_id);
    } else if (kind_ == Kind::kByteLevel) {
      EncodeByteLevel(fragment.text, &ids);
    } else {
      EncodeSentencePiece(fragment.text, is_first_fragment, &ids);
    }
    is_first_fragment = false;
  }
  if (add_special && add_eos_) ids.push_back(*eos_id_);
  return ids;
}

std::vector<Tokenizer::Fragment> Tokenizer::NormalizeAndSplit(std::vector<Fragment> fragments, bool parse_special,
                                                              std::vector<std::string>* normalized_texts) const {
  normalized_texts->reserve(fragments.size());  // no reallocation: fragments view into the strings
  std::vector<Fragment> out;
  out.reserve(fragments.size());
  for (const Fragment& fragment : fragments) {
    if (fragment.token_id >= 0) {
      out.push_back(fragment);
      continue;
    }
    normalized_texts->push_back(normalizer_ ? normalizer_->Normalize(fragment.text) : std::string(fragment.text));
    if (normalized_trie_.empty()) {
      if (!normalized_texts->back().empty()) out.push_back({normalized_texts->back(), -1});
      continue;
    }
    for (const Fragment& piece : SplitAddedTokens(normalized_texts->back(), parse_special, normalized_trie_)) {
      out.push_back(piece);
    }
  }
  return out;
}

void Tokenizer::EncodeByteLevel(std::string_view text, std::vector<int32_t>* out) const {
  std::string prefixed;
  if (byte_level_add_prefix_space_ && !text.empty() && text[0] != ' ') {
    prefixed = " " + std::string(text);
    text = prefixed;
  }
  std::vector<std::string_view> words;
  pre_tokenizer_->Split(text, &words);
  for (std::string_view word : words) EncodeByteLevelWord(word, out);
}

void Tokenizer::EncodeByteLevelWord(std::string_view word, std::vector<int32_t>* out) const {
  const bool cacheable = word.size() <= kMaxCachedWordLength;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = word_cache_.find(std::string(word));
    if (it != word_cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::string mapped;
  mapped.reserve(word.size() * 2);
  for (char c : word) mapped.append(ByteToUnicode(static_cast<uint8_t>(c)));
  std::vector<int32_t> symbols;
  auto whole = ignore_merges_ ? token_ids_.find(mapped) : token_ids_.end();
  if (whole != token_ids_.end()) {
    symbols.push_back(whole->second);
  } else {
    symbols.reserve(word.size());
    for (char c : word) {
      auto it = token_ids_.find(std::string(ByteToUnicode(static_cast<uint8_t>(c))));
      if (it != token_ids_.end()) {
        symbols.push_back(it->second);
      } else if (unknown_id_) {
        symbols.push_back(*unknown_id_);
      }
    }
    tokenizer_internal::ApplyRankedMerges(merges_, &symbols);
  }
  out->insert(out->end(), symbols.begin(), symbols.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (word_cache_.size() >= kMaxCacheEntries) word_cache_.clear();
    word_cache_.emplace(std::string(word), std::move(symbols));
  }
}

void Tokenizer::EncodeSentencePiece(std::string_view text, bool is_first_fragment,
                                    std::vector<int32_t>* out) const {
  std::string normalized;
  normalized.reserve(text.size() + 8);
  bool add_prefix = space_prefix_ == SpacePrefix::kEveryFragment ||
                    (space_prefix_ == SpacePrefix::kFirstFragment && is_first_fragment);
  for (char c : text) {
    if (c == ' ' && replace_spaces_) {
      normalized.append(kSpaceMarker);
    } else {
      normalized.push_back(c);
    }
  }
  if (add_prefix && !(space_prefix_only_if_missing_ && normalized.starts_with(kSpaceMarker))) {
    normalized.insert(0, replace_spaces_ ? kSpaceMarker : std::string_view(" "));
  }
  if (!split_on_space_marker_) {
    EncodeSentencePieceWord(normalized, out);
    return;
  }
  // Metaspace(split=true): each word starts at a U+2581.
  size_t start = 0;
  for (size_t pos = normalized.find(kSpaceMarker, 1); pos != std::string::npos;
       pos = normalized.find(kSpaceMarker, pos + kSpaceMarker.size())) {
    EncodeSentencePieceWord(std::string_view(normalized).substr(start, pos - start), out);
    start = pos;
  }
  EncodeSentencePieceWord(std::string_view(normalized).substr(start), out);
}

int32_t Tokenizer::FindMergeable(std::string_view text) const {
  auto it = token_ids_.find(std::string(text));
  if (it == token_ids_.end()) return -1;
  TokenType type = token_types_[it->second];
  return type == TokenType::kNormal || type == TokenType::kUndefined ? it->second : -1;
}

void Tokenizer::AppendByteFallback(std::string_view bytes, std::vector<int32_t>* out) const {
  bool all_present = byte_fallback_;
  for (char c : bytes) all_present = all_present && byte_token_ids_[static_cast<uint8_t>(c)] >= 0;
  if (all_present) {
    for (char c : bytes) out->push_back(byte_token_ids_[static_cast<uint8_t>(c)]);
  } else if (unknown_id_) {
    out->push_back(*unknown_id_);
  }
}

void Tokenizer::EncodeSentencePieceWord(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  std::vector<size_t> lengths;
  for (size_t pos = 0; pos < word.size();) {
    size_t n = Utf8SymbolLength(word, pos);
    lengths.push_back(n);
    pos += n;
  }
  if (use_score_merges_) {
    tokenizer_internal::ApplyScoredMerges(
        word, [this](std::string_view s) { return FindMergeable(s); },
        [this](int32_t id) { return scores_[id]; }, &lengths);
    size_t pos = 0;
    for (size_t n : lengths) {
      std::string_view piece = word.substr(pos, n);
      pos += n;
      auto it = token_ids_.find(std::string(piece));
      if (it != token_ids_.end()) {
        out->push_back(it->second);
      } else {
        AppendByteFallback(piece, out);
      }
    }
    return;
  }
  // Ranked merges over ids; unknown characters become byte tokens that never merge.
  std::vector<int32_t> symbols;
  symbols.reserve(lengths.size());
  size_t pos = 0;
  for (size_t n : lengths) {
    std::string_view piece = word.substr(pos, n);
    pos += n;
    auto it = token_ids_.find(std::string(piece));
    if (it != token_ids_.end()) {
      symbols.push_back(it->second);
    } else {
      std::vector<int32_t> fallback;
      AppendByteFallback(piece, &fallback);
      for (int32_t id : fallback) symbols.push_back(-1 - id);  // negative: never merges
    }
  }
  tokenizer_internal::ApplyRankedMerges(merges_, &symbols);
  for (int32_t id : symbols) out->push_back(id < 0 ? -1 - id : id);
}

std::string Tokenizer::TokenBytes(int32_t id, bool skip_special) const {
  if (id < 0 || id >= vocab_size()) return {};
  auto normalized = normalized_added_texts_.find(id);
  const std::string& text = normalized != normalized_added_texts_.end() ? normalized->second : tokens_[id];
  switch (token_types_[id]) {
    case TokenType::kControl:
    case TokenType::kUnknown:
      if (skip_special) return std::string();
      [[fallthrough]];
    case TokenType::kUserDefined:
      return kind_ == Kind::kByteLevel ? ByteLevelDecodeAddedToken(text) : text;
    case TokenType::kByte:
      if (kind_ == Kind::kSentencePiece && text.size() == 6 && text.starts_with("<0x")) {
        return std::string(1, static_cast<char>(std::stoi(text.substr(3, 2), nullptr, 16)));
      }
      break;
    default:
      break;
  }
  std::string out;
  if (kind_ == Kind::kByteLevel) {
    for (size_t pos = 0; pos < text.size();) {
      size_t n = tokenizer_internal::ValidUtf8CharLength(text, pos);
      if (n == 0) { out.push_back(text[pos++]); continue; }
      int byte = tokenizer_internal::UnicodeToByte(tokenizer_internal::DecodeUtf8Char(text, pos, n));
      if (byte >= 0) {
        out.push_back(static_cast<char>(byte));
      } else {
        out.append(text, pos, n);
      }
      pos += n;
    }
    return out;
  }
  for (size_t pos = 0; pos < text.size();) {
    if (text.compare(pos, kSpaceMarker.size(), kSpaceMarker) == 0) {
      out.push_back(' ');
      pos += kSpaceMarker.size();
    } else {
      out.push_back(text[pos++]);
    }
  }
  return out;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  StreamingDecoder decoder(*this, skip_special);
  std::string text;
  for (int32_t id : ids) text += decoder.Push(id);
  text += decoder.Flush();
  return text;
}

std::string StreamingDecoder::Push(int32_t id) {
  std::string bytes = tokenizer_.TokenBytes(id, skip_special_);
  if (bytes.empty()) return {};
  if (!has_output_) {
    has_output_ = true;
    if (tokenizer_.strips_leading_space() && bytes[0] == ' ') bytes.erase(0, 1);
  }
  pending_ += bytes;
  size_t complete = tokenizer_internal::CompletedUtf8PrefixLength(pending_);
  std::string ready = tokenizer_internal::ToValidUtf8(std::string_view(pending_).substr(0, complete));
  pending_.erase(0, complete);
  return ready;
}

std::string StreamingDecoder::Flush() {
  std::string rest = tokenizer_internal::ToValidUtf8(pending_);
  pending_.clear();
  return rest;
}

}  // namespace tetra
