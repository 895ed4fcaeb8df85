#include "tokenizer/unicode_text.h"

#include <array>

namespace tetra::tokenizer_internal {

// How many bytes of the sequence starting at text[pos] are a valid prefix of
// some character (0 when text[pos] itself cannot start one), and how many the
// character needs in total.
static void ScanUtf8(std::string_view text, size_t pos, size_t* valid_prefix, size_t* needed) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  uint8_t lead = byte(pos);
  *valid_prefix = 0;
  *needed = 1;
  if (lead < 0x80) {
    *valid_prefix = 1;
    return;
  }
  uint8_t low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    *needed = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    *needed = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    *needed = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return;
  }
  *valid_prefix = 1;
  for (size_t i = 1; i < *needed; ++i) {
    if (pos + i >= text.size()) return;
    uint8_t b = byte(pos + i);
    uint8_t lo = i == 1 ? low : 0x80, hi = i == 1 ? high : 0xBF;
    if (b < lo || b > hi) return;
    *valid_prefix = i + 1;
  }
}

size_t ValidUtf8CharLength(std::string_view text, size_t pos) {
  size_t valid = 0, needed = 0;
  ScanUtf8(text, pos, &valid, &needed);
  return valid == needed ? valid : 0;
}

uint32_t DecodeUtf8Char(std::string_view text, size_t pos, size_t length) {
  const auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(text[pos + i])); };
  switch (length) {
    case 1: return byte(0);
    case 2: return ((byte(0) & 0x1F) << 6) | (byte(1) & 0x3F);
    case 3: return ((byte(0) & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F);
    default:
      return ((byte(0) & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) |
             (byte(3) & 0x3F);
  }
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string ToValidUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t valid = 0, needed = 0;
    ScanUtf8(bytes, pos, &valid, &needed);
    if (valid == needed) {
      out.append(bytes.substr(pos, valid));
      pos += valid;
    } else {
      out.append("\xEF\xBF\xBD");
      pos += valid == 0 ? 1 : valid;
    }
  }
  return out;
}

size_t CompletedUtf8PrefixLength(std::string_view bytes) {
  // Only the last (up to 3) bytes can start an unfinished character.
  size_t start = bytes.size() > 3 ? bytes.size() - 3 : 0;
  for (size_t pos = start; pos < bytes.size(); ++pos) {
    size_t valid = 0, needed = 0;
    ScanUtf8(bytes, pos, &valid, &needed);
    if (valid > 0 && valid < needed && pos + valid == bytes.size()) return pos;
  }
  return bytes.size();
}

namespace {
struct ByteMap {
  std::array<std::string, 256> byte_to_text;
  std::array<int16_t, 512> codepoint_to_byte;  // every mapped codepoint is below 512
  ByteMap() {
    codepoint_to_byte.fill(-1);
    int next_extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      uint32_t cp = printable ? b : 256 + next_extra++;
      AppendUtf8(cp, &byte_to_text[b]);
      codepoint_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};
const ByteMap& GetByteMap() {
  static const ByteMap map;
  return map;
}
}  // namespace

std::string_view ByteToUnicode(uint8_t byte) { return GetByteMap().byte_to_text[byte]; }

int UnicodeToByte(uint32_t codepoint) {
  return codepoint < 512 ? GetByteMap().codepoint_to_byte[codepoint] : -1;
}

}  // namespace tetra::tokenizer_internal
