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

#include "kernels/attention/kv_quantize.h"
#include "kernels/reference/dequantize.h"
#include "kernels/reference/quantize.h"
#include "kernels/reference/attention.h"

namespace tetra {
namespace {

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

// ---------------------------------------------------------------- paged storage

struct SequenceSpec {
  int64_t length = 0;      // positions in the cache
  int64_t num_tokens = 0;  // new tokens (the last ones)
};

// A layer's paged storage for a batch, built from random f32 K/V: full
// blocks through StoreKvBlock at shuffled physical blocks (with unused
// blocks in between, filled with NaN codes), the open block in f32 with
// NaN past its last position, so a read out of bounds shows.
struct PagedBatch {
  KvLayerView layer;
  std::vector<uint8_t> keys, values;
  std::vector<float> key_scales, value_scales;
  struct Sequence {
    SequenceSpec spec;
    std::vector<float> original_k, original_v;  // [length, num_kv_heads, head_dim]
    std::vector<float> stored_k, stored_v;      // what the cache holds, dequantized
    std::vector<int32_t> block_table;
    std::vector<float> open_k, open_v;          // [num_kv_heads, block_tokens, head_dim]
    std::vector<float> q;                       // [num_tokens, num_heads, head_dim]
    std::vector<float> out, reference_out, original_out;
    std::vector<float> int8_reference_out;  // RunInt8Reference
  };
  std::vector<Sequence> sequences;
};

// key_outlier > 1 makes every 16th key channel (from dim 3) key_outlier times
// larger, offset by as much: the outlier channels of real models' keys.
void MakePagedBatch(KvDtype dtype, int block_tokens, int num_kv_heads, int head_dim, int num_heads,
                    const std::vector<SequenceSpec>& specs, uint32_t seed, PagedBatch& batch,
                    float key_outlier = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  KvLayerView& layer = batch.layer;
  layer.dtype = dtype;
  layer.block_tokens = block_tokens;
  layer.num_kv_heads = num_kv_heads;
  layer.head_dim = head_dim;
  int64_t num_full_blocks = 0;
  for (const SequenceSpec& s : specs) num_full_blocks += s.length / block_tokens;
  const int64_t num_blocks = num_full_blocks * 2 + 1;  // half of them unused
  std::vector<int32_t> physical(static_cast<size_t>(num_blocks));
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);
  const int bytes = KvDtypeBytes(dtype);
  const uint8_t poison = dtype == KvDtype::kFp8E4M3 ? 0x7F : 0xFF;  // NaN in every dtype
  batch.keys.assign(static_cast<size_t>(num_blocks * layer.block_elements() * bytes), poison);
  batch.values.assign(batch.keys.size(), poison);
  batch.key_scales.assign(static_cast<size_t>(num_blocks * num_kv_heads), std::numeric_limits<float>::quiet_NaN());
  batch.value_scales = batch.key_scales;
  layer.keys = batch.keys.data();
  layer.values = batch.values.data();
  layer.key_scales = batch.key_scales.data();
  layer.value_scales = batch.value_scales.data();

