// Paged attention and its KV-cache number formats:
//   - FP8 E4M3 and BF16 conversions against torch (recorded by
//     tools/fixtures/make_fp8_fixture.py into tests/fixtures/quant/kv_conversions.txt);
//   - StoreKvBlock's per-block, per-head FP8 scales;
//   - PagedAttention, every ISA this CPU runs, against the f32 reference
//     CausalAttentionBatch over the same (dequantized) K/V on swept shapes:
//     dtypes, block sizes, head dims, GQA groups, lengths around block edges,
//     decode / short / prefill chunks, mixed batches, shuffled block tables,
//     1-3 threads; and FP8 against the original f32 K/V within a loose bound;
//   - int8 scores (AttentionMath::kInt8Scores) in every ISA build against a
//     scalar int8 reference written here from the stored FP8 codes (the same
//     integers, so a tight bound) on the same swept shapes, and against the
//     f32 K/V next to the f32-score FP8 path's own error;
//   - the split-KV plan.
#include "kernels/attention/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <numbers>
#include <numeric>
#include <random>
#include <sstream>
#include <string>

#include "attention_test_util.h"
#include "kernels/attention/kv_quantize.h"
#include "kernels/reference/attention.h"
#include "kernels/reference/dequantize.h"
#include "kernels/reference/quantize.h"

namespace tetra {
namespace {

using namespace attention_testing;

// ---------------------------------------------------------------- conversions

struct ConversionCase {
  std::string kind;
  uint32_t input = 0;
  uint32_t expected = 0;
};

std::vector<ConversionCase> ReadConversionCases() {
  const std::string path = std::string(TETRA_FIXTURES_DIR) + "/quant/kv_conversions.txt";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::vector<ConversionCase> cases;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    ConversionCase c;
    fields >> c.kind >> std::hex >> c.input >> c.expected;
    if (!fields.fail()) cases.push_back(c);
  }
  return cases;
}

TEST(KvConversions, Fp8E4M3DecodesEveryCodeLikeTorch) {
  int checked = 0;
  for (const ConversionCase& c : ReadConversionCases()) {
    if (c.kind != "fp8_decode") continue;
    const float expected = std::bit_cast<float>(c.expected);
    const float got = Fp8E4M3ToFloat(static_cast<uint8_t>(c.input));
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(got)) << "code " << c.input;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(got), c.expected) << "code " << c.input << " got " << got;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 256);
}

TEST(KvConversions, Fp8E4M3EncodesLikeTorch) {
  int checked = 0;
  for (const ConversionCase& c : ReadConversionCases()) {
    if (c.kind != "fp8_encode") continue;
    const float x = std::bit_cast<float>(c.input);
    EXPECT_EQ(FloatToFp8E4M3(x), c.expected) << "x = " << x << " (bits " << std::hex << c.input << ")";
    ++checked;
  }
  EXPECT_GT(checked, 2000);
  // NaN stays NaN (either sign); the fixture leaves NaN to this test.
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(FloatToFp8E4M3(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(FloatToFp8E4M3(-std::numeric_limits<float>::quiet_NaN()))));
}

TEST(KvConversions, Bf16EncodesLikeTorch) {
  int checked = 0;
  for (const ConversionCase& c : ReadConversionCases()) {
    if (c.kind != "bf16_encode") continue;
    const float x = std::bit_cast<float>(c.input);
    EXPECT_EQ(FloatToBFloat16(x), c.expected) << "x = " << x << " (bits " << std::hex << c.input << ")";
    EXPECT_EQ(std::bit_cast<uint32_t>(BFloat16ToFloat(static_cast<uint16_t>(c.expected))), c.expected << 16);
    ++checked;
  }
  EXPECT_GT(checked, 500);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload sits only in the low 16 bits must not become infinity.
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::bit_cast<float>(0x7f800001u)))));
}

// ---------------------------------------------------------------- StoreKvBlock

