// UTF-8 helpers and GPT-2's reversible byte <-> printable-unicode map, shared
// by the tokenizer's encoders, decoders and the streaming detokenizer.
// Pure functions over immutable tables; any thread may call them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tetra::tokenizer_internal {

// Number of bytes of the well-formed UTF-8 character starting at text[pos],
// or 0 when the bytes there are not a complete, valid character.
size_t ValidUtf8CharLength(std::string_view text, size_t pos);

// Length of a character for splitting text into symbols: the valid length, or 1
// for an invalid byte (which then goes through byte fallback on its own).
inline size_t Utf8SymbolLength(std::string_view text, size_t pos) {
  size_t n = ValidUtf8CharLength(text, pos);
  return n == 0 ? 1 : n;
}

void AppendUtf8(uint32_t codepoint, std::string* out);

// Replaces every invalid UTF-8 sequence with U+FFFD, as Rust's from_utf8_lossy
// does (one replacement per maximal invalid subpart).
std::string ToValidUtf8(std::string_view bytes);

// The length of the longest prefix of `bytes` that does not end inside a
// character that later bytes could still complete. Bytes after it are held
// back by streaming decoders.
size_t CompletedUtf8PrefixLength(std::string_view bytes);

// GPT-2 byte-level mapping: each byte becomes one printable character (UTF-8).
std::string_view ByteToUnicode(uint8_t byte);
// The byte a mapped character stands for, or -1 if `ch` (one UTF-8 character)
// is not in the map.
int UnicodeToByte(uint32_t codepoint);

// Decodes the valid character at text[pos] (length from ValidUtf8CharLength).
uint32_t DecodeUtf8Char(std::string_view text, size_t pos, size_t length);

}  // namespace tetra::tokenizer_internal