  const int64_t row = static_cast<int64_t>(num_kv_heads) * head_dim;
  size_t next_physical = 0;
  batch.sequences.clear();
  batch.sequences.resize(specs.size());
  for (size_t s = 0; s < specs.size(); ++s) {
    PagedBatch::Sequence& seq = batch.sequences[s];
    seq.spec = specs[s];
    const int64_t length = specs[s].length;
    seq.original_k.resize(static_cast<size_t>(length * row));
    seq.original_v.resize(seq.original_k.size());
    // Per-head offsets and spreads, so FP8 scales differ between heads and blocks.
    for (int64_t p = 0; p < length; ++p) {
      for (int64_t e = 0; e < row; ++e) {
        const float spread = 0.5f + static_cast<float>((e / head_dim + p / 37) % 3);
        seq.original_k[p * row + e] = normal(rng) * spread;
        seq.original_v[p * row + e] = normal(rng) * spread + 0.25f;
        if (key_outlier > 1.0f && e % head_dim % 16 == 3) {
          seq.original_k[p * row + e] = (seq.original_k[p * row + e] + 1.0f) * key_outlier;
        }
      }
    }
    seq.stored_k = seq.original_k;
    seq.stored_v = seq.original_v;
    const int64_t full = length / block_tokens;
    std::vector<float> block_k(static_cast<size_t>(layer.block_elements()));
    std::vector<float> block_v(block_k.size());
    for (int64_t b = 0; b < full; ++b) {
      const int32_t block = physical[next_physical];
      next_physical += 2;  // leave a poisoned block between used ones
      seq.block_table.push_back(block);
      for (int h = 0; h < num_kv_heads; ++h) {
        for (int slot = 0; slot < block_tokens; ++slot) {
          for (int i = 0; i < head_dim; ++i) {
            const int64_t from = (b * block_tokens + slot) * row + h * head_dim + i;
            const int64_t to = (static_cast<int64_t>(h) * block_tokens + slot) * head_dim + i;
            block_k[to] = seq.original_k[from];
            block_v[to] = seq.original_v[from];
          }
        }
      }
      StoreKvBlock(layer, block_k.data(), block, batch.keys.data(), batch.key_scales.data());
      StoreKvBlock(layer, block_v.data(), block, batch.values.data(), batch.value_scales.data());
      std::vector<float> back(static_cast<size_t>(head_dim));
      for (int h = 0; h < num_kv_heads; ++h) {
        for (int slot = 0; slot < block_tokens; ++slot) {
          const int64_t at = (b * block_tokens + slot) * row + h * head_dim;
          LoadKvBlockRows(layer, batch.keys.data(), batch.key_scales.data(), block, h, slot, 1,
                          seq.stored_k.data() + at);
          LoadKvBlockRows(layer, batch.values.data(), batch.value_scales.data(), block, h, slot, 1,
                          seq.stored_v.data() + at);
        }
      }
    }
    const int64_t open_start = full * block_tokens;
    seq.open_k.assign(static_cast<size_t>(layer.block_elements()), std::numeric_limits<float>::quiet_NaN());
    seq.open_v = seq.open_k;
    for (int64_t p = open_start; p < length; ++p) {
      for (int h = 0; h < num_kv_heads; ++h) {
        for (int i = 0; i < head_dim; ++i) {
          const int64_t to = (static_cast<int64_t>(h) * block_tokens + (p - open_start)) * head_dim + i;
          seq.open_k[to] = seq.original_k[p * row + h * head_dim + i];
          seq.open_v[to] = seq.original_v[p * row + h * head_dim + i];
        }
      }
    }
    seq.q.resize(static_cast<size_t>(specs[s].num_tokens * num_heads * head_dim));
    for (float& x : seq.q) x = 2.0f * normal(rng);  // sharper than unit scores: the running max matters
    seq.out.assign(seq.q.size(), std::numeric_limits<float>::quiet_NaN());
    seq.reference_out.assign(seq.q.size(), 0.0f);
    seq.original_out.assign(seq.q.size(), 0.0f);
  }
}

std::vector<PagedAttentionSequence> Views(PagedBatch& batch) {
  std::vector<PagedAttentionSequence> views;
  for (PagedBatch::Sequence& seq : batch.sequences) {
    PagedAttentionSequence v;
    v.q = seq.q.data();
    v.num_tokens = seq.spec.num_tokens;
    v.kv.length = seq.spec.length;
    v.kv.block_table = seq.block_table.data();
    v.kv.open_keys = seq.open_k.data();
    v.kv.open_values = seq.open_v.data();
    v.out = seq.out.data();
    views.push_back(v);
  }
  return views;
}

// Reference outputs over the stored (dequantized) K/V, and over the originals.
void RunReference(const AttentionShape& shape, PagedBatch& batch, ThreadPool& pool) {
  std::vector<AttentionSequence> stored, original;
  for (PagedBatch::Sequence& seq : batch.sequences) {
    AttentionSequence a;
    a.q = seq.q.data();
    a.num_tokens = seq.spec.num_tokens;
    a.first_position = seq.spec.length - seq.spec.num_tokens;
    a.k = seq.stored_k.data();
    a.v = seq.stored_v.data();
    a.out = seq.reference_out.data();
    stored.push_back(a);
    a.k = seq.original_k.data();
    a.v = seq.original_v.data();
    a.out = seq.original_out.data();
    original.push_back(a);
  }
  CausalAttentionBatch(shape, stored, pool);
  CausalAttentionBatch(shape, original, pool);
}

// max |a - b| over max |b| across the batch.
double NormalisedMaxError(const PagedBatch& batch, bool against_original) {
  double max_error = 0.0, max_ref = 0.0;
  for (const PagedBatch::Sequence& seq : batch.sequences) {
    const std::vector<float>& ref = against_original ? seq.original_out : seq.reference_out;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double err = std::fabs(static_cast<double>(seq.out[i]) - ref[i]);
      max_error = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(max_error, err);
      max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[i])));
    }
  }
  return max_error / std::max(max_ref, 1e-30);
}