TEST(StoreKvBlock, Fp8ScalesPerHeadAndRoundTrip) {
  KvLayerView layer;
  layer.dtype = KvDtype::kFp8E4M3;
  layer.block_tokens = 16;
  layer.num_kv_heads = 3;
  layer.head_dim = 8;
  const int64_t block_elements = layer.block_elements();
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> src(static_cast<size_t>(block_elements));
  for (float& x : src) x = normal(rng);
  const int64_t head_elements = 16 * 8;
  for (int64_t i = 0; i < head_elements; ++i) src[head_elements + i] = 0.0f;       // head 1: all zero
  for (int64_t i = 0; i < head_elements; ++i) src[2 * head_elements + i] *= 1e-3f;  // head 2: tiny
  src[2 * head_elements + 5] = -0.02f;                                              // its amax, negative

  std::vector<uint8_t> storage(static_cast<size_t>(2 * block_elements), 0xAB);
  std::vector<float> scales(6, -1.0f);
  StoreKvBlock(layer, src.data(), 1, storage.data(), scales.data());
  EXPECT_EQ(scales[0], -1.0f);  // block 0 untouched
  for (int64_t i = 0; i < block_elements; ++i) EXPECT_EQ(storage[i], 0xAB);
  float amax0 = 0.0f;
  for (int64_t i = 0; i < head_elements; ++i) amax0 = std::max(amax0, std::fabs(src[i]));
  EXPECT_FLOAT_EQ(scales[3], amax0 / 448.0f);
  EXPECT_EQ(scales[4], 1.0f);
  EXPECT_FLOAT_EQ(scales[5], 0.02f / 448.0f);
  for (int h = 0; h < 3; ++h) {
    std::vector<float> back(static_cast<size_t>(head_elements));
    LoadKvBlockRows(layer, storage.data(), scales.data(), 1, h, 0, 16, back.data());
    for (int64_t i = 0; i < head_elements; ++i) {
      const float x = src[h * head_elements + i];
      // E4M3 keeps 3 mantissa bits: half an ulp is 1/16 of the value, and
      // values below the smallest normal (2^-6 x scale) err by at most 2^-10 x scale.
      EXPECT_LE(std::fabs(back[i] - x), std::fabs(x) / 16.0f + scales[3 + h] * 0x1p-10f + 1e-12f)
          << "head " << h << " element " << i;
      EXPECT_EQ(storage[block_elements + h * head_elements + i], FloatToFp8E4M3(x / scales[3 + h]));
    }
  }
  // The element with the largest magnitude maps to +-448 exactly.
  EXPECT_EQ(storage[block_elements + 2 * head_elements + 5], 0xFE);

  // A partial read: slots [5, 9) of head 0.
  std::vector<float> rows(4 * 8);
  LoadKvBlockRows(layer, storage.data(), scales.data(), 1, 0, 5, 4, rows.data());
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(rows[i], Fp8E4M3ToFloat(storage[block_elements + 5 * 8 + i]) * scales[3]);
  }
}

TEST(StoreKvBlock, Bf16AndF32) {
  KvLayerView layer;
  layer.block_tokens = 4;
  layer.num_kv_heads = 2;
  layer.head_dim = 3;
  std::vector<float> src(24);
  for (size_t i = 0; i < src.size(); ++i) src[i] = 0.1f * static_cast<float>(i) - 1.0f;
  layer.dtype = KvDtype::kBf16;
  std::vector<uint8_t> storage(2 * 24 * 2);
  StoreKvBlock(layer, src.data(), 1, storage.data(), nullptr);
  std::vector<float> back(2 * 3);
  LoadKvBlockRows(layer, storage.data(), nullptr, 1, 1, 2, 2, back.data());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(back[i], BFloat16ToFloat(FloatToBFloat16(src[12 + 6 + i])));
  layer.dtype = KvDtype::kF32;
  std::vector<uint8_t> storage32(2 * 24 * 4);
  StoreKvBlock(layer, src.data(), 1, storage32.data(), nullptr);
  LoadKvBlockRows(layer, storage32.data(), nullptr, 1, 1, 2, 2, back.data());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(back[i], src[12 + 6 + i]);
}

