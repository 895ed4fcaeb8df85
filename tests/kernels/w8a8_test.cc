// W8A8 (the 8-bit output head path): Q8_0 packs bit for bit (checked against
// the dequantizer, itself bit-exact with the gguf package), other types round
// within half an 8-bit step, the scalar kernel matches a double-precision
// oracle of the unpacked weights, and every ISA matches scalar bit for bit on
// swept shapes.
#include "kernels/w4a8/w8a8.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "kernels/reference/dequantize.h"
#include "w4a8_test_util.h"

namespace tetra {
namespace {

using w4a8_testing::NormalisedMaxError;
using w4a8_testing::RandomBlocks;
using w4a8_testing::RandomFloats;
using w4a8_testing::ViewOf;

struct Problem {
  std::vector<uint8_t> bytes;
  MatrixView view;
  PackedW8 packed;
  std::vector<float> x;
  QuantizedActivations a;
};

void MakeProblem(DType source, int64_t rows, int64_t cols, int64_t tokens, uint32_t seed, Problem* p) {
  std::mt19937 rng(seed);
  if (source == DType::kQ8_0) {
    p->bytes = RandomBlocks(DType::kQ8_0, rows, cols, rng);
  } else {
    const std::vector<float> w = RandomFloats(static_cast<size_t>(rows * cols), rng, 0.05f);
    p->bytes.resize(w.size() * 4);
    std::memcpy(p->bytes.data(), w.data(), p->bytes.size());
  }
  p->view = ViewOf(source, rows, cols, p->bytes);
  StatusOr<PackedW8> packed = PackW8(p->view);
  ASSERT_TRUE(packed.ok()) << packed.status().message();
  p->packed = std::move(packed).value();
  p->x = RandomFloats(static_cast<size_t>(tokens * cols), rng);
  QuantizeActivations(p->x.data(), tokens, cols, 32, &p->a);
}

std::vector<float> RunGemm(const Problem& p, Isa isa) {
  std::vector<float> y(static_cast<size_t>(p.a.num_tokens * p.packed.rows), std::nanf(""));
  GemmW8A8(p.packed, p.a, y.data(), p.packed.rows, 0, p.packed.rows, isa);
  return y;
}

TEST(PackW8, Q8_0IsExactAndSymmetric) {
  Problem p;
  MakeProblem(DType::kQ8_0, 37, 256, 1, 3, &p);
  EXPECT_TRUE(p.packed.is_lossless);
  EXPECT_FALSE(p.packed.has_mins);
  // 8.5 bits a weight: 512 code bytes and 32 scale bytes per 16 x 32 group.
  EXPECT_EQ(p.packed.tile_bytes, static_cast<size_t>(256 / 32) * (512 + 32));
  std::vector<float> got(256), want(256);
  for (int64_t r = 0; r < 37; ++r) {
    UnpackW8Row(p.packed, r, got.data());
    DequantizeRow(DType::kQ8_0, p.view.row(r), want.data(), 256);
    for (int c = 0; c < 256; ++c) ASSERT_EQ(got[c], want[c]) << "row " << r << " column " << c;
  }
}

TEST(PackW8, FloatsRoundWithinHalfAStep) {
  Problem p;
  MakeProblem(DType::kF32, 19, 384, 1, 5, &p);
  EXPECT_TRUE(p.packed.has_mins);
  const float* source = reinterpret_cast<const float*>(p.bytes.data());
  std::vector<float> got(384);
  for (int64_t r = 0; r < 19; ++r) {
    UnpackW8Row(p.packed, r, got.data());
    for (int64_t g = 0; g < 12; ++g) {
      const float* v = source + r * 384 + g * 32;
      const auto [lo, hi] = std::minmax_element(v, v + 32);
      // Half an 8-bit step, plus the f16 rounding of scale and min.
      const double bound = (*hi - *lo) / 510.0 + std::ldexp(std::fabs(*lo) + std::fabs(*hi), -10);
      for (int i = 0; i < 32; ++i) ASSERT_NEAR(got[g * 32 + i], v[i], bound) << "row " << r << " group " << g;
    }
  }
}

TEST(PackW8, BadInputIsAnError) {
  std::vector<uint8_t> bytes(4 * 48);
  EXPECT_FALSE(PackW8(ViewOf(DType::kF32, 1, 48, bytes)).ok());  // not whole groups of 32
  std::vector<float> nan_row(32, std::nanf(""));
  std::vector<uint8_t> nan_bytes(128);
  std::memcpy(nan_bytes.data(), nan_row.data(), 128);
  const auto nan_pack = PackW8(ViewOf(DType::kF32, 1, 32, nan_bytes));
  ASSERT_FALSE(nan_pack.ok());
  EXPECT_NE(nan_pack.status().message().find("not finite"), std::string::npos) << nan_pack.status().message();
}

// Σ_c unpacked w[r, c] * (a[t, c] * sa[t, group]) in double.
TEST(GemmW8A8Scalar, MatchesDoubleOracleOfUnpackedWeights) {
  for (DType source : {DType::kQ8_0, DType::kF32}) {
    Problem p;
    MakeProblem(source, 33, 512, 5, 21, &p);
    std::vector<float> want(static_cast<size_t>(5 * 33)), row(512);
    for (int64_t r = 0; r < 33; ++r) {
      UnpackW8Row(p.packed, r, row.data());
      for (int64_t t = 0; t < 5; ++t) {
        double sum = 0;
        for (int64_t c = 0; c < 512; ++c) {
          sum += static_cast<double>(row[c]) * p.a.token_values(t)[c] * p.a.token_scales(t)[c / 32];
        }
        want[static_cast<size_t>(t * 33 + r)] = static_cast<float>(sum);
      }
    }
    EXPECT_LE(NormalisedMaxError(RunGemm(p, Isa::kScalar), want), 2e-6) << DTypeName(source);
  }
}

TEST(GemmW8A8, EveryIsaMatchesScalarOnSweptShapes) {
  for (DType source : {DType::kQ8_0, DType::kF32}) {
    for (int64_t rows : {1, 15, 16, 17, 100, 257}) {
      for (int64_t cols : {32, 96, 2048}) {
        for (int64_t tokens : {1, 2, 3, 5, 16}) {
          Problem p;
          MakeProblem(source, rows, cols, tokens, static_cast<uint32_t>(rows * 31 + cols + tokens), &p);
          const std::vector<float> reference = RunGemm(p, Isa::kScalar);
          for (Isa isa : SupportedW8A8Isas()) {
            if (isa == Isa::kScalar) continue;
            EXPECT_EQ(RunGemm(p, isa), reference) << IsaName(isa) << " " << DTypeName(source) << " rows " << rows
                                              << " cols " << cols << " tokens " << tokens;
          }
        }
      }
    }
  }
}

TEST(GemmW8A8, RowRangesWriteOnlyTheirRows) {
  Problem p;
  MakeProblem(DType::kQ8_0, 50, 256, 6, 9, &p);
  const std::vector<float> full = RunGemm(p, Isa::kScalar);
  for (Isa isa : SupportedW8A8Isas()) {
    std::vector<float> y(static_cast<size_t>(6 * 64), -1.0f);
    for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, 5}, {5, 37}, {37, 50}}) {
      GemmW8A8(p.packed, p.a, y.data(), 64, begin, end, isa);
    }
    for (int64_t t = 0; t < 6; ++t) {
      for (int64_t r = 0; r < 64; ++r) {
        const float got = y[static_cast<size_t>(t * 64 + r)];
        if (r >= 50) {
          EXPECT_EQ(got, -1.0f) << IsaName(isa) << " wrote padding";
        } else {
          EXPECT_EQ(got, full[static_cast<size_t>(t * 50 + r)]) << IsaName(isa);
        }
      }
    }
  }
}

}  // namespace
}  // namespace tetra
