// Helpers shared by the format tests: reading fixtures and building GGUF
// headers byte by byte (for hostile inputs the Python writer refuses to make).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace tetra::testing {

inline std::string FixturePath(const std::string& relative) {
  return std::string(TETRA_FIXTURES_DIR) + "/" + relative;
}

inline std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return bytes;
}

inline nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

// Appends little-endian GGUF fields.
class GgufBytes {
 public:
  template <typename T>
  GgufBytes& Put(T value) {
    uint8_t raw[sizeof(T)];
    std::memcpy(raw, &value, sizeof(T));
    bytes_.insert(bytes_.end(), raw, raw + sizeof(T));
    return *this;
  }
  GgufBytes& U32(uint32_t v) { return Put(v); }
  GgufBytes& U64(uint64_t v) { return Put(v); }
  GgufBytes& Str(const std::string& s) {
    U64(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  // Magic, version, tensor count, kv count.
  GgufBytes& Header(uint64_t num_tensors, uint64_t num_kv, uint32_t version = 3) {
    bytes_.insert(bytes_.end(), {'G', 'G', 'U', 'F'});
    return U32(version).U64(num_tensors).U64(num_kv);
  }
  // A tensor info: name, dims (ne order, innermost first), type, offset.
  GgufBytes& Tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(ne.size()));
    for (uint64_t n : ne) U64(n);
    return U32(type).U64(offset);
  }
  // Zero bytes up to the next multiple of `alignment`, then `n` data bytes.
  GgufBytes& AlignAndData(size_t alignment, size_t n) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(0);
    bytes_.resize(bytes_.size() + n, 0x11);
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

}  // namespace tetra::testing
