// W6A8 (the Q6_K output head path): Q6_K packs bit for bit (checked against
// the dequantizer, itself bit-exact with the gguf package) including extreme
// scales and codes, the scalar kernel matches a double-precision oracle of the
// unpacked weights, every ISA (AVX2, AVX-512 VNNI) matches scalar bit for bit
// on swept shapes and row ranges, and bad input is a Status.
#include "kernels/w4a8/w6a8.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "base/cpu_features.h"
#include "kernels/reference/dequantize.h"
#include "w4a8_test_util.h"

namespace tetra {
namespace {

using w4a8_testing::NormalisedMaxError;
using w4a8_testing::RandomFloats;
using w4a8_testing::RandomHalf;
using w4a8_testing::ViewOf;

constexpr size_t kBlockBytes = 210;  // ql[128] qh[64] scales[16] d

// Random Q6_K blocks for a [rows, cols] matrix: random codes and sub-scales,
// a finite d. With `extreme`, about half the blocks take the edges instead:
// d of ±65504, the smallest subnormal or -0, sub-scales of -128 or 127, all
// codes 0 (q - 32 = -32) or all 63.
std::vector<uint8_t> RandomQ6_K(int64_t rows, int64_t cols, std::mt19937& rng, bool extreme = false) {
  const int64_t num_blocks = rows * cols / 256;
  std::vector<uint8_t> bytes(static_cast<size_t>(num_blocks) * kBlockBytes);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  for (int64_t b = 0; b < num_blocks; ++b) {
    uint8_t* block = bytes.data() + b * kBlockBytes;
    uint16_t d = RandomHalf(rng);
    if (extreme) {
      switch (rng() % 8) {
        case 0: d = 0x7BFF; break;  // 65504
        case 1: d = 0xFBFF; break;  // -65504
        case 2: d = 0x0001; break;  // 2^-24
        case 3: d = 0x8000; break;  // -0
        case 4: std::memset(block + 192, 0x80, 16); break;  // sc = -128
        case 5: std::memset(block + 192, 0x7F, 16); break;  // sc = 127
        case 6: std::memset(block, 0x00, 192); break;       // q = 0
        default: std::memset(block, 0xFF, 192); break;      // q = 63
      }
    }
    std::memcpy(block + 208, &d, 2);
  }
  return bytes;
}

struct Problem {
  std::vector<uint8_t> bytes;
  MatrixView view;
  PackedW6 packed;
  std::vector<float> x;
  QuantizedActivations a;
};

void MakeProblem(int64_t rows, int64_t cols, int64_t tokens, uint32_t seed, Problem* p, bool extreme = false) {
  std::mt19937 rng(seed);
  p->bytes = RandomQ6_K(rows, cols, rng, extreme);
  p->view = ViewOf(DType::kQ6_K, rows, cols, p->bytes);
  StatusOr<PackedW6> packed = PackW6(p->view);
  ASSERT_TRUE(packed.ok()) << packed.status().message();
  p->packed = std::move(packed).value();
  p->x = RandomFloats(static_cast<size_t>(tokens * cols), rng);
  QuantizeActivations(p->x.data(), tokens, cols, 32, &p->a);
}

std::vector<float> RunGemm(const Problem& p, Isa isa) {
  std::vector<float> y(static_cast<size_t>(p.a.num_tokens * p.packed.rows), std::nanf(""));
  GemmW6A8(p.packed, p.a, y.data(), p.packed.rows, 0, p.packed.rows, isa);
  return y;
}

// Σ_c unpacked w[r, c] * (a[t, c] * sa[t, group]) in double.
std::vector<float> DoubleOracle(const Problem& p) {
  const int64_t rows = p.packed.rows, cols = p.packed.cols, tokens = p.a.num_tokens;
  std::vector<float> want(static_cast<size_t>(tokens * rows)), row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    UnpackW6Row(p.packed, r, row.data());
    for (int64_t t = 0; t < tokens; ++t) {
      double sum = 0;
      for (int64_t c = 0; c < cols; ++c) {
        sum += static_cast<double>(row[c]) * p.a.token_values(t)[c] * p.a.token_scales(t)[c / 32];
      }
      want[static_cast<size_t>(t * rows + r)] = static_cast<float>(sum);
    }
  }
  return want;
}

void ExpectUnpackEqualsDequantizer(const PackedW6& packed, const MatrixView& view) {
  std::vector<float> got(static_cast<size_t>(view.cols)), want(static_cast<size_t>(view.cols));
  for (int64_t r = 0; r < view.rows; ++r) {
    UnpackW6Row(packed, r, got.data());
    DequantizeRow(DType::kQ6_K, view.row(r), want.data(), view.cols);
    // Bit patterns, so -0 against +0 counts.
    ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << "row " << r;
  }
}

TEST(PackW6, Q6_KIsExactAt6Point5625Bits) {
  Problem p;
  MakeProblem(37, 512, 1, 3, &p, /*extreme=*/true);
  // Per 16 rows x 256 inputs: 3072 code bytes, 256 sub-scale bytes, 32 d bytes.
  EXPECT_EQ(p.packed.tile_bytes, static_cast<size_t>(2) * (3072 + 256 + 32));
  EXPECT_EQ(p.packed.tile_bytes * 8, static_cast<size_t>(16 * 512) * 65625 / 10000);
  ExpectUnpackEqualsDequantizer(p.packed, p.view);
}

TEST(PackW6, PaddedStrideAndPoolPackTheSame) {
  std::mt19937 rng(11);
  const int64_t rows = 70, cols = 768;
  const size_t row_bytes = 3 * kBlockBytes, stride = row_bytes + 40;
  const std::vector<uint8_t> dense = RandomQ6_K(rows, cols, rng, /*extreme=*/true);
  std::vector<uint8_t> strided(stride * rows, 0xAB);
  for (int64_t r = 0; r < rows; ++r) std::memcpy(&strided[r * stride], &dense[r * row_bytes], row_bytes);
  MatrixView view = ViewOf(DType::kQ6_K, rows, cols, strided);
  view.row_stride_bytes = stride;
  StatusOr<PackedW6> alone = PackW6(view);
  ASSERT_TRUE(alone.ok()) << alone.status().message();
  ThreadPool pool(2);
  StatusOr<PackedW6> pooled = PackW6(view, &pool);
  ASSERT_TRUE(pooled.ok()) << pooled.status().message();
  ASSERT_EQ(alone->data.size(), pooled->data.size());
  EXPECT_EQ(std::memcmp(alone->data.data(), pooled->data.data(), alone->data.size()), 0);
  ExpectUnpackEqualsDequantizer(*alone, view);
}

TEST(PackW6, BadInputIsAnError) {
  auto expect_error = [](const StatusOr<PackedW6>& packed, std::string_view words) {
    ASSERT_FALSE(packed.ok());
    EXPECT_NE(packed.status().message().find(words), std::string::npos) << packed.status().message();
  };
  std::vector<uint8_t> floats(4 * 256 * 2);
  expect_error(PackW6(ViewOf(DType::kF32, 2, 256, floats)), "not Q6_K");
  std::vector<uint8_t> q8_0(34 * 8);
  expect_error(PackW6(ViewOf(DType::kQ8_0, 1, 256, q8_0)), "not Q6_K");

  std::mt19937 rng(1);
  std::vector<uint8_t> blocks = RandomQ6_K(2, 512, rng);
  MatrixView narrow = ViewOf(DType::kQ6_K, 1, 256, blocks);
  narrow.cols = 128;
  expect_error(PackW6(narrow), "128 columns");
  MatrixView null_view = ViewOf(DType::kQ6_K, 2, 512, blocks);
  null_view.data = nullptr;
  expect_error(PackW6(null_view), "no data");
  MatrixView short_stride = ViewOf(DType::kQ6_K, 2, 512, blocks);
  short_stride.row_stride_bytes = kBlockBytes;
  expect_error(PackW6(short_stride), "row stride");

  // An infinite d in row 1's second block, a NaN one: named by row and column.
  for (uint16_t bad : {uint16_t{0x7C00}, uint16_t{0x7E00}}) {
    std::vector<uint8_t> broken = blocks;
    std::memcpy(&broken[3 * kBlockBytes + 208], &bad, 2);
    expect_error(PackW6(ViewOf(DType::kQ6_K, 2, 512, broken)), "row 1, column 256");
  }
}

TEST(GemmW6A8Scalar, MatchesDoubleOracleOfUnpackedWeights) {
  Problem p;
  MakeProblem(33, 512, 5, 21, &p);
  EXPECT_LE(NormalisedMaxError(RunGemm(p, Isa::kScalar), DoubleOracle(p)), 2e-6);
}

// The largest sums the format allows: q - 32 = -32, sc = -128, a = 127 in
// every input (acc = 2^24 - 2^17 per group, still exact).
TEST(GemmW6A8, LargestSumsAreExact) {
  Problem p;
  const int64_t rows = 20, cols = 2048;
  p.bytes.assign(static_cast<size_t>(rows * cols / 256) * kBlockBytes, 0);
  for (size_t b = 0; b < p.bytes.size() / kBlockBytes; ++b) {
    std::memset(&p.bytes[b * kBlockBytes + 192], 0x80, 16);
    const uint16_t one = 0x3C00;
    std::memcpy(&p.bytes[b * kBlockBytes + 208], &one, 2);
  }
  p.view = ViewOf(DType::kQ6_K, rows, cols, p.bytes);
  StatusOr<PackedW6> packed = PackW6(p.view);
  ASSERT_TRUE(packed.ok()) << packed.status().message();
  p.packed = std::move(packed).value();
  p.x.assign(static_cast<size_t>(2 * cols), 0.5f);
  QuantizeActivations(p.x.data(), 2, cols, 32, &p.a);
  ASSERT_EQ(p.a.token_values(0)[0], 127);
  const std::vector<float> want = DoubleOracle(p);
  for (Isa isa : SupportedW6A8Isas()) {
    EXPECT_LE(NormalisedMaxError(RunGemm(p, isa), want), 2e-6) << IsaName(isa);
  }
}

// The sweeps below cover every SIMD kernel this CPU can run: AVX2 wherever
// AVX2, FMA and F16C are there (not only on CPUs without AVX-512).
TEST(GemmW6A8, SupportedIsasFollowTheCpu) {
  const std::vector<Isa> isas = SupportedW6A8Isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), Isa::kScalar);
