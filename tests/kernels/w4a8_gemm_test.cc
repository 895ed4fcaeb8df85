// W4A8 GEMM: activation quantization, the scalar reference against a double
// precision oracle built from the unpacked weights, every ISA this CPU runs
// against the scalar reference on swept shapes, and the whole W4A8 product
// against the f32 reference MatMul of the dequantized weights.
#include "kernels/w4a8/gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "base/cpu_features.h"
#include "kernels/reference/dequantize.h"
#include "kernels/reference/matmul.h"
#include "w4a8_test_util.h"

namespace tetra {
namespace {

using w4a8_testing::NormalisedMaxError;
using w4a8_testing::RandomBlocks;
using w4a8_testing::RandomFloats;
using w4a8_testing::RelativeRmsError;
using w4a8_testing::ViewOf;

// Bounds on W4A8 against the f32 product (deterministic inputs). Measured on
// Q4_1 weights: Gaussian activations rms 5.9e-3 / max 8.1e-3 (one token: 96
// outputs); with outlier channels 8.9e-3 (per-token scales: 4.4e-2).
constexpr double kGaussianRmsBound = 8e-3;
constexpr double kGaussianMaxBound = 1.2e-2;
constexpr double kOutlierRmsBound = 1.5e-2;

TEST(QuantizeActivations, SymmetricPerGroupWithGroupSums) {
  std::mt19937 rng(1);
  const int64_t tokens = 3, cols = 96;
  const int group_size = 32;
  std::vector<float> x = RandomFloats(static_cast<size_t>(tokens * cols), rng);
  for (int64_t c = 0; c < cols; ++c) x[static_cast<size_t>(cols + c)] = 0.0f;  // token 1 is all zero
  for (int64_t c = 64; c < 96; ++c) x[static_cast<size_t>(2 * cols + c)] = 0.0f;  // token 2's last group is zero
  x[5] = -7.5f;    // group 0 of token 0: max |x| negative and large
  x[40] = 0.01f;   // group 1 of token 0: tiny values only
  for (int64_t c = 32; c < 64; ++c) {
    if (c != 40) x[static_cast<size_t>(c)] = 0.001f * static_cast<float>(c % 7 - 3);
  }
  QuantizedActivations a;
  QuantizeActivations(x.data(), tokens, cols, group_size, &a);
  ASSERT_EQ(a.num_groups, 3);
  ASSERT_EQ(a.values_stride % 64, 0);
  ASSERT_EQ(a.scales.size(), static_cast<size_t>(tokens * 3));
  for (int64_t g = 0; g < 3; ++g) EXPECT_EQ(a.token_scales(1)[g], 0.0f);
  EXPECT_EQ(a.token_scales(2)[2], 0.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t g = 0; g < a.num_groups; ++g) {
      float max_abs = 0.0f;
      for (int64_t c = g * group_size; c < (g + 1) * group_size; ++c) {
        max_abs = std::max(max_abs, std::fabs(x[t * cols + c]));
      }
      EXPECT_FLOAT_EQ(a.token_scales(t)[g], max_abs / 127.0f) << t << "," << g;
      int sum = 0;
      for (int64_t c = g * group_size; c < (g + 1) * group_size; ++c) {
        const int q = a.token_values(t)[c];
        sum += q;
        ASSERT_LE(std::abs(q), 127);
        if (max_abs > 0.0f) {
          // Round to nearest: within half a step of x / scale of its own group.
          EXPECT_LE(std::fabs(q - x[t * cols + c] * 127.0f / max_abs), 0.5f + 1e-4f) << t << "," << c;
        } else {
          EXPECT_EQ(q, 0);
        }
      }
      EXPECT_EQ(a.token_group_sums(t)[g], static_cast<float>(sum));
      EXPECT_EQ(a.token_scaled_group_sums(t)[g], a.token_scales(t)[g] * static_cast<float>(sum));
    }
  }
  EXPECT_EQ(a.token_values(0)[5], -127);
  EXPECT_EQ(a.token_values(0)[40], 127);  // its own group's maximum, not token 0's
}

// Halves round to even in the vector body (columns 0..31) and the scalar
// tail (32..39) of a 40-input group, in both groups of the token.
TEST(QuantizeActivations, RoundsHalvesToEvenInBodyAndTail) {
  std::vector<float> x(80);
  for (int c = 0; c < 40; ++c) x[c] = static_cast<float>(c - 20) + 0.5f;
  for (int c = 0; c < 40; ++c) x[40 + c] = 2.0f * x[c];
  x[0] = -127.0f;   // group 0: scale 1
  x[40] = -254.0f;  // group 1: scale 2
  QuantizedActivations a;
  QuantizeActivations(x.data(), 1, 80, 40, &a);
  ASSERT_EQ(a.token_scales(0)[0], 1.0f);
  ASSERT_EQ(a.token_scales(0)[1], 2.0f);
  for (int c = 0; c < 40; ++c) {
    const int want = static_cast<int>(std::nearbyint(x[c]));
    EXPECT_EQ(a.token_values(0)[c], want) << c;
    EXPECT_EQ(a.token_values(0)[40 + c], want) << 40 + c;
  }
}

TEST(QuantizeActivations, ReusesItsBuffers) {
  std::mt19937 rng(2);
  std::vector<float> x = RandomFloats(16 * 256, rng);
  QuantizedActivations a;
  QuantizeActivations(x.data(), 16, 256, 32, &a);
  const int8_t* values = a.values.data();
  const float* scales = a.scales.data();
  const float* sums = a.group_sums.data();
  const float* scaled_sums = a.scaled_group_sums.data();
  QuantizeActivations(x.data(), 3, 128, 32, &a);
  QuantizeActivations(x.data(), 16, 256, 32, &a);
  EXPECT_EQ(a.values.data(), values);
  EXPECT_EQ(a.scales.data(), scales);
  EXPECT_EQ(a.group_sums.data(), sums);
  EXPECT_EQ(a.scaled_group_sums.data(), scaled_sums);
}

TEST(QuantizeActivations, NonFiniteInputDoesNotCrash) {
  std::vector<float> x(64, 1.0f);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  x[40] = std::numeric_limits<float>::infinity();
  QuantizedActivations a;
  QuantizeActivations(x.data(), 2, 32, 32, &a);
  EXPECT_TRUE(std::isinf(a.token_scales(1)[0]) || std::isnan(a.token_scales(1)[0]));
}

// Random weights packed with the given group size: Q4_0 (symmetric) or Q4_1
// blocks (both packed exactly) when the group size is 32 and `source` names
// them, else F32 values (rounded). The pack keeps the source bytes alive.
struct Problem {
  std::vector<uint8_t> weight_bytes;
  MatrixView view;
  PackedW4 packed;
  std::vector<float> x;  // [tokens, cols]
  QuantizedActivations a;
};

void MakeProblem(int64_t rows, int64_t cols, int64_t tokens, int group_size, uint32_t seed, Problem* p,
                 DType source = DType::kQ4_1) {
  std::mt19937 rng(seed);
  if (group_size == 32 && (source == DType::kQ4_0 || source == DType::kQ4_1)) {
    p->weight_bytes = RandomBlocks(source, rows, cols, rng);
    p->view = ViewOf(source, rows, cols, p->weight_bytes);
  } else {
    const std::vector<float> w = RandomFloats(static_cast<size_t>(rows * cols), rng, 0.1f);
    p->weight_bytes.resize(w.size() * 4);
    std::memcpy(p->weight_bytes.data(), w.data(), p->weight_bytes.size());
    p->view = ViewOf(DType::kF32, rows, cols, p->weight_bytes);
  }
  StatusOr<PackedW4> packed = PackW4(p->view, group_size);
  ASSERT_TRUE(packed.ok()) << packed.status().message();
  p->packed = std::move(packed).value();
  p->x = RandomFloats(static_cast<size_t>(tokens * cols), rng);
  QuantizeActivations(p->x.data(), tokens, cols, group_size, &p->a);
}

std::vector<float> RunGemm(const Problem& p, Isa isa) {
  std::vector<float> y(static_cast<size_t>(p.a.num_tokens * p.packed.rows), std::nanf(""));
  GemmW4A8(p.packed, p.a, y.data(), p.packed.rows, 0, p.packed.rows, isa);
  return y;
}

// Σ_c unpacked w[r, c] * (q_a[t, c] * sa[t, group of c]) in double: an oracle
// for the scalar path's integer and scale bookkeeping that shares none of its
// code.
std::vector<float> DoubleOracle(const Problem& p) {
  const PackedW4& w = p.packed;
  std::vector<float> row(static_cast<size_t>(w.cols));
  std::vector<float> y(static_cast<size_t>(p.a.num_tokens * w.rows));
  for (int64_t r = 0; r < w.rows; ++r) {
    UnpackW4Row(w, r, row.data());
    for (int64_t t = 0; t < p.a.num_tokens; ++t) {
      double sum = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) {
        const double activation = static_cast<double>(p.a.token_values(t)[c]) * p.a.token_scales(t)[c / w.group_size];
        sum += static_cast<double>(row[c]) * activation;
      }
      y[static_cast<size_t>(t * w.rows + r)] = static_cast<float>(sum);
    }
  }
  return y;
}

