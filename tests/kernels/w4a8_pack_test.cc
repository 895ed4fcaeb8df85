// PackW4: lossless repacking of Q4_0 / Q4_1, Q4_K up to f16 group parameters (checked against the gguf
// package's dequantizer through the recorded fixtures, and against
// DequantizeRow on random blocks), bounded rounding for other types, and
// clear errors for bad input.
#include "kernels/w4a8/packed_w4.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/reference/dequantize.h"
#include "w4a8_test_util.h"

namespace tetra {
namespace {

using w4a8_testing::RandomBlocks;
using w4a8_testing::RandomFloats;
using w4a8_testing::ReadFixture;
using w4a8_testing::ViewOf;

// Values compare with ==, so +0 and -0 are equal (Q4_0's d*(q-8) can give -0
// where q*d + (-8d) gives +0); everything else must match bit for bit.
void ExpectSameValues(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  int mismatches = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!(got[i] == want[i]) && mismatches++ < 5) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << want[i];
    }
  }
  EXPECT_EQ(mismatches, 0) << what;
}

std::vector<float> UnpackAll(const PackedW4& w) {
  std::vector<float> out(static_cast<size_t>(w.rows * w.cols));
  for (int64_t r = 0; r < w.rows; ++r) UnpackW4Row(w, r, out.data() + r * w.cols);
  return out;
}

// Q4_0 and Q4_1 unpack to exactly the dequantizer's values. Q4_K keeps its
// codes but its group scale d*sc and min dmin*m are rounded to f16: each
// value is within 2^-11 of |q * scale| + |min| of the source.
void ExpectPackedValues(const PackedW4& packed, DType dtype, const std::vector<float>& want, const std::string& name) {
  const std::vector<float> got = UnpackAll(packed);
  if (dtype != DType::kQ4_K) {
    EXPECT_TRUE(packed.is_lossless) << name;
    ExpectSameValues(got, want, name);
    return;
  }
  EXPECT_FALSE(packed.is_lossless) << name;
  ASSERT_EQ(got.size(), want.size());
  int failures = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    // |q * scale| + |min| <= 2 * max |value| of the group (q <= 15, min <= 0).
    const size_t group = i / 32 * 32;
    float group_max = 0.0f;
    for (size_t j = group; j < group + 32; ++j) group_max = std::max(group_max, std::fabs(want[j]));
    if (std::fabs(got[i] - want[i]) > 2.0f * group_max * std::ldexp(1.0f, -11) && failures++ < 5) {
      ADD_FAILURE() << name << " value " << i << ": " << got[i] << " vs " << want[i];
    }
  }
  EXPECT_EQ(failures, 0);
}

struct FixtureCase {
  DType dtype;
  int64_t rows, cols;  // rows * cols = the fixture's element count
};

class PackW4GgufFixtureTest : public ::testing::TestWithParam<FixtureCase> {};

TEST_P(PackW4GgufFixtureTest, UnpackEqualsGgufDequantizer) {
  const FixtureCase c = GetParam();
  const std::string name(DTypeName(c.dtype));
  const std::vector<uint8_t> blocks = ReadFixture("quant/" + name + ".blocks");
  const std::vector<uint8_t> expected_bytes = ReadFixture("quant/" + name + ".expected");
  ASSERT_EQ(blocks.size(), RowBytes(c.dtype, c.rows * c.cols)) << name;
  ASSERT_EQ(expected_bytes.size(), static_cast<size_t>(c.rows * c.cols) * 4) << name;
  std::vector<float> expected(static_cast<size_t>(c.rows * c.cols));
  std::memcpy(expected.data(), expected_bytes.data(), expected_bytes.size());

  StatusOr<PackedW4> packed = PackW4(ViewOf(c.dtype, c.rows, c.cols, blocks), 32);
  ASSERT_TRUE(packed.ok()) << packed.status().message();
  ExpectPackedValues(*packed, c.dtype, expected, name);
}