#if defined(__x86_64__)
  const CpuFeatures& cpu = GetCpuFeatures();
  auto has = [&](Isa isa) { return std::find(isas.begin(), isas.end(), isa) != isas.end(); };
  EXPECT_EQ(has(Isa::kAvx2), cpu.avx2 && cpu.fma && cpu.f16c);
  EXPECT_EQ(has(Isa::kAvx512Vnni), cpu.avx512f && cpu.avx512bw && cpu.avx512vnni);
  EXPECT_FALSE(has(Isa::kAvxVnni));
  EXPECT_EQ(HasFastW6A8(), isas.size() > 1);
#endif
}

TEST(GemmW6A8, EveryIsaMatchesScalarOnSweptShapes) {
  for (int64_t rows : {1, 15, 16, 17, 100, 257}) {
    for (int64_t cols : {256, 512, 2048}) {
      for (int64_t tokens : {1, 2, 3, 4, 5, 17}) {
        Problem p;
        MakeProblem(rows, cols, tokens, static_cast<uint32_t>(rows * 31 + cols + tokens), &p,
                    /*extreme=*/rows % 2 == 1);
        const std::vector<float> reference = RunGemm(p, Isa::kScalar);
        if (rows == 100 && !HasFailure()) {
          EXPECT_LE(NormalisedMaxError(reference, DoubleOracle(p)), 2e-6) << "cols " << cols << " tokens " << tokens;
        }
        for (Isa isa : SupportedW6A8Isas()) {
          if (isa == Isa::kScalar) continue;
          EXPECT_EQ(RunGemm(p, isa), reference)
              << IsaName(isa) << " rows " << rows << " cols " << cols << " tokens " << tokens;
        }
      }
    }
  }
}

TEST(GemmW6A8, RowRangesWriteOnlyTheirRows) {
  Problem p;
  MakeProblem(50, 512, 6, 9, &p);
  const std::vector<float> full = RunGemm(p, Isa::kScalar);
  for (Isa isa : SupportedW6A8Isas()) {
    std::vector<float> y(static_cast<size_t>(6 * 64), -1.0f);
    for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, 5}, {5, 37}, {37, 37}, {37, 50}}) {
      GemmW6A8(p.packed, p.a, y.data(), 64, begin, end, isa);
    }
    for (int64_t t = 0; t < 6; ++t) {
      for (int64_t r = 0; r < 64; ++r) {
        const float got = y[static_cast<size_t>(t * 64 + r)];
        if (r >= 50) {
          EXPECT_EQ(got, -1.0f) << IsaName(isa) << " wrote padding";
        } else {
          EXPECT_EQ(got, full[static_cast<size_t>(t * 50 + r)]) << IsaName(isa) << " token " << t << " row " << r;
        }
      }
    }
  }
}

}  // namespace
}  // namespace tetra
