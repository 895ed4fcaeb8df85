// Helpers shared by the tokenizer tests: loading a GGUF's metadata and the
// llama.cpp-style .inp/.out test vectors from the shared test data.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "format/gguf.h"
#include "tokenizer/tokenizer.h"

namespace tetra::testing {

inline std::string VocabDir() { return std::string(TETRA_SHARED_DIR) + "/testdata/vocab"; }
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

inline std::vector<int32_t> ParseIds(const std::string& line) {
  std::vector<int32_t> ids;
  std::istringstream in(line);
  int64_t id;
  while (in >> id) ids.push_back(static_cast<int32_t>(id));
  return ids;
}

}  // namespace tetra::testing