// ---------------------------------------------------------------- PagedAttention
// (storage, references and bounds: attention_test_util.h)

// Runs one batch with every ISA and thread count; returns the worst error.
void CheckBatch(KvDtype dtype, int block_tokens, int head_dim, int num_kv_heads, int group,
                const std::vector<SequenceSpec>& specs, uint32_t seed, const std::vector<int>& thread_counts) {
  const AttentionShape shape{num_kv_heads * group, num_kv_heads, head_dim, 1.0f / std::sqrt(float(head_dim))};
  PagedBatch batch;
  MakePagedBatch(dtype, block_tokens, num_kv_heads, head_dim, shape.num_heads, specs, seed, batch);
  {
    ThreadPool pool(2);
    RunReference(shape, batch, pool);
  }
  std::vector<PagedAttentionSequence> views = Views(batch);
  for (int threads : thread_counts) {
    ThreadPool pool(threads);
    for (AttentionIsa isa : SupportedAttentionIsas()) {
      SCOPED_TRACE(testing::Message() << DtypeName(dtype) << " block " << block_tokens << " dim " << head_dim
                                      << " kv heads " << num_kv_heads << " group " << group << " threads "
                                      << threads << " isa " << AttentionIsaName(isa));
      for (PagedBatch::Sequence& seq : batch.sequences) {
        std::fill(seq.out.begin(), seq.out.end(), std::numeric_limits<float>::quiet_NaN());
      }
      PagedAttention(shape, batch.layer, views, pool, isa);
      EXPECT_LE(NormalisedMaxError(batch, false), kTightBound);
      if (dtype == KvDtype::kFp8E4M3) {
        EXPECT_LE(RelativeRmsError(batch), kFp8RmsBound);
      } else if (dtype == KvDtype::kBf16) {
        EXPECT_LE(RelativeRmsError(batch), kBf16RmsBound);
      }
    }
  }
}

// Lengths around the block edges with 1 and 2 new tokens, a prefill chunk
// from position 0 and one from a nonzero position, in one batch.
std::vector<SequenceSpec> EdgeBatch(int block_tokens) {
  const int64_t b = block_tokens;
  return {{1, 1},         {b - 1, 1},     {b, 1},     {b + 1, 1},        {3 * b + 5, 1},
          {2, 2},         {b, 2},         {b + 1, 2}, {4 * b + 3, 2},    {2 * b + 3, 2 * b + 3},
          {3 * b + 7, b + 2}, {b, b},     {5, 5}};
}

TEST(PagedAttention, MatchesReferenceOnSweptShapes) {
  uint32_t seed = 1;
  for (KvDtype dtype : {KvDtype::kF32, KvDtype::kBf16, KvDtype::kFp8E4M3}) {
    for (int block_tokens : {16, 64}) {
      for (int head_dim : {64, 128, 80}) {
        for (int group : {1, 4, 8}) {
          CheckBatch(dtype, block_tokens, head_dim, 2, group, EdgeBatch(block_tokens), seed++, {1, 2});
        }
      }
    }
  }
}

TEST(PagedAttention, OddShapesAndThreeThreads) {
  // head_dim 72 (not a multiple of 16), block of 24 tokens, 3 KV heads, group 2/3.
  CheckBatch(KvDtype::kFp8E4M3, 24, 72, 3, 2, EdgeBatch(24), 101, {1, 3});
  CheckBatch(KvDtype::kBf16, 16, 40, 3, 3, EdgeBatch(16), 102, {3});
  CheckBatch(KvDtype::kF32, 32, 16, 1, 5, EdgeBatch(32), 103, {2, 3});
}

