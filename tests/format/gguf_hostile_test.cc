// Hostile GGUF inputs: each must give an error that names the file and the
// problem, never a crash or an allocation sized by the attacker.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "format/gguf.h"
#include "test_util.h"

namespace tetra {
namespace {

using testing::GgufBytes;
using ::testing::HasSubstr;

std::string ParseError(const std::vector<uint8_t>& bytes) {
  StatusOr<ParsedGguf> parsed = ParseGguf(bytes.data(), bytes.size(), "model.gguf");
  if (parsed.ok()) return "(parsed ok)";
  EXPECT_EQ(parsed.status().message().rfind("model.gguf: ", 0), 0u) << parsed.status().message();
  return parsed.status().message();
}

constexpr uint32_t kF32 = 0;
constexpr uint32_t kQ4_K = 12;

TEST(GgufHostileTest, MinimalValidFileParses) {
  GgufBytes b;
  b.Header(1, 0).Tensor("w", {4, 2}, kF32, 0).AlignAndData(32, 32);
  StatusOr<ParsedGguf> parsed = ParseGguf(b.bytes().data(), b.bytes().size(), "model.gguf");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->tensors[0].shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(parsed->tensors[0].num_bytes, 32u);
}

TEST(GgufHostileTest, BadMagic) {
  std::vector<uint8_t> bytes = {'G', 'G', 'M', 'L', 3, 0, 0, 0};
  EXPECT_THAT(ParseError(bytes), HasSubstr("bad magic"));
}

TEST(GgufHostileTest, EmptyAndTruncatedHeader) {
  EXPECT_THAT(ParseError({}), HasSubstr("truncated"));
  GgufBytes b;
  b.Header(0, 0);
  std::vector<uint8_t> bytes = b.bytes();
  bytes.resize(10);
  EXPECT_THAT(ParseError(bytes), HasSubstr("truncated"));
}

TEST(GgufHostileTest, UnsupportedVersions) {
  for (uint32_t version : {0u, 1u, 4u, 0xFFFFFFFFu}) {
    GgufBytes b;
    b.Header(0, 0, version);
    EXPECT_THAT(ParseError(b.bytes()), HasSubstr("unsupported GGUF version " + std::to_string(version)));
  }
  GgufBytes big_endian;
  big_endian.Header(0, 0, 0x03000000);
  EXPECT_THAT(ParseError(big_endian.bytes()), HasSubstr("big-endian"));
}

TEST(GgufHostileTest, Version2Accepted) {
  GgufBytes b;
  b.Header(0, 1, 2).Str("k").U32(4).U32(7);
  StatusOr<ParsedGguf> parsed = ParseGguf(b.bytes().data(), b.bytes().size(), "model.gguf");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->version, 2u);
  EXPECT_EQ(parsed->metadata["k"], 7);
}

TEST(GgufHostileTest, AbsurdCounts) {
  GgufBytes tensors;
  tensors.Header(~0ull, 0);
  EXPECT_THAT(ParseError(tensors.bytes()), HasSubstr("tensor count 18446744073709551615 cannot fit"));
  GgufBytes kvs;
  kvs.Header(0, 1ull << 40);
  EXPECT_THAT(ParseError(kvs.bytes()), HasSubstr("metadata count 1099511627776 cannot fit"));
}

TEST(GgufHostileTest, AbsurdStringLength) {
  GgufBytes key;
  key.Header(0, 1).U64(1ull << 62).U64(0).U64(0);
  EXPECT_THAT(ParseError(key.bytes()), HasSubstr("string length 4611686018427387904 exceeds"));
  GgufBytes value;
  value.Header(0, 1).Str("general.name").U32(8).U64(1000).Str("short");
  EXPECT_THAT(ParseError(value.bytes()), HasSubstr("metadata key 'general.name': string length 1000 exceeds"));
}

TEST(GgufHostileTest, AbsurdArrayLength) {
  GgufBytes b;
  b.Header(0, 1).Str("tokenizer.ggml.tokens").U32(9).U32(8).U64(1ull << 60);
  EXPECT_THAT(ParseError(b.bytes()),
              HasSubstr("metadata key 'tokenizer.ggml.tokens': array length 1152921504606846976 of string cannot fit"));
}

TEST(GgufHostileTest, UnknownValueTypes) {
  GgufBytes value;
  value.Header(0, 1).Str("k").U32(13).U32(0);
  EXPECT_THAT(ParseError(value.bytes()), HasSubstr("metadata key 'k': unknown value type 13"));
  GgufBytes element;
  element.Header(0, 1).Str("k").U32(9).U32(99).U64(1).U32(0);
  EXPECT_THAT(ParseError(element.bytes()), HasSubstr("unknown array element type 99"));
}

TEST(GgufHostileTest, NestedArrayDepthLimit) {
  GgufBytes b;
  b.Header(0, 1).Str("deep").U32(9);
  for (int i = 0; i < 100; ++i) b.U32(9).U64(1);  // array of array of ... (never ends)
  b.U32(4).U64(0);
  EXPECT_THAT(ParseError(b.bytes()), HasSubstr("metadata key 'deep': arrays nested deeper than 8 levels"));

  GgufBytes ok;  // 8 levels are fine
  ok.Header(0, 1).Str("deep").U32(9);
  for (int i = 0; i < 7; ++i) ok.U32(9).U64(1);
  ok.U32(4).U64(1).U32(42);
  StatusOr<ParsedGguf> parsed = ParseGguf(ok.bytes().data(), ok.bytes().size(), "model.gguf");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->metadata["deep"][0][0][0][0][0][0][0][0], 42);
}