TEST(GemmW4A8Scalar, MatchesDoubleOracleOfUnpackedWeights) {
  for (int group_size : {32, 64, 128}) {
    for (DType source : {DType::kQ4_0, DType::kQ4_1}) {
      Problem p;
      MakeProblem(33, 512, 5, group_size, 21, &p, source);
      const double error = NormalisedMaxError(RunGemm(p, Isa::kScalar), DoubleOracle(p));
      EXPECT_LE(error, 2e-6) << "group " << group_size << " " << DTypeName(source);
    }
  }
}

TEST(GemmW4A8, ListsIsasTheCpuSupports) {
  const std::vector<Isa> isas = SupportedIsas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), Isa::kScalar);
  EXPECT_EQ(BestIsa(), isas.back());
  std::string names;
  for (Isa isa : isas) names += std::string(IsaName(isa)) + " ";
  std::printf("CPU: %s; W4A8 ISAs: %s\n", GetCpuFeatures().Describe().c_str(), names.c_str());
  const CpuFeatures& cpu = GetCpuFeatures();
  if (cpu.avx512f && cpu.avx512bw && cpu.avx512vnni) {
    EXPECT_EQ(BestIsa(), Isa::kAvx512Vnni);
  }
}

struct Shape {
  int64_t rows, cols, tokens;
  int group_size;
};