TEST(PagedAttention, SplitKvMixedLengthsAndPrefill) {
  // 100 and 3000 positions decoding side by side (the long one split), with
  // speculative-style 3-token decodes and a prefill chunk deep in a sequence.
  const std::vector<SequenceSpec> specs = {{100, 1}, {3000, 1}, {3000, 3}, {1500, 4}, {700, 200}, {64, 64}};
  for (KvDtype dtype : {KvDtype::kFp8E4M3, KvDtype::kF32}) {
    CheckBatch(dtype, 64, 128, 2, 4, specs, 200 + static_cast<uint32_t>(dtype), {1, 2, 3});
  }
  CheckBatch(KvDtype::kBf16, 16, 64, 1, 8, specs, 210, {2});
}

TEST(PagedAttention, Fp8EveryCodeInTheKernel) {
  // Every finite E4M3 code, in keys and values, through the kernel's own
  // conversion: compared with the reference over LoadKvBlockRows' table.
  const int block_tokens = 16, head_dim = 64, num_kv_heads = 1;
  const AttentionShape shape{2, num_kv_heads, head_dim, 0.05f};
  PagedBatch batch;
  MakePagedBatch(KvDtype::kFp8E4M3, block_tokens, num_kv_heads, head_dim, 2, {{40, 2}}, 5, batch);
  PagedBatch::Sequence& seq = batch.sequences[0];
  const int64_t block_elements = batch.layer.block_elements();
  for (int b = 0; b < 2; ++b) {
    const int32_t block = seq.block_table[b];
    for (int64_t i = 0; i < block_elements; ++i) {
      uint8_t code = static_cast<uint8_t>((i * 7 + b * 3) & 0xFF);
      if ((code & 0x7F) == 0x7F) code ^= 1;
      batch.keys[block * block_elements + i] = code;
      batch.values[block * block_elements + i] = static_cast<uint8_t>(code ^ 0x80);
    }
    batch.key_scales[block] = 0.01f * static_cast<float>(b + 1);
    batch.value_scales[block] = 0.003f;
    for (int slot = 0; slot < block_tokens; ++slot) {
      const int64_t at = (static_cast<int64_t>(b) * block_tokens + slot) * head_dim;
      LoadKvBlockRows(batch.layer, batch.keys.data(), batch.key_scales.data(), block, 0, slot, 1,
                      seq.stored_k.data() + at);
      LoadKvBlockRows(batch.layer, batch.values.data(), batch.value_scales.data(), block, 0, slot, 1,
                      seq.stored_v.data() + at);
    }
  }
  ThreadPool pool(1);
  RunReference(shape, batch, pool);
  std::vector<PagedAttentionSequence> views = Views(batch);
  for (AttentionIsa isa : SupportedAttentionIsas()) {
    SCOPED_TRACE(AttentionIsaName(isa));
    PagedAttention(shape, batch.layer, views, pool, isa);
    EXPECT_LE(NormalisedMaxError(batch, false), kTightBound);
  }
}

TEST(PagedAttention, RepeatedCallsAndEmptySequences) {
  // The same batch twice (scratch reuse) and a sequence with no new tokens.
  const AttentionShape shape{8, 2, 64, 0.125f};
  PagedBatch batch;
  MakePagedBatch(KvDtype::kFp8E4M3, 16, 2, 64, 8, {{900, 1}, {50, 0}, {33, 17}}, 9, batch);
  ThreadPool pool(2);
  RunReference(shape, batch, pool);
  std::vector<PagedAttentionSequence> views = Views(batch);
  for (int call = 0; call < 3; ++call) {
    PagedAttention(shape, batch.layer, views, pool);
    EXPECT_LE(NormalisedMaxError(batch, false), kTightBound) << "call " << call;
  }
}

// ---------------------------------------------------------------- int8 scores

