// Text <-> token ids, exact to the reference Hugging Face tokenizers.
//
// Two model kinds:
//  - byte-level BPE (GPT-2, Llama-3, Qwen2, DeepSeek, Falcon, StarCoder, ...):
//    regex pre-tokenization chosen by family, bytes mapped to printable
//    characters, merges applied by rank;
//  - SentencePiece-style BPE (Llama-2/SPM, Phi-3, Baichuan, Mistral, Gemma):
//    spaces become U+2581 (with an optional prefix), merges by score (GGUF) or
//    by rank (tokenizer.json), <0xNN> byte fallback for unknown characters.
// Special and added tokens are cut out of the text before either model runs;
// tokenizer.json normalizers (NFC, Lowercase, ...) apply to the text between
// them, as in the `tokenizers` library (see FromHfJson).
//
// Immutable after construction: every const method may be called from any
// thread at once (the word cache inside is locked).
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "tokenizer/bpe_merges.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre_tokenizer.h"

namespace tetra {

// GGUF's token types (tokenizer.ggml.token_type).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // special: <s>, <|im_start|>; split out only with parse_special
  kUserDefined = 4,  // added tokens that are always split out of the text
  kUnused = 5,
  kByte = 6,         // <0xNN> byte fallback
};

class Tokenizer {
 public:
  // From GGUF key/values: tokenizer.ggml.{model ("gpt2" | "llama"), pre, tokens,
  // merges (gpt2) or scores (llama), token_type, bos/eos/eot/eom/unknown/
  // padding_token_id, add_bos_token, add_eos_token, add_space_prefix}.
  // Arrays are JSON arrays. Errors name the key and the problem.
  static StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const nlohmann::ordered_json& metadata);

  // From a HF tokenizer.json (BPE model; ByteLevel / Split / Digits /
  // Punctuation / Metaspace pre-tokenizers; the normalizers of normalizer.h;
  // added_tokens; TemplateProcessing for BOS/EOS) and its tokenizer_config.json
  // (may be null: add_bos_token, add_eos_token, eos_token override the file).
  // Encode then works as the library does: added tokens with "normalized":
  // false are cut out of the raw text; each remaining piece is normalized, and
  // added tokens with "normalized": true (matched by their normalized text) are
  // cut out of the normalized piece.
  static StatusOr<std::unique_ptr<Tokenizer>> FromHfJson(const std::string& tokenizer_json_path,
                                                         const nlohmann::json& tokenizer_config);

  // add_special: add BOS (and EOS where the model says so).
  // parse_special: special-token text (e.g. "<|im_start|>") becomes that token;
  // when false it is plain text. Added (non-special) tokens are always matched.
  std::vector<int32_t> Encode(std::string_view text, bool add_special, bool parse_special) const;
  // Invalid UTF-8 (from ids that split a character) becomes U+FFFD.
  std::string Decode(std::span<const int32_t> ids, bool skip_special) const;

  std::string TokenText(int32_t id) const;  // the raw vocab string; "" when out of range
  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  // eos, eot, eom and the families' end-of-turn tokens: generation stops at any.
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }
  bool IsControl(int32_t id) const;  // control or unknown: skipped by Decode(skip_special)
  std::optional<int32_t> TokenId(std::string_view text) const;
  std::string_view model_name() const { return model_name_; }  // "gpt2 (pre: qwen2)"
  bool is_byte_level() const { return kind_ == Kind::kByteLevel; }

  // The bytes one token contributes to decoded text (may be part of a UTF-8
  // character). For streaming; Decode = strip rules + ToValidUtf8(concat).
  std::string TokenBytes(int32_t id, bool skip_special) const;
  // SentencePiece decoders drop one leading space of the decoded text.
  bool strips_leading_space() const { return strip_leading_space_; }

 private:
  enum class Kind { kByteLevel, kSentencePiece };
  enum class SpacePrefix { kNever, kEveryFragment, kFirstFragment };
  struct AddedToken {
    int32_t id;
    bool is_special;  // matched only with parse_special
    bool lstrip = false, rstrip = false;
    bool is_normalized = false;  // matched in normalized text (tokenizer.json "normalized")
  };
  struct TrieNode {
    std::vector<std::pair<uint8_t, int32_t>> children;  // byte -> node index
    int32_t added_index = -1;                           // into added_tokens_
  };
  struct Fragment {
    std::string_view text;  // when token_id < 0
    int32_t token_id = -1;
  };

  Tokenizer() = default;
  Status Finish();  // builds lookups, checks ids; after loaders fill the fields
  void AddAddedToken(AddedToken token);
  void AddStopIdIfPresent(std::string_view text);
  static std::vector<TrieNode> BuildTrie(const std::vector<std::pair<std::string, int32_t>>& texts);
  std::vector<Fragment> SplitAddedTokens(std::string_view text, bool parse_special,
                                         const std::vector<TrieNode>& trie) const;
  // The pieces between non-normalized added tokens, normalized and split on
  // normalized added tokens. Views point into *normalized_texts.
  std::vector<Fragment> NormalizeAndSplit(std::vector<Fragment> fragments, bool parse_special,
                                          std::vector<std::string>* normalized_texts) const;
  void EncodeByteLevel(std::string_view text, std::vector<int32_t>* out) const;
  void EncodeByteLevelWord(std::string_view word, std::vector<int32_t>* out) const;
  void EncodeSentencePiece(std::string_view text, bool is_first_fragment, std::vector<int32_t>* out) const;
  void EncodeSentencePieceWord(std::string_view word, std::vector<int32_t>* out) const;
  void AppendByteFallback(std::string_view bytes, std::vector<int32_t>* out) const;
  int32_t FindMergeable(std::string_view text) const;

  Kind kind_ = Kind::kByteLevel;
  std::string model_name_;
  std::vector<std::string> tokens_;
  std::vector<TokenType> token_types_;
  std::vector<float> scores_;  // SentencePiece with score merges only
  std::unordered_map<std::string, int32_t> token_ids_;
  tokenizer_internal::MergeTable merges_;
  bool use_score_merges_ = false;  // SentencePiece GGUF: merges by score, no merge table
  bool ignore_merges_ = false;     // a word that is itself a token skips merging (Llama-3)
  std::shared_ptr<const tokenizer_internal::RegexPreTokenizer> pre_tokenizer_;
  bool byte_level_add_prefix_space_ = false;
  // SentencePiece text handling.
  SpacePrefix space_prefix_ = SpacePrefix::kNever;
  bool space_prefix_only_if_missing_ = false;  // Metaspace: no prefix when text starts with U+2581
  bool replace_spaces_ = true;                 // ' ' -> U+2581
  bool split_on_space_marker_ = false;         // Metaspace(split=true)
  bool byte_fallback_ = true;
  bool strip_leading_space_ = false;
  std::array<int32_t, 256> byte_token_ids_{};  // <0xNN>, -1 when absent
  std::optional<int32_t> unknown_id_;

  // tokenizer.json "normalizer"; null when absent (GGUF: SentencePiece spaces
  // are handled by space_prefix_/replace_spaces_ above).
  std::unique_ptr<const tokenizer_internal::Normalizer> normalizer_;

  std::vector<AddedToken> added_tokens_;
  std::vector<TrieNode> trie_;             // added tokens matched in the raw text
  std::vector<TrieNode> normalized_trie_;  // is_normalized ones, by normalized text; empty when none
  // Decoded text of normalized added tokens whose normalized form differs (HF
  // decodes those from the normalized form).
  std::unordered_map<int32_t, std::string> normalized_added_texts_;

  std::optional<int32_t> bos_id_, eos_id_;
  bool add_bos_ = false, add_eos_ = false;
  std::vector<int32_t> stop_ids_;

  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> word_cache_;  // GUARDED_BY(cache_mutex_)
};

// Streaming detokenizer for one sequence: Push(id) returns the text completed
// so far and never a partial UTF-8 character (bytes wait until it completes);
// Flush() returns the rest. Concatenating all chunks equals
// tokenizer.Decode(all ids, skip_special). One thread at a time.
class StreamingDecoder {
 public:
  StreamingDecoder(const Tokenizer& tokenizer, bool skip_special)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}
  std::string Push(int32_t id);
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  bool has_output_ = false;  // the SentencePiece leading space is stripped only once
  std::string pending_;      // bytes of an unfinished character
};

}  // namespace tetra