// sqrt(sum (a - b)^2 / sum b^2) across the batch.
double RelativeRmsError(const PagedBatch& batch) {
  double error = 0.0, norm = 0.0;
  for (const PagedBatch::Sequence& seq : batch.sequences) {
    for (size_t i = 0; i < seq.original_out.size(); ++i) {
      const double d = static_cast<double>(seq.out[i]) - seq.original_out[i];
      error += d * d;
      norm += static_cast<double>(seq.original_out[i]) * seq.original_out[i];
    }
  }
  return std::sqrt(error / std::max(norm, 1e-30));
}

// Same (dequantized) K/V, f32 arithmetic in a different order and a
// polynomial exp2: a few ulps of f32 relative to the output's magnitude.
constexpr double kTightBound = 2e-5;
// Against the original f32 K/V, relative rms error of the outputs; measured
// at most 6.5e-2 (FP8) and 4.2e-3 (BF16) on these shapes, whose scores are
// sharp (q ~ 2 N(0, 1)). A wrong scale or code would be off by ~1.
constexpr double kFp8RmsBound = 0.1;
constexpr double kBf16RmsBound = 8e-3;

const char* DtypeName(KvDtype dtype) {
  return dtype == KvDtype::kF32 ? "f32" : dtype == KvDtype::kBf16 ? "bf16" : "fp8";
}

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

// The int8 key of an FP8 code, from the spec: round(e4m3 * 127 / 448), ties
// away from zero, saturating at +-127.
int Int8KeyOfCode(uint8_t code) {
  const double value = Fp8E4M3ToFloat(code);
  const long magnitude = std::min(127L, std::lround(std::fabs(value) * 127.0 / 448.0));
  return static_cast<int>(value < 0 ? -magnitude : magnitude);
}

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

