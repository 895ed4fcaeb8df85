// KvCache: what is written reads back through the paged views (full blocks
// in the pool's dtype, the open block in f32), blocks are reserved up front
// and given back, and a full pool is an error, not a crash.
#include "model/kv_cache.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/attention/kv_quantize.h"

namespace tetra {
namespace {

constexpr KvGeometry kGeometry{/*num_layers=*/2, /*num_kv_heads=*/3, /*head_dim=*/8};

std::vector<float> RandomRows(int64_t count, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> rows(count * kGeometry.num_kv_heads * kGeometry.head_dim);
  for (float& x : rows) x = normal(rng);
  return rows;
}

// Position p, head h of a layer's keys as attention would read them.
std::vector<float> ReadKey(const KvPool& pool, const KvSequenceView& seq, int layer, int64_t p, int h) {
  const KvLayerView view = pool.layer(layer);
  std::vector<float> out(kGeometry.head_dim);
  const int64_t block_start = seq.length / view.block_tokens * view.block_tokens;
  if (p >= block_start) {
    const float* row = seq.open_keys + (static_cast<int64_t>(h) * view.block_tokens + (p - block_start)) * view.head_dim;
    out.assign(row, row + view.head_dim);
  } else {
    LoadKvBlockRows(view, view.keys, view.key_scales, seq.block_table[p / view.block_tokens], h,
                    static_cast<int>(p % view.block_tokens), 1, out.data());
  }
  return out;
}

void ExpectReadsBack(KvDtype dtype, double tolerance) {
  KvPool pool(kGeometry, KvCacheOptions{dtype, /*block_tokens=*/4}, /*num_blocks=*/6);
  KvCache kv(pool);
  std::mt19937 rng(3);
  std::vector<std::vector<float>> keys(kGeometry.num_layers);
  // Steps of 3, 1, 6, 1 tokens: partial, exactly full and multi-block writes.
  for (int64_t count : {3, 1, 6, 1}) {
    ASSERT_TRUE(kv.Reserve(count).ok());
    for (int layer = 0; layer < kGeometry.num_layers; ++layer) {
      const std::vector<float> k = RandomRows(count, rng);
      const std::vector<float> v = RandomRows(count, rng);
      kv.Write(layer, count, k.data(), v.data());
      keys[layer].insert(keys[layer].end(), k.begin(), k.end());
    }
    for (int layer = 0; layer < kGeometry.num_layers; ++layer) {
      const KvSequenceView seq = kv.View(layer, count);
      ASSERT_EQ(seq.length, kv.length() + count);
      for (int64_t p = 0; p < seq.length; ++p) {
        for (int h = 0; h < kGeometry.num_kv_heads; ++h) {
          const std::vector<float> got = ReadKey(pool, seq, layer, p, h);
          const float* want = &keys[layer][(p * kGeometry.num_kv_heads + h) * kGeometry.head_dim];
          float amax = 0;
          for (int i = 0; i < kGeometry.head_dim; ++i) amax = std::max(amax, std::abs(want[i]));
          for (int i = 0; i < kGeometry.head_dim; ++i) {
            ASSERT_NEAR(got[i], want[i], tolerance * std::max(1.0f, std::abs(want[i])))
                << KvDtypeName(dtype) << " layer " << layer << " position " << p << " head " << h;
          }
        }
      }
    }
    kv.Advance(count);
  }
  EXPECT_EQ(kv.length(), 11);
  EXPECT_EQ(pool.allocator().num_blocks_used(), 3);
}

TEST(KvCacheTest, F32ReadsBackExactly) { ExpectReadsBack(KvDtype::kF32, 0.0); }
TEST(KvCacheTest, Bf16ReadsBackWithinBf16Rounding) { ExpectReadsBack(KvDtype::kBf16, 1.0 / 256); }
// E4M3 keeps 3 mantissa bits: relative error up to 1/16, plus the scale's
// absolute step near zero.
TEST(KvCacheTest, Fp8ReadsBackWithinE4M3Rounding) { ExpectReadsBack(KvDtype::kFp8E4M3, 0.07); }

TEST(KvCacheTest, FullPoolIsAnErrorAndBlocksComeBack) {
  KvPool pool(kGeometry, KvCacheOptions{KvDtype::kFp8E4M3, 16}, /*num_blocks=*/3);
  {
    KvCache a(pool);
    ASSERT_TRUE(a.Reserve(33).ok());  // 3 blocks
    EXPECT_EQ(a.capacity(), 48);
    KvCache b(pool);
    const Status s = b.Reserve(1);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("KV cache is full"), std::string::npos) << s.message();
    EXPECT_EQ(b.capacity(), 0);
    // More room inside a's last block needs no new block.
    EXPECT_TRUE(a.Reserve(15).ok());
  }
  EXPECT_EQ(pool.allocator().num_blocks_free(), 3);
}

TEST(KvCacheTest, ParsesKvDtypeNames) {
  EXPECT_EQ(*ParseKvDtype("fp8"), KvDtype::kFp8E4M3);
  EXPECT_EQ(*ParseKvDtype("bf16"), KvDtype::kBf16);
  EXPECT_EQ(*ParseKvDtype("f32"), KvDtype::kF32);
  const auto bad = ParseKvDtype("int4");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("int4"), std::string::npos);
}

}  // namespace
}  // namespace tetra