INSTANTIATE_TEST_SUITE_P(Types, PackW4GgufFixtureTest,
                         ::testing::Values(FixtureCase{DType::kQ4_0, 4, 256}, FixtureCase{DType::kQ4_1, 8, 128},
                                           FixtureCase{DType::kQ4_K, 3, 512}),
                         [](const auto& info) { return std::string(DTypeName(info.param.dtype)); });

class PackW4LosslessTest : public ::testing::TestWithParam<DType> {};

TEST_P(PackW4LosslessTest, UnpackEqualsDequantizeRowOnRandomBlocks) {
  const DType dtype = GetParam();
  std::mt19937 rng(7);
  // 37 rows: two full tiles and a partial one; a row stride with padding.
  const int64_t rows = 37, cols = 512;
  const size_t row_bytes = RowBytes(dtype, cols);
  const size_t stride = row_bytes + 13;
  const std::vector<uint8_t> dense = RandomBlocks(dtype, rows, cols, rng);
  std::vector<uint8_t> strided(rows * stride, 0xAB);
  for (int64_t r = 0; r < rows; ++r) std::memcpy(strided.data() + r * stride, dense.data() + r * row_bytes, row_bytes);
  MatrixView view = ViewOf(dtype, rows, cols, strided);
  view.row_stride_bytes = stride;

  StatusOr<PackedW4> packed = PackW4(view, 32);
  ASSERT_TRUE(packed.ok()) << packed.status().message();
  EXPECT_EQ(packed->num_tiles, 3);
  // Q4_0 is symmetric: no mins, 4.5 bits a weight; the others 5 bits.
  EXPECT_EQ(packed->has_mins, dtype != DType::kQ4_0);
  EXPECT_EQ(packed->tile_bytes * 8, static_cast<size_t>(PackedW4::kTileRows * cols) * (dtype == DType::kQ4_0 ? 9 : 10) / 2);
  std::vector<float> want(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) DequantizeRow(dtype, dense.data() + r * row_bytes, want.data() + r * cols, cols);
  ExpectPackedValues(*packed, dtype, want, std::string(DTypeName(dtype)));
}

