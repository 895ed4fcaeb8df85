// Helpers shared by the tokenizer tests: loading a GGUF's metadata and the
// llama.cpp-style .inp/.out test vectors (tests/fixtures/vocab/).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "format/gguf.h"
#include "tokenizer/tokenizer.h"

namespace tetra::testing {

inline std::string VocabDir() { return std::string(TETRA_FIXTURES_DIR) + "/vocab"; }
inline std::string FixtureDir() { return std::string(TETRA_FIXTURES_DIR) + "/tokenizer"; }

inline std::string ReadFileBytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

inline StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(const std::string& path) {
  std::string bytes = ReadFileBytes(path);
  if (bytes.empty()) return Status::Errorf("{}: cannot read", path);
  TETRA_ASSIGN_OR_RETURN(ParsedGguf gguf,
                         ParseGguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path));
  return Tokenizer::FromGguf(gguf.metadata);
}

// One case recorded from the `tokenizers` library: ids with and without
// special-token parsing and three decodes; check(bool) counts each result.
template <typename Check>
void CheckRecordedCase(const Tokenizer& tok, const nlohmann::json& item, Check check) {
  const std::string text = item["text"];
    const auto plain = item["ids_plain"].get<std::vector<int32_t>>();
    const auto special = item["ids_special"].get<std::vector<int32_t>>();
    EXPECT_TRUE(check(tok.Encode(text, false, false) == plain))
        << "plain '" << text << "'\n expected " << ::testing::PrintToString(plain) << "\n got      "
        << ::testing::PrintToString(tok.Encode(text, false, false));
    EXPECT_TRUE(check(tok.Encode(text, true, true) == special))
        << "special '" << text << "'\n expected " << ::testing::PrintToString(special) << "\n got      "
        << ::testing::PrintToString(tok.Encode(text, true, true));
    EXPECT_TRUE(check(tok.Decode(special, false) == item["decode_special_keep"].get<std::string>()))
        << "decode keep '" << text << "' got '" << tok.Decode(special, false) << "'";
    EXPECT_TRUE(check(tok.Decode(special, true) == item["decode_special_skip"].get<std::string>()))
        << "decode skip '" << text << "' got '" << tok.Decode(special, true) << "'";
    EXPECT_TRUE(check(tok.Decode(plain, false) == item["decode_plain"].get<std::string>()))
        << "decode plain '" << text << "' got '" << tok.Decode(plain, false) << "'";
}

inline std::vector<int32_t> ParseIds(const std::string& line) {
  std::vector<int32_t> ids;
  std::istringstream in(line);
  int64_t id;
  while (in >> id) ids.push_back(static_cast<int32_t>(id));
  return ids;
}

}  // namespace tetra::testing