TEST(Int8Keys, TableFromTheSpec) {
  // Spot values: 448 -> 127, 224 -> 63.5 -> 64, the smallest codes -> 0, sign kept.
  EXPECT_EQ(Int8KeyOfCode(0x7E), 127);
  EXPECT_EQ(Int8KeyOfCode(0xFE), -127);
  EXPECT_EQ(Int8KeyOfCode(FloatToFp8E4M3(224.0f)), 64);
  EXPECT_EQ(Int8KeyOfCode(FloatToFp8E4M3(-224.0f)), -64);
  EXPECT_EQ(Int8KeyOfCode(FloatToFp8E4M3(1.75f)), 0);  // 0.496 rounds down
  EXPECT_EQ(Int8KeyOfCode(FloatToFp8E4M3(2.0f)), 1);   // 0.567 rounds up
  EXPECT_EQ(Int8KeyOfCode(0x80), 0);
}

// Int8 scores with every ISA and thread count against RunInt8Reference (the
// same integers: only f32 rounding and summation order differ).
void CheckInt8Batch(int block_tokens, int head_dim, int num_kv_heads, int group, const std::vector<SequenceSpec>& specs,
                    uint32_t seed, const std::vector<int>& thread_counts) {
  const AttentionShape shape{num_kv_heads * group, num_kv_heads, head_dim, 1.0f / std::sqrt(float(head_dim))};
  PagedBatch batch;
  MakePagedBatch(KvDtype::kFp8E4M3, block_tokens, num_kv_heads, head_dim, shape.num_heads, specs, seed, batch);
  RunInt8Reference(shape, batch);
  std::vector<PagedAttentionSequence> views = Views(batch);
  for (int threads : thread_counts) {
    ThreadPool pool(threads);
    for (AttentionIsa isa : SupportedAttentionIsas()) {
      SCOPED_TRACE(testing::Message() << "int8 block " << block_tokens << " dim " << head_dim << " kv heads "
                                      << num_kv_heads << " group " << group << " threads " << threads << " isa "
                                      << AttentionIsaName(isa));
      ClearOutputs(batch);
      PagedAttention(shape, batch.layer, views, pool, isa, AttentionMath::kInt8Scores);
      EXPECT_LE(NormalisedMaxErrorAgainst(batch, &PagedBatch::Sequence::int8_reference_out), kTightBound);
    }
  }
}

TEST(PagedAttentionInt8, MatchesInt8ReferenceOnSweptShapes) {
  uint32_t seed = 301;
  for (int block_tokens : {16, 64}) {
    for (int head_dim : {64, 128, 80}) {
      for (int group : {1, 4, 8}) {
        CheckInt8Batch(block_tokens, head_dim, 2, group, EdgeBatch(block_tokens), seed++, {1, 2});
      }
    }
  }
}

TEST(PagedAttentionInt8, OddShapesSplitKvAndPrefill) {
  // head_dim 72 and 40 (not multiples of 64 or 16), a block of 24 tokens.
  CheckInt8Batch(24, 72, 3, 2, EdgeBatch(24), 401, {1, 3});
  CheckInt8Batch(16, 40, 1, 5, EdgeBatch(16), 402, {2});
  // 100 and 3000 positions decoding side by side (the long one split), 3-
  // and 4-token decodes, a 200-token prefill chunk deep in a sequence, a
  // 64-token one ending on a block edge.
  const std::vector<SequenceSpec> specs = {{100, 1}, {3000, 1}, {3000, 3}, {1500, 4}, {700, 200}, {64, 64}};
  CheckInt8Batch(64, 128, 2, 8, specs, 403, {1, 2, 3});
  CheckInt8Batch(16, 64, 1, 4, specs, 404, {2});
}