std::string ShapeName(const Shape& s) {
  return "r" + std::to_string(s.rows) + "_c" + std::to_string(s.cols) + "_t" + std::to_string(s.tokens) + "_g" +
         std::to_string(s.group_size);
}

std::vector<Shape> SweptShapes() {
  std::vector<Shape> shapes;
  for (int64_t rows : {1, 15, 16, 17, 100, 257}) {
    for (int64_t cols : {32, 64, 96, 768, 2048}) {
      for (int64_t tokens : {1, 2, 3, 5, 16, 33}) {
        for (int group_size : {32, 64, 96, 128}) {
          if (cols % group_size != 0) continue;
          // Keep the scalar reference's work bounded: big shapes with group 32 and 128 only.
          if (rows * cols * tokens > 2'000'000 && group_size != 32 && group_size != 128) continue;
          shapes.push_back({rows, cols, tokens, group_size});
        }
      }
    }
  }
  return shapes;
}

class GemmW4A8IsaTest : public ::testing::TestWithParam<Shape> {};

TEST_P(GemmW4A8IsaTest, EveryIsaMatchesScalar) {
  const Shape s = GetParam();
  // Symmetric (Q4_0) and asymmetric (Q4_1, F32) packs.
  for (DType source : {DType::kQ4_0, DType::kQ4_1, DType::kF32}) {
    if (s.group_size != 32 && source != DType::kF32) continue;
    Problem p;
    MakeProblem(s.rows, s.cols, s.tokens, s.group_size,
                static_cast<uint32_t>(s.rows * 7919 + s.cols * 31 + s.tokens), &p, source);
    EXPECT_EQ(p.packed.has_mins, source != DType::kQ4_0);
    const std::vector<float> reference = RunGemm(p, Isa::kScalar);
    for (Isa isa : SupportedIsas()) {
      if (isa == Isa::kScalar) continue;
      const std::vector<float> y = RunGemm(p, isa);
      EXPECT_LE(NormalisedMaxError(y, reference), 1e-5) << IsaName(isa) << " " << DTypeName(source);
      EXPECT_EQ(y, reference) << IsaName(isa) << " " << DTypeName(source);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, GemmW4A8IsaTest, ::testing::ValuesIn(SweptShapes()),
                         [](const auto& info) { return ShapeName(info.param); });

TEST(GemmW4A8, RowRangesWriteOnlyTheirRowsWithStride) {
  Problem p;
  MakeProblem(50, 256, 6, 32, 99, &p);
  const std::vector<float> full = RunGemm(p, Isa::kScalar);
  const int64_t stride = 64;
  const float sentinel = -12345.0f;
  for (Isa isa : SupportedIsas()) {
    std::vector<float> y(static_cast<size_t>(6 * stride), sentinel);
    // Unaligned ranges that split tiles: [0, 5), [5, 37), [37, 50).
    GemmW4A8(p.packed, p.a, y.data(), stride, 0, 5, isa);
    GemmW4A8(p.packed, p.a, y.data(), stride, 5, 37, isa);
    GemmW4A8(p.packed, p.a, y.data(), stride, 37, 50, isa);
    GemmW4A8(p.packed, p.a, y.data(), stride, 20, 20, isa);  // empty range writes nothing
    std::vector<float> got_rows;
    for (int64_t t = 0; t < 6; ++t) {
      for (int64_t r = 0; r < stride; ++r) {
        const float got = y[static_cast<size_t>(t * stride + r)];
        if (r >= 50) {
          EXPECT_EQ(got, sentinel) << IsaName(isa) << " wrote padding " << t << "," << r;
        } else {
          got_rows.push_back(got);
        }
      }
    }
    EXPECT_LE(NormalisedMaxError(got_rows, full), 1e-5) << IsaName(isa);
  }
}

TEST(GemmW4A8, ThreadPoolSplitMatchesOneCall) {
  Problem p;
  MakeProblem(257, 512, 9, 32, 5, &p);
  ThreadPool pool(3);
  for (Isa isa : SupportedIsas()) {
    std::vector<float> y(static_cast<size_t>(9 * 257), std::nanf(""));
    GemmW4A8(p.packed, p.a, y.data(), pool, isa);
    EXPECT_EQ(y, RunGemm(p, isa)) << IsaName(isa);  // the same kernel on the same tiles: bit for bit
  }
}

// W4A8 against f32: only the int8 activations differ when the weights are
// Q4_1 (packed exactly), so the error is bounded by activation rounding.
TEST(GemmW4A8, CloseToF32MatMulOfDequantizedWeights) {
  ThreadPool pool(2);
  for (int64_t tokens : {1, 7}) {
    Problem p;
    MakeProblem(96, 2048, tokens, 32, 17, &p);
    ASSERT_TRUE(p.packed.is_lossless);
    std::vector<float> want(static_cast<size_t>(tokens * 96));
    MatMul(p.view, p.x.data(), tokens, want.data(), pool);
    for (Isa isa : SupportedIsas()) {
      std::vector<float> got(want.size());
      GemmW4A8(p.packed, p.a, got.data(), pool, isa);
      const double rms = RelativeRmsError(got, want);
      const double max_error = NormalisedMaxError(got, want);
      // Per-group int8 of Gaussian inputs: step max|x in 32|/127 ~ 0.017
      // sigma, so ~0.5% relative rms is expected (per-token scales gave
      // ~0.85%); a wrong term would be O(1).
      EXPECT_LE(rms, kGaussianRmsBound) << IsaName(isa);
      EXPECT_LE(max_error, kGaussianMaxBound) << IsaName(isa);
      if (isa == BestIsa()) std::printf("tokens %lld: relative rms %.2e, max %.2e\n", static_cast<long long>(tokens), rms, max_error);
    }
  }
}

// Σ_c w[r, c] * x[t, c] in double with the unpacked weights and x as given.
std::vector<double> DoubleProduct(const PackedW4& w, const std::vector<float>& x, int64_t tokens) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  std::vector<double> y(static_cast<size_t>(tokens * w.rows));
  for (int64_t r = 0; r < w.rows; ++r) {
    UnpackW4Row(w, r, row.data());
    for (int64_t t = 0; t < tokens; ++t) {
      double sum = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) sum += static_cast<double>(row[c]) * x[t * w.cols + c];
      y[static_cast<size_t>(t * w.rows + r)] = sum;
    }
  }
  return y;
}