// What kInt8Scores computes, from scratch and in double: each row of q
// (times scale * log2 e, in f32 as the kernel does) to q8 = rint(x * 127 /
// amax); full blocks score sum(q8 * k8) * amax / 127 * key_scale * 448 / 127
// over the stored codes; the open block scores x . k in f32 values; softmax
// in base 2; values as stored.
void RunInt8Reference(const AttentionShape& shape, PagedBatch& batch) {
  const KvLayerView& layer = batch.layer;
  const int group = shape.num_heads / shape.num_kv_heads;
  const int dim = shape.head_dim;
  const int bt = layer.block_tokens;
  const float log2_scale = shape.scale * std::numbers::log2e_v<float>;
  const int64_t row = static_cast<int64_t>(shape.num_kv_heads) * dim;
  int key_of_code[256];
  for (int code = 0; code < 256; ++code) key_of_code[code] = Int8KeyOfCode(static_cast<uint8_t>(code));
  for (PagedBatch::Sequence& seq : batch.sequences) {
    const int64_t length = seq.spec.length;
    const int64_t full_keys = length / bt * bt;
    // The full blocks' int8 keys [full_keys, num_kv_heads, head_dim] and scales [full_keys, num_kv_heads].
    std::vector<int> k8(static_cast<size_t>(full_keys * row));
    std::vector<double> key_scale(static_cast<size_t>(full_keys * shape.num_kv_heads));
    for (int64_t p = 0; p < full_keys; ++p) {
      const int32_t block = seq.block_table[p / bt];
      for (int h = 0; h < shape.num_kv_heads; ++h) {
        const uint8_t* codes =
            batch.keys.data() + ((static_cast<int64_t>(block) * shape.num_kv_heads + h) * bt + p % bt) * dim;
        for (int i = 0; i < dim; ++i) k8[p * row + h * dim + i] = key_of_code[codes[i]];
        key_scale[p * shape.num_kv_heads + h] = batch.key_scales[block * shape.num_kv_heads + h] * 448.0 / 127.0;
      }
    }
    seq.int8_reference_out.assign(seq.q.size(), 0.0f);
    std::vector<float> x(static_cast<size_t>(dim));
    std::vector<int> q8(static_cast<size_t>(dim));
    std::vector<double> scores(static_cast<size_t>(length));
    for (int64_t t = 0; t < seq.spec.num_tokens; ++t) {
      const int64_t position = length - seq.spec.num_tokens + t;
      for (int head = 0; head < shape.num_heads; ++head) {
        const int h = head / group;
        const float* q = seq.q.data() + (t * shape.num_heads + head) * dim;
        float amax = 0.0f;
        for (int i = 0; i < dim; ++i) {
          x[i] = q[i] * log2_scale;
          amax = std::max(amax, std::fabs(x[i]));
        }
        const bool is_tiny = amax < 1e-30f;
        const float inverse = is_tiny ? 0.0f : 127.0f / amax;
        const double q_scale = is_tiny ? 0.0 : static_cast<double>(amax / 127.0f);
        for (int i = 0; i < dim; ++i) q8[i] = static_cast<int>(std::nearbyint(x[i] * inverse));
        double best = -std::numeric_limits<double>::infinity();
        for (int64_t p = 0; p <= position; ++p) {
          double score = 0.0;
          if (p < full_keys) {
            const int* k = k8.data() + p * row + h * dim;
            int64_t dot = 0;
            for (int i = 0; i < dim; ++i) dot += q8[i] * k[i];
            score = static_cast<double>(dot) * q_scale * key_scale[p * shape.num_kv_heads + h];
          } else {
            for (int i = 0; i < dim; ++i) score += static_cast<double>(x[i]) * seq.original_k[p * row + h * dim + i];
          }
          scores[p] = score;
          best = std::max(best, score);
        }
        double total = 0.0;
        std::vector<double> out(static_cast<size_t>(dim), 0.0);
        for (int64_t p = 0; p <= position; ++p) {
          const double weight = std::exp2(scores[p] - best);
          total += weight;
          for (int i = 0; i < dim; ++i) out[i] += weight * seq.stored_v[p * row + h * dim + i];
        }
        float* dst = seq.int8_reference_out.data() + (t * shape.num_heads + head) * dim;
        for (int i = 0; i < dim; ++i) dst[i] = static_cast<float>(out[i] / total);
      }
    }
  }
}

// max |out - reference| over max |reference| across the batch, reference a
// member of each sequence.
double NormalisedMaxErrorAgainst(const PagedBatch& batch, std::vector<float> PagedBatch::Sequence::*reference) {
  double max_error = 0.0, max_ref = 0.0;
  for (const PagedBatch::Sequence& seq : batch.sequences) {
    const std::vector<float>& ref = seq.*reference;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double err = std::fabs(static_cast<double>(seq.out[i]) - ref[i]);
      max_error = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(max_error, err);
      max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[i])));
    }
  }
  return max_error / std::max(max_ref, 1e-30);
}

// mean |out - reference| across the batch.
double MeanAbsErrorAgainst(const PagedBatch& batch, std::vector<float> PagedBatch::Sequence::*reference) {
  double error = 0.0;
  int64_t count = 0;
  for (const PagedBatch::Sequence& seq : batch.sequences) {
    const std::vector<float>& ref = seq.*reference;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double err = std::fabs(static_cast<double>(seq.out[i]) - ref[i]);
      error += std::isnan(err) ? std::numeric_limits<double>::infinity() : err;
      ++count;
    }
  }
  return error / std::max<int64_t>(count, 1);
}

void ClearOutputs(PagedBatch& batch) {
  for (PagedBatch::Sequence& seq : batch.sequences) {
    std::fill(seq.out.begin(), seq.out.end(), std::numeric_limits<float>::quiet_NaN());
  }
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
