#include "transport/wire.h"

#include <gtest/gtest.h>

#include <xxhash.h>

#include "base/cpu_features.h"
#include "transport/hash_dispatch.h"

namespace tetra::transport {
namespace {

FrameHeader Sample() {
  FrameHeader h;
  h.type = FrameType::kChunk;
  h.transfer_id = 0x0123456789abcdefULL;
  h.index = 7;
  h.payload_bytes = 12345;
  h.payload_hash = 0xfeedfacecafebeefULL;
  return h;
}

TEST(Wire, HeaderRoundTripsEveryField) {
  uint8_t bytes[kFrameHeaderBytes];
  EncodeFrameHeader(Sample(), bytes);
  auto h = DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderBytes>(bytes));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->type, FrameType::kChunk);
  EXPECT_EQ(h->transfer_id, 0x0123456789abcdefULL);
  EXPECT_EQ(h->index, 7u);
  EXPECT_EQ(h->payload_bytes, 12345u);
  EXPECT_EQ(h->payload_hash, 0xfeedfacecafebeefULL);
}

TEST(Wire, LayoutIsLittleEndianAsDocumented) {
  uint8_t bytes[kFrameHeaderBytes];
  EncodeFrameHeader(Sample(), bytes);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(bytes), 4), "TKV1");
  EXPECT_EQ(bytes[4], 1);  // version
  EXPECT_EQ(bytes[6], 2);  // chunk
  EXPECT_EQ(bytes[8], 0xef);
  EXPECT_EQ(bytes[15], 0x01);
  EXPECT_EQ(bytes[16], 7);
  EXPECT_EQ(bytes[24], 12345 & 0xff);
  EXPECT_EQ(bytes[25], 12345 >> 8);
  // The header hash is the libxxhash XXH3-64 of the first 40 bytes.
  uint64_t stored = 0;
  for (int i = 7; i >= 0; --i) stored = (stored << 8) | bytes[40 + i];
  EXPECT_EQ(stored, XXH3_64bits(bytes, 40));
}

TEST(Wire, EveryFlippedBitIsRefused) {
  uint8_t clean[kFrameHeaderBytes];
  EncodeFrameHeader(Sample(), clean);
  for (size_t i = 0; i < kFrameHeaderBytes; ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      uint8_t bytes[kFrameHeaderBytes];
      std::copy(clean, clean + kFrameHeaderBytes, bytes);
      bytes[i] ^= static_cast<uint8_t>(1 << bit);
      EXPECT_FALSE(DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderBytes>(bytes)).ok()) << i << ":" << bit;
    }
  }
}

TEST(Wire, ErrorsNameTheProblem) {
  uint8_t bytes[kFrameHeaderBytes];
  FrameHeader h = Sample();
  h.type = FrameType::kResult;
  h.payload_bytes = kMaxMessageBytes + 1;
  EncodeFrameHeader(h, bytes);
  auto decoded = DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderBytes>(bytes));
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.status().message().find("result payload"), std::string::npos) << decoded.status().message();

  h = Sample();
  h.type = FrameType::kFinish;
  h.payload_bytes = 10;
  EncodeFrameHeader(h, bytes);
  decoded = DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderBytes>(bytes));
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.status().message().find("finish with a payload"), std::string::npos);

  std::fill(bytes, bytes + kFrameHeaderBytes, 'G');  // an HTTP client on the wrong port
  decoded = DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderBytes>(bytes));
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.status().message().find("bad magic"), std::string::npos);
}

TEST(Wire, HasherOverPiecesEqualsOneShot) {
  std::vector<uint8_t> data(100000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  PayloadHasher hasher;
  hasher.Update({data.data(), 1});
  hasher.Update({data.data() + 1, 4095});
  hasher.Update({data.data() + 4096, data.size() - 4096});
  EXPECT_EQ(hasher.Digest(), HashPayload(data));
  EXPECT_EQ(HashPayload(data), XXH3_64bits(data.data(), data.size()));
}

}  // namespace
}  // namespace tetra::transport

namespace tetra::transport {
namespace {

// Each ISA build of XXH3 (hash_impl.h) against libxxhash's, one-shot and
// streamed in uneven pieces, on lengths around XXH3's internal boundaries.
TEST(Wire, EveryHashBuildEqualsLibxxhash) {
#if defined(__x86_64__)
  std::vector<uint8_t> data(1 << 20);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  struct Build {
    const char* name;
    bool runs;
    HashFunctions f;
  };
  const CpuFeatures& cpu = GetCpuFeatures();
  const Build builds[] = {
      {"avx2", cpu.avx2, {hash_avx2::Reset, hash_avx2::Update, hash_avx2::Digest, hash_avx2::Hash}},
      {"avx512", cpu.avx512f && cpu.avx512bw, {hash_avx512::Reset, hash_avx512::Update, hash_avx512::Digest, hash_avx512::Hash}},
  };
  for (const Build& b : builds) {
    if (!b.runs) continue;
    for (size_t n : {0, 1, 3, 16, 17, 128, 129, 240, 241, 1024, 1025, 4096, 65537, 1 << 20}) {
      SCOPED_TRACE(::testing::Message() << b.name << " " << n);
      EXPECT_EQ(b.f.hash(data.data(), n), XXH3_64bits(data.data(), n));
      XXH3_state_t* state = XXH3_createState();
      b.f.reset(state);
      for (size_t at = 0, piece = 1; at < n; at += piece, piece = piece * 3 + 1) {
        b.f.update(state, data.data() + at, std::min(piece, n - at));
      }
      EXPECT_EQ(b.f.digest(state), XXH3_64bits(data.data(), n));
      XXH3_freeState(state);
    }
  }
#else
  GTEST_SKIP() << "x86-64 only";
#endif
}

}  // namespace
}  // namespace tetra::transport