double RelativeRmsError(const std::vector<double>& got, const std::vector<double>& want) {
  double error = 0.0, norm = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    error += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::sqrt(error / norm);
}

// LLM activations have a few outlier channels tens of times larger than the
// rest. One scale per token would make them set every input's step; one per
// group confines them to their own group. The same activations quantized
// with a single group spanning the whole token (the per-token scheme) show
// what that costs.
TEST(GemmW4A8, PerGroupScalesConfineOutlierChannels) {
  ThreadPool pool(2);
  const int64_t rows = 64, cols = 2048, tokens = 4;
  Problem p;
  MakeProblem(rows, cols, tokens, 32, 31, &p);
  ASSERT_TRUE(p.packed.is_lossless);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t c : {7, 700, 1500}) p.x[static_cast<size_t>(t * cols + c)] = (t % 2 ? -60.0f : 60.0f);
  }
  QuantizeActivations(p.x.data(), tokens, cols, 32, &p.a);
  const std::vector<double> want = DoubleProduct(p.packed, p.x, tokens);

  // Per-token int8 of the same inputs: dequantize and multiply in double.
  QuantizedActivations per_token;
  QuantizeActivations(p.x.data(), tokens, cols, static_cast<int>(cols), &per_token);
  std::vector<float> per_token_x(p.x.size());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t c = 0; c < cols; ++c) {
      per_token_x[static_cast<size_t>(t * cols + c)] = per_token.token_values(t)[c] * per_token.token_scales(t)[0];
    }
  }
  const double per_token_rms = RelativeRmsError(DoubleProduct(p.packed, per_token_x, tokens), want);

  for (Isa isa : SupportedIsas()) {
    std::vector<float> got(static_cast<size_t>(tokens * rows));
    GemmW4A8(p.packed, p.a, got.data(), pool, isa);
    const double rms = RelativeRmsError(std::vector<double>(got.begin(), got.end()), want);
    EXPECT_LE(rms, kOutlierRmsBound) << IsaName(isa);
    EXPECT_LE(rms * 3.0, per_token_rms) << IsaName(isa);
    if (isa == BestIsa()) std::printf("outliers: relative rms %.2e per group, %.2e per token\n", rms, per_token_rms);
  }
}

