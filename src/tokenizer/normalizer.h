// Text normalizers of HF tokenizer.json files (the "normalizer" key), applied
// to the text between added tokens before pre-tokenization, exactly as the
// `tokenizers` library does:
//   NFC, NFD, NFKC, NFKD   Unicode normalization forms (utf8proc)
//   Lowercase              full lowercase mapping (Rust's char::to_lowercase)
//   StripAccents           drops combining marks (Mn, Mc, Me)
//   Strip                  drops leading and/or trailing White_Space
//   Replace                every match of a String or Regex -> literal content
//   Prepend                prefix on non-empty text
//   Sequence               the above in order
// Anything else (BertNormalizer, Precompiled, Nmt, ByteLevel) is an error at
// load time naming the type, never a silent difference.
//
// Input may hold invalid UTF-8 (Encode accepts any bytes): each maximal valid
// run is normalized on its own and invalid bytes pass through unchanged, so
// they still round-trip through byte-level BPE.
//
// Immutable after FromJson; any thread may call Normalize concurrently.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace tetra::tokenizer_internal {

class Normalizer {
 public:
  // `spec` is the value of tokenizer.json's "normalizer" (an object with
  // "type"); null gives a normalizer that changes nothing. Errors name the type
  // and the bad field, e.g. "normalizer type 'Precompiled' is not supported".
  static StatusOr<std::unique_ptr<const Normalizer>> FromJson(const nlohmann::json& spec);
  ~Normalizer();

  std::string Normalize(std::string_view text) const;
  bool is_identity() const { return steps_.empty(); }

 private:
  struct Step;
  Normalizer() = default;
  Status AddSteps(const nlohmann::json& spec);

  std::vector<std::unique_ptr<Step>> steps_;  // applied in order
};

}  // namespace tetra::tokenizer_internal