TEST(PagedAttentionInt8, EveryCodeAndDegenerateQueryRows) {
  // Every finite E4M3 code in the keys through each build's table, and query
  // rows that are all zero or tiny (quantized to zeros: uniform softmax).
  const int block_tokens = 16, head_dim = 64;
  const AttentionShape shape{4, 1, head_dim, 0.05f};
  PagedBatch batch;
  MakePagedBatch(KvDtype::kFp8E4M3, block_tokens, 1, head_dim, 4, {{40, 2}}, 7, batch);
  PagedBatch::Sequence& seq = batch.sequences[0];
  const int64_t block_elements = batch.layer.block_elements();
  for (int b = 0; b < 2; ++b) {
    const int32_t block = seq.block_table[b];
    for (int64_t i = 0; i < block_elements; ++i) {
      uint8_t code = static_cast<uint8_t>((i * 7 + b * 3) & 0xFF);
      if ((code & 0x7F) == 0x7F) code ^= 1;
      batch.keys[block * block_elements + i] = code;
    }
    batch.key_scales[block] = 0.01f * static_cast<float>(b + 1);
  }
  std::fill(seq.q.begin(), seq.q.begin() + head_dim, 0.0f);                   // token 0, head 0
  std::fill(seq.q.begin() + head_dim, seq.q.begin() + 2 * head_dim, 1e-36f);  // token 0, head 1
  RunInt8Reference(shape, batch);
  ThreadPool pool(1);
  std::vector<PagedAttentionSequence> views = Views(batch);
  for (AttentionIsa isa : SupportedAttentionIsas()) {
    SCOPED_TRACE(AttentionIsaName(isa));
    ClearOutputs(batch);
    PagedAttention(shape, batch.layer, views, pool, isa, AttentionMath::kInt8Scores);
    EXPECT_LE(NormalisedMaxErrorAgainst(batch, &PagedBatch::Sequence::int8_reference_out), kTightBound);
  }
}

TEST(PagedAttentionInt8, OtherDtypesScoreInF32) {
  // kInt8Scores changes nothing on BF16 and F32 layers (only FP8 blocks).
  for (KvDtype dtype : {KvDtype::kBf16, KvDtype::kF32}) {
    const AttentionShape shape{8, 2, 64, 0.125f};
    PagedBatch batch;
    MakePagedBatch(dtype, 16, 2, 64, 8, {{300, 1}, {70, 30}}, 11, batch);
    ThreadPool pool(2);
    RunReference(shape, batch, pool);
    std::vector<PagedAttentionSequence> views = Views(batch);
    for (AttentionIsa isa : SupportedAttentionIsas()) {
      SCOPED_TRACE(testing::Message() << DtypeName(dtype) << " " << AttentionIsaName(isa));
      ClearOutputs(batch);
      PagedAttention(shape, batch.layer, views, pool, isa, AttentionMath::kInt8Scores);
      EXPECT_LE(NormalisedMaxError(batch, false), kTightBound);
    }
  }
}