// With F32 weights the 4-bit rounding adds its own error; compare with the
// f32 product of the unpacked weights to isolate the activation error, and
// with the original weights for the whole W4A8 approximation.
TEST(GemmW4A8, CloseToF32MatMulForRoundedF32Weights) {
  ThreadPool pool(2);
  Problem p;
  MakeProblem(80, 768, 4, 64, 23, &p);
  std::vector<float> unpacked(static_cast<size_t>(80 * 768));
  for (int64_t r = 0; r < 80; ++r) UnpackW4Row(p.packed, r, unpacked.data() + r * 768);
  std::vector<uint8_t> unpacked_bytes(unpacked.size() * 4);
  std::memcpy(unpacked_bytes.data(), unpacked.data(), unpacked_bytes.size());
  std::vector<float> want_unpacked(4 * 80), want_original(4 * 80), got(4 * 80);
  MatMul(ViewOf(DType::kF32, 80, 768, unpacked_bytes), p.x.data(), 4, want_unpacked.data(), pool);
  MatMul(p.view, p.x.data(), 4, want_original.data(), pool);
  GemmW4A8(p.packed, p.a, got.data(), pool);
  EXPECT_LE(RelativeRmsError(got, want_unpacked), 2e-2);
  // 4-bit weights with groups of 64 from a Gaussian: ~8% relative rms.
  EXPECT_LE(RelativeRmsError(got, want_original), 0.15);
}

}  // namespace
}  // namespace tetra