TEST(GgufHostileTest, DuplicateKeysAndTensors) {
  GgufBytes keys;
  keys.Header(0, 2).Str("a").U32(4).U32(1).Str("a").U32(4).U32(2);
  EXPECT_THAT(ParseError(keys.bytes()), HasSubstr("duplicate metadata key 'a'"));
  GgufBytes tensors;
  tensors.Header(2, 0).Tensor("w", {8}, kF32, 0).Tensor("w", {8}, kF32, 32).AlignAndData(32, 64);
  EXPECT_THAT(ParseError(tensors.bytes()), HasSubstr("duplicate tensor name 'w'"));
}

TEST(GgufHostileTest, BadAlignment) {
  for (uint32_t alignment : {0u, 3u, 48u}) {
    GgufBytes b;
    b.Header(0, 1).Str("general.alignment").U32(4).U32(alignment);
    EXPECT_THAT(ParseError(b.bytes()), HasSubstr("general.alignment " + std::to_string(alignment) +
                                                 " is not a power of two"));
  }
  GgufBytes wrong_type;
  wrong_type.Header(0, 1).Str("general.alignment").U32(8).Str("32");
  EXPECT_THAT(ParseError(wrong_type.bytes()), HasSubstr("general.alignment must be an integer"));
}

TEST(GgufHostileTest, UnknownTensorType) {
  GgufBytes b;
  b.Header(1, 0).Tensor("blk.0.attn_q.weight", {32}, 19, 0).AlignAndData(32, 64);
  EXPECT_THAT(ParseError(b.bytes()),
              HasSubstr("tensor 'blk.0.attn_q.weight': unknown or unsupported tensor type id 19"));
}

TEST(GgufHostileTest, BadDimensions) {
  GgufBytes too_many;
  too_many.Header(1, 0).Tensor("t", {1, 1, 1, 1, 1}, kF32, 0).AlignAndData(32, 32);
  EXPECT_THAT(ParseError(too_many.bytes()), HasSubstr("tensor 't': 5 dimensions (must be 1..4)"));
  GgufBytes none;
  none.Header(1, 0).Tensor("t", {}, kF32, 0).AlignAndData(32, 32);
  EXPECT_THAT(ParseError(none.bytes()), HasSubstr("tensor 't': 0 dimensions"));
  GgufBytes zero;
  zero.Header(1, 0).Tensor("t", {4, 0}, kF32, 0).AlignAndData(32, 32);
  EXPECT_THAT(ParseError(zero.bytes()), HasSubstr("tensor 't': dimension 1 has invalid size 0"));
  GgufBytes negative;
  negative.Header(1, 0).Tensor("t", {~0ull}, kF32, 0).AlignAndData(32, 32);
  EXPECT_THAT(ParseError(negative.bytes()), HasSubstr("tensor 't': dimension 0 has invalid size -1"));
  GgufBytes overflow;
  overflow.Header(1, 0).Tensor("t", {1ull << 32, 1ull << 32}, kF32, 0).AlignAndData(32, 32);
  EXPECT_THAT(ParseError(overflow.bytes()), HasSubstr("tensor 't': element count overflows"));
  GgufBytes byte_overflow;  // 2^62 f32 elements = 2^64 bytes
  byte_overflow.Header(1, 0).Tensor("t", {1ull << 62}, kF32, 0).AlignAndData(32, 32);
  EXPECT_THAT(ParseError(byte_overflow.bytes()), HasSubstr("tensor 't': byte size overflows"));
}

