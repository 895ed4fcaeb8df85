// Dequantization must equal the gguf package's dequantizer bit for bit, for
// every type, on random blocks recorded by tools/fixtures/make_quant_fixtures.py.
#include "kernels/reference/dequantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "test_util.h"

namespace tetra {
namespace {

using testing::FixturePath;
using testing::ReadBytes;

struct QuantCase {
  DType dtype;
};

class DequantizeOracleTest : public ::testing::TestWithParam<DType> {};

TEST_P(DequantizeOracleTest, BitExactWithGgufPackage) {
  const DType dtype = GetParam();
  const std::string name(DTypeName(dtype));
  const nlohmann::json manifest = testing::ReadJson(FixturePath("quant/manifest.json"));
  ASSERT_TRUE(manifest.contains(name)) << name;
  const int64_t num_elements = manifest[name]["num_elements"].get<int64_t>();
  const std::vector<uint8_t> blocks = ReadBytes(FixturePath("quant/" + name + ".blocks"));
  const std::vector<uint8_t> expected_bytes = ReadBytes(FixturePath("quant/" + name + ".expected"));
  ASSERT_EQ(expected_bytes.size(), static_cast<size_t>(num_elements) * 4);
  ASSERT_EQ(blocks.size(), RowBytes(dtype, num_elements));

  std::vector<float> out(num_elements, -12345.0f);
  DequantizeRow(dtype, blocks.data(), out.data(), num_elements);
  int mismatches = 0;
  for (int64_t i = 0; i < num_elements; ++i) {
    uint32_t got, want;
    std::memcpy(&got, &out[i], 4);
    std::memcpy(&want, expected_bytes.data() + 4 * i, 4);
    if (got != want && mismatches++ < 10) {
      float want_f;
      std::memcpy(&want_f, &want, 4);
      ADD_FAILURE() << name << " element " << i << ": got " << out[i] << " (0x" << std::hex << got
                    << ") want " << want_f << " (0x" << want << ")" << std::dec;
    }
  }
  EXPECT_EQ(mismatches, 0) << name;

  // Row by row (one block at a time) gives the same result.
  const int64_t block_size = GetDTypeTraits(dtype).block_size;
  const size_t block_bytes = GetDTypeTraits(dtype).block_bytes;
  std::vector<float> one(block_size);
  for (int64_t b = 0; b * block_size < num_elements; b += 3) {
    DequantizeRow(dtype, blocks.data() + b * block_bytes, one.data(), block_size);
    EXPECT_EQ(std::memcmp(one.data(), out.data() + b * block_size, block_size * 4), 0) << name << " block " << b;
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, DequantizeOracleTest,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0,
                                           DType::kQ4_0, DType::kQ4_1, DType::kQ5_0, DType::kQ5_1,
                                           DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K,
                                           DType::kQ6_K),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

TEST(HalfToFloatTest, SpecialValues) {
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7C00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
}

TEST(BFloat16ToFloatTest, IsTheHighHalf) {
  EXPECT_EQ(BFloat16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0xC040), -3.0f);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(0x7FC0)));
}

TEST(DTypeTraitsTest, BlockBytesMatchGgml) {
  // Bytes per block from ggml's block structs.
  EXPECT_EQ(GetDTypeTraits(DType::kQ4_0).block_bytes, 18u);
  EXPECT_EQ(GetDTypeTraits(DType::kQ4_1).block_bytes, 20u);
  EXPECT_EQ(GetDTypeTraits(DType::kQ5_0).block_bytes, 22u);
  EXPECT_EQ(GetDTypeTraits(DType::kQ5_1).block_bytes, 24u);
  EXPECT_EQ(GetDTypeTraits(DType::kQ8_0).block_bytes, 34u);
  EXPECT_EQ(GetDTypeTraits(DType::kQ2_K).block_bytes, 84u);
  EXPECT_EQ(GetDTypeTraits(DType::kQ3_K).block_bytes, 110u);
  EXPECT_EQ(GetDTypeTraits(DType::kQ4_K).block_bytes, 144u);
  EXPECT_EQ(GetDTypeTraits(DType::kQ5_K).block_bytes, 176u);
  EXPECT_EQ(GetDTypeTraits(DType::kQ6_K).block_bytes, 210u);
}

}  // namespace
}  // namespace tetra