// Against the original f32 K/V (CausalAttentionBatch), the int8 path's error
// next to the f32-score FP8 path's on the same cache: int8 adds the query's
// and the keys' 8-bit rounding (amax / 254 per element at most) to FP8's.
// Ratios of mean absolute errors measured on these shapes (q ~ 2 N(0, 1),
// sharp scores): 1.05-1.07 on plain keys, 1.21-1.32 with outlier channels
// 10x the others; int8 against the FP8 cache read in f32 at most 0.35 (0.79)
// of FP8's own error. A sign or scale bug gives ~20x.
TEST(PagedAttentionInt8, AccuracyNextToTheFp8Path) {
  uint32_t seed = 501;
  for (float key_outlier : {1.0f, 10.0f}) {
    const double ratio_bound = key_outlier > 1.0f ? 1.6 : 1.3;
    const double own_bound = key_outlier > 1.0f ? 1.0 : 0.5;
    for (int block_tokens : {16, 64}) {
      for (int head_dim : {64, 128}) {
        for (int group : {1, 8}) {
          const int num_kv_heads = 2;
          const AttentionShape shape{num_kv_heads * group, num_kv_heads, head_dim,
                                     1.0f / std::sqrt(float(head_dim))};
          PagedBatch batch;
          MakePagedBatch(KvDtype::kFp8E4M3, block_tokens, num_kv_heads, head_dim, shape.num_heads,
                         {{1000, 1}, {2000, 2}, {600, 100}, {3 * block_tokens, 3 * block_tokens}}, seed++, batch,
                         key_outlier);
          ThreadPool pool(2);
          RunReference(shape, batch, pool);
          std::vector<PagedAttentionSequence> views = Views(batch);
          ClearOutputs(batch);
          PagedAttention(shape, batch.layer, views, pool, AttentionMath::kF32);
          const double fp8_error = MeanAbsErrorAgainst(batch, &PagedBatch::Sequence::original_out);
          ClearOutputs(batch);
          PagedAttention(shape, batch.layer, views, pool, AttentionMath::kInt8Scores);
          const double int8_error = MeanAbsErrorAgainst(batch, &PagedBatch::Sequence::original_out);
          const double int8_vs_fp8_cache = MeanAbsErrorAgainst(batch, &PagedBatch::Sequence::reference_out);
          SCOPED_TRACE(testing::Message() << "outlier " << key_outlier << " block " << block_tokens << " dim "
                                          << head_dim << " group " << group << ": mean abs error fp8 " << fp8_error
                                          << ", int8 " << int8_error << ", int8 against the fp8 cache in f32 "
                                          << int8_vs_fp8_cache);
          EXPECT_GT(fp8_error, 0.0);
          EXPECT_LE(int8_error, ratio_bound * fp8_error);
          EXPECT_LE(int8_vs_fp8_cache, own_bound * fp8_error);
          if (key_outlier == 1.0f) {
            EXPECT_LE(RelativeRmsError(batch), kFp8RmsBound);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------- PlanKvSplits

TEST(PlanKvSplits, LongSequenceNextToAShortOneIsCut) {
  const std::vector<int64_t> lengths = {100, 30000};
  for (int kv_heads : {1, 2}) {
    const std::vector<int> parts = PlanKvSplits(lengths, kv_heads, 2);
    EXPECT_EQ(parts[0], 1);
    EXPECT_GE(parts[1], 8) << kv_heads << " KV heads";
    // Pieces (parts x KV heads) give both threads several similar items.
    EXPECT_GE(parts[1] * kv_heads, 4 * 2);
  }
  // Eight KV heads already give each thread four equal 30000-token items:
  // the plan may leave them whole, but never cuts the short one.
  const std::vector<int> parts = PlanKvSplits(lengths, 8, 2);
  EXPECT_EQ(parts[0], 1);
  EXPECT_GE(parts[1] * 8, 8);
}

TEST(PlanKvSplits, EqualShortSequencesStayWhole) {
  const std::vector<int64_t> lengths(16, 300);
  for (int kv_heads : {1, 8}) {
    for (int threads : {1, 2, 8}) {
      for (int p : PlanKvSplits(lengths, kv_heads, threads)) EXPECT_EQ(p, 1);
    }
  }
}

TEST(PlanKvSplits, PartsNeverShorterThanTheMinimum) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int64_t> length(1, 40000);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int64_t> lengths(1 + trial % 9);
    for (int64_t& l : lengths) l = length(rng);
    const int threads = 1 + trial % 4;
    const std::vector<int> parts = PlanKvSplits(lengths, 1 + trial % 3, threads);
    ASSERT_EQ(parts.size(), lengths.size());
    for (size_t s = 0; s < lengths.size(); ++s) {
      EXPECT_GE(parts[s], 1);
      if (parts[s] > 1) {
        EXPECT_GE(lengths[s] / parts[s], kMinKvPartTokens) << lengths[s] << " in " << parts[s];
      }
      if (threads == 1) {
        EXPECT_EQ(parts[s], 1);
      }
    }
  }
  EXPECT_TRUE(PlanKvSplits({}, 8, 2).empty());
}

}  // namespace
}  // namespace tetra