TEST(GgufHostileTest, RowNotMultipleOfBlockSize) {
  GgufBytes b;
  b.Header(1, 0).Tensor("blk.0.ffn_down.weight", {100, 2}, kQ4_K, 0).AlignAndData(32, 1024);
  EXPECT_THAT(ParseError(b.bytes()),
              HasSubstr("tensor 'blk.0.ffn_down.weight': row length 100 is not a multiple of the Q4_K block size 256"));
}

TEST(GgufHostileTest, MisalignedOffset) {
  GgufBytes b;
  b.Header(1, 0).Tensor("t", {8}, kF32, 4).AlignAndData(32, 64);
  EXPECT_THAT(ParseError(b.bytes()), HasSubstr("tensor 't': data offset 4 is not a multiple of the alignment 32"));
}

TEST(GgufHostileTest, DataPastEndOfFile) {
  GgufBytes b;
  b.Header(2, 0)
      .Tensor("blk.0.ffn_up_exps.weight", {8}, kF32, 0)
      .Tensor("blk.3.ffn_up_exps.weight", {16}, kF32, 32)
      .AlignAndData(32, 40);
  const size_t size = b.bytes().size();
  const size_t data_start = size - 40;
  EXPECT_EQ(ParseError(b.bytes()), "model.gguf: tensor 'blk.3.ffn_up_exps.weight' ends at byte " +
                                       std::to_string(data_start + 32 + 64) + " past file size " +
                                       std::to_string(size));
  GgufBytes huge_offset;
  huge_offset.Header(1, 0).Tensor("t", {8}, kF32, ~0ull - 31).AlignAndData(32, 32);
  EXPECT_THAT(ParseError(huge_offset.bytes()), HasSubstr("tensor 't' ends at byte beyond 2^64 past file size"));
}

TEST(GgufHostileTest, ManyKeysParseWithoutQuadraticLookups) {
  // 200k keys: a linear search per key (ordered_json) would take minutes.
  constexpr int kNumKeys = 200000;
  GgufBytes b;
  b.Header(0, kNumKeys);
  for (int i = 0; i < kNumKeys; ++i) b.Str("k" + std::to_string(i)).U32(0).Put<uint8_t>(1);
  StatusOr<ParsedGguf> parsed = ParseGguf(b.bytes().data(), b.bytes().size(), "model.gguf");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->metadata.size(), static_cast<size_t>(kNumKeys));
  EXPECT_EQ(parsed->metadata.begin().key(), "k0");
  EXPECT_EQ(parsed->metadata["k199999"], 1);
  GgufBytes duplicate = b;
  duplicate.Str("k5").U32(0).Put<uint8_t>(1);
  std::vector<uint8_t> bytes = duplicate.bytes();
  const uint64_t num_kv = kNumKeys + 1;
  std::memcpy(bytes.data() + 16, &num_kv, 8);
  EXPECT_THAT(ParseError(bytes), HasSubstr("duplicate metadata key 'k5'"));
}

TEST(GgufHostileTest, NoTensorsAndNoDataIsFine) {
  GgufBytes b;
  b.Header(0, 1).Str("general.architecture").U32(8).Str("llama");
  StatusOr<ParsedGguf> parsed = ParseGguf(b.bytes().data(), b.bytes().size(), "model.gguf");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_TRUE(parsed->tensors.empty());
}

}  // namespace
}  // namespace tetra