INSTANTIATE_TEST_SUITE_P(Types, PackW4LosslessTest, ::testing::Values(DType::kQ4_0, DType::kQ4_1, DType::kQ4_K),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

// Asymmetric rounding, checked against plain min/max rounding computed here
// in double: every value within one step (max - min) / 15 of its source (the
// search may clip an outlier by part of a step), and each group's squared
// error no larger than min/max rounding's (with slack for the f16 rounding
// of scale and min, each off by up to 2^-11 of itself).
void ExpectRoundedAtLeastAsWellAsMinMax(const PackedW4& w, const std::vector<float>& source) {
  const std::vector<float> got = UnpackAll(w);
  int failures = 0;
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t g = 0; g < w.num_groups; ++g) {
      const size_t first = static_cast<size_t>(r * w.cols + g * w.group_size);
      const float* v = source.data() + first;
      const auto [lo, hi] = std::minmax_element(v, v + w.group_size);
      const double step = (static_cast<double>(*hi) - *lo) / 15.0;
      const double slack = std::ldexp(std::fabs(*lo) + std::fabs(*hi), -10) + 1e-30;
      double error = 0.0, min_max_error = 0.0;
      for (int i = 0; i < w.group_size; ++i) {
        const double d = static_cast<double>(got[first + i]) - v[i];
        error += d * d;
        const double q = step > 0 ? std::clamp(std::nearbyint((v[i] - *lo) / step), 0.0, 15.0) : 0.0;
        const double e = q * step + *lo - v[i];
        min_max_error += e * e;
        if (std::fabs(d) > step + slack && failures++ < 5) {
          ADD_FAILURE() << "row " << r << " column " << g * w.group_size + i << ": " << got[first + i] << " vs "
                        << v[i] << " (step " << step << ")";
        }
      }
      const double error_slack = w.group_size * (slack * slack + 2 * slack * step);
      if (error > min_max_error + error_slack && failures++ < 5) {
        ADD_FAILURE() << "row " << r << " group " << g << ": squared error " << error << " above min/max rounding's "
                      << min_max_error;
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

class PackW4GroupSizeTest : public ::testing::TestWithParam<int> {};

TEST_P(PackW4GroupSizeTest, F32RoundsAtLeastAsWellAsMinMax) {
  const int group_size = GetParam();
  std::mt19937 rng(11);
  const int64_t rows = 19, cols = 384;
  std::vector<float> source = RandomFloats(static_cast<size_t>(rows * cols), rng, 0.05f);
  for (int i = 0; i < 128; ++i) source[static_cast<size_t>(i)] = 0.25f;  // a constant group stays exact
  std::vector<uint8_t> bytes(source.size() * 4);
  std::memcpy(bytes.data(), source.data(), bytes.size());
  StatusOr<PackedW4> packed = PackW4(ViewOf(DType::kF32, rows, cols, bytes), group_size);
  ASSERT_TRUE(packed.ok()) << packed.status().message();
  EXPECT_FALSE(packed->is_lossless);
  EXPECT_EQ(packed->num_groups, cols / group_size);
  ExpectRoundedAtLeastAsWellAsMinMax(*packed, source);
  std::vector<float> first_row(static_cast<size_t>(cols));
  UnpackW4Row(*packed, 0, first_row.data());
  EXPECT_EQ(first_row[0], 0.25f);
  EXPECT_EQ(first_row[31], 0.25f);
}

INSTANTIATE_TEST_SUITE_P(GroupSizes, PackW4GroupSizeTest, ::testing::Values(32, 64, 96, 128));

TEST(PackW4, OtherTypesRoundFromTheirDequantizedValues) {
  std::mt19937 rng(3);
  const int64_t rows = 17, cols = 256;
  for (DType dtype : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kF16, DType::kBF16}) {
    std::vector<uint8_t> bytes;
    if (dtype == DType::kF16 || dtype == DType::kBF16) {
      bytes.resize(static_cast<size_t>(rows * cols) * 2);
      for (size_t i = 0; i < bytes.size(); i += 2) {
        // Moderate finite values: exponent byte well inside the range.
        bytes[i] = static_cast<uint8_t>(rng());
        bytes[i + 1] = static_cast<uint8_t>(dtype == DType::kF16 ? (0x30 + rng() % 8) | (rng() & 0x80)
                                                                  : (0x3C + rng() % 3) | (rng() & 0x80));
      }
    } else {
      bytes = RandomBlocks(dtype, rows, cols, rng);
    }
    const MatrixView view = ViewOf(dtype, rows, cols, bytes);
    std::vector<float> source(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r) DequantizeRow(dtype, view.row(r), source.data() + r * cols, cols);
    // Q4_0 / Q4_K with group 64 are not lossless: they go through rounding.
    const int group_size = (dtype == DType::kQ4_0 || dtype == DType::kQ4_K) ? 64 : 32;
    StatusOr<PackedW4> packed = PackW4(view, group_size);
    ASSERT_TRUE(packed.ok()) << DTypeName(dtype) << ": " << packed.status().message();
    EXPECT_FALSE(packed->is_lossless);
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    ExpectRoundedAtLeastAsWellAsMinMax(*packed, source);
  }
}

// --- bad input -------------------------------------------------------------

std::string PackError(const MatrixView& view, int group_size) {
  StatusOr<PackedW4> packed = PackW4(view, group_size);
  EXPECT_FALSE(packed.ok());
  return packed.ok() ? std::string() : packed.status().message();
}

TEST(PackW4Errors, ColumnsNotAMultipleOfTheGroupSize) {
  std::vector<uint8_t> bytes(4 * 48 * 4, 0);
  const std::string message = PackError(ViewOf(DType::kF32, 4, 48, bytes), 32);
  EXPECT_NE(message.find("48 columns is not a multiple of the group size 32"), std::string::npos) << message;
  const std::string message64 = PackError(ViewOf(DType::kF32, 4, 96, bytes), 64);
  EXPECT_NE(message64.find("96 columns is not a multiple of the group size 64"), std::string::npos) << message64;
}

TEST(PackW4Errors, BadGroupSizes) {
  std::vector<uint8_t> bytes(256 * 4, 0);
  for (int group_size : {0, 16, 31, 48, 160, 256, -32}) {
    const std::string message = PackError(ViewOf(DType::kF32, 1, 256, bytes), group_size);
    EXPECT_NE(message.find("group size " + std::to_string(group_size)), std::string::npos) << message;
  }
}

TEST(PackW4Errors, TypesThatCannotBeDequantized) {
  std::vector<uint8_t> bytes(64 * 4, 0);
  const std::string message = PackError(ViewOf(DType::kI32, 1, 64, bytes), 32);
  EXPECT_NE(message.find("cannot pack weights of type I32"), std::string::npos) << message;
}

TEST(PackW4Errors, ColumnsNotAMultipleOfTheBlockSize) {
  // 288 columns: a multiple of 32 but not of Q4_K's 256.
  std::vector<uint8_t> bytes(2 * 144, 0);
  const std::string message = PackError(ViewOf(DType::kQ4_K, 1, 288, bytes), 32);
  EXPECT_NE(message.find("Q4_K block size 256"), std::string::npos) << message;
}

TEST(PackW4Errors, NonFiniteValueNamesRowAndColumn) {
  std::vector<float> values(3 * 64, 1.0f);
  values[2 * 64 + 45] = std::numeric_limits<float>::quiet_NaN();
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  const std::string message = PackError(ViewOf(DType::kF32, 3, 64, bytes), 32);
  EXPECT_NE(message.find("row 2, column 45"), std::string::npos) << message;
  EXPECT_NE(message.find("not finite"), std::string::npos) << message;
}

TEST(PackW4Errors, InfiniteBlockScale) {
  std::mt19937 rng(5);
  std::vector<uint8_t> bytes = RandomBlocks(DType::kQ4_0, 2, 64, rng);
  const uint16_t infinity = 0x7C00;
  std::memcpy(bytes.data() + 18 * 3, &infinity, 2);  // row 1, block 1: column 32
  const std::string message = PackError(ViewOf(DType::kQ4_0, 2, 64, bytes), 32);
  EXPECT_NE(message.find("Q4_0"), std::string::npos) << message;
  EXPECT_NE(message.find("row 1, column 32"), std::string::npos) << message;
}

TEST(PackW4Errors, HugeRangeOverflows) {
  std::vector<float> values(32, 0.0f);
  values[0] = -3e38f;
  values[1] = 3e38f;
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  const std::string message = PackError(ViewOf(DType::kF32, 1, 32, bytes), 32);
  EXPECT_NE(message.find("overflows"), std::string::npos) << message;
}

TEST(PackW4Errors, ShortRowStrideAndMissingData) {
  std::vector<uint8_t> bytes(2 * 64 * 4, 0);
  MatrixView view = ViewOf(DType::kF32, 2, 64, bytes);
  view.row_stride_bytes = 100;
  EXPECT_NE(PackError(view, 32).find("row stride 100 bytes"), std::string::npos);
  view = ViewOf(DType::kF32, 2, 64, bytes);
  view.data = nullptr;
  EXPECT_NE(PackError(view, 32).find("no data"), std::string::npos);
}

TEST(PackW4, ZeroRowsIsEmpty) {
  std::vector<uint8_t> bytes;
  MatrixView view = ViewOf(DType::kF32, 0, 64, bytes);
  StatusOr<PackedW4> packed = PackW4(view, 32);
  ASSERT_TRUE(packed.ok()) << packed.status().message();
  EXPECT_EQ(packed->num_tiles, 0);
}

}  // namespace
}  // namespace tetra
