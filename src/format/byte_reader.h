// A bounds-checked little-endian cursor over a byte buffer, for parsing
// untrusted file headers. Never reads past `size`; every read returns false
// (and leaves the cursor unchanged) when too few bytes remain.
// Not thread-safe; one parser owns one reader. Does not own the bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace tetra {

class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t position() const { return position_; }
  size_t remaining() const { return size_ - position_; }
  size_t size() const { return size_; }

  // Reads a little-endian integer or IEEE float of type T.
  template <typename T>
  bool Read(T* value) {
    if (remaining() < sizeof(T)) return false;
    std::memcpy(value, data_ + position_, sizeof(T));  // host is little-endian (x86-64, arm64)
    position_ += sizeof(T);
    return true;
  }

  // Reads `length` raw bytes into *out (byte-exact; no encoding checks).
  bool ReadBytes(uint64_t length, std::string* out) {
    if (length > remaining()) return false;
    out->assign(reinterpret_cast<const char*>(data_ + position_), static_cast<size_t>(length));
    position_ += static_cast<size_t>(length);
    return true;
  }

  bool Skip(uint64_t length) {
    if (length > remaining()) return false;
    position_ += static_cast<size_t>(length);
    return true;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t position_ = 0;
};

}  // namespace tetra
