// KvStorage: what is written through a sequence's block table and slot reads
// back through the paged views (full blocks in the storage's dtype, the open
// block in f32), and the slot ops of a fork and a truncation move the open
// block's data.
#include "model/kv_cache.h"

#include <gtest/gtest.h>

#include <cmath>
#include <future>
#include <random>

#include "kernels/attention/kv_quantize.h"
#include "transport/kv_transfer.h"

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
std::vector<float> ReadKey(const KvStorage& storage, const KvSequenceView& seq, int layer, int64_t p, int h) {
  const KvLayerView view = storage.layer(layer);
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

// Every position of every layer and head reads back as written, within `tolerance`.
void ExpectHolds(const KvStorage& storage, const KvSequence& seq, const std::vector<std::vector<float>>& keys,
                 double tolerance) {
  for (int layer = 0; layer < kGeometry.num_layers; ++layer) {
    const KvSequenceView view = storage.View(layer, seq.blocks, seq.slot, seq.num_tokens);
    for (int64_t p = 0; p < seq.num_tokens; ++p) {
      for (int h = 0; h < kGeometry.num_kv_heads; ++h) {
        const std::vector<float> got = ReadKey(storage, view, layer, p, h);
        const float* want = &keys[layer][(p * kGeometry.num_kv_heads + h) * kGeometry.head_dim];
        for (int i = 0; i < kGeometry.head_dim; ++i) {
          ASSERT_NEAR(got[i], want[i], tolerance * std::max(1.0f, std::abs(want[i])))
              << KvDtypeName(storage.options().dtype) << " layer " << layer << " position " << p << " head " << h;
        }
      }
    }
  }
}

// Writes `count` random positions to every layer of seq; keys[layer] grows by them.
void WriteRandom(KvManager& kv, KvStorage& storage, KvSequence& seq, int64_t count, std::mt19937& rng,
                 std::vector<std::vector<float>>& keys) {
  ASSERT_TRUE(kv.Reserve(seq, seq.num_tokens + count).ok());
  for (int layer = 0; layer < kGeometry.num_layers; ++layer) {
    const std::vector<float> k = RandomRows(count, rng);
    const std::vector<float> v = RandomRows(count, rng);
    storage.Write(layer, seq.blocks, seq.slot, seq.num_tokens, count, k.data(), v.data());
    keys[layer].insert(keys[layer].end(), k.begin(), k.end());
  }
  kv.Commit(seq, {}, seq.num_tokens + count);
}

void ExpectReadsBack(KvDtype dtype, double tolerance) {
  KvManager kv(6, 4, 2);
  KvStorage storage(kGeometry, KvCacheOptions{dtype, /*block_tokens=*/4}, /*num_blocks=*/6, /*num_slots=*/2);
  KvSequence seq;
  std::mt19937 rng(3);
  std::vector<std::vector<float>> keys(kGeometry.num_layers);
  // Steps of 3, 1, 6, 1 tokens: partial, exactly full and multi-block writes.
  for (int64_t count : {3, 1, 6, 1}) {
    WriteRandom(kv, storage, seq, count, rng, keys);
    ExpectHolds(storage, seq, keys, tolerance);
  }
  EXPECT_EQ(seq.num_tokens, 11);
  EXPECT_EQ(kv.blocks().num_blocks_held(), 3);
  kv.Free(seq);
}

TEST(KvCacheTest, F32ReadsBackExactly) { ExpectReadsBack(KvDtype::kF32, 0.0); }
TEST(KvCacheTest, Bf16ReadsBackWithinBf16Rounding) { ExpectReadsBack(KvDtype::kBf16, 1.0 / 256); }
// E4M3 keeps 3 mantissa bits: relative error up to 1/16, plus the scale's
// absolute step near zero.
TEST(KvCacheTest, Fp8ReadsBackWithinE4M3Rounding) { ExpectReadsBack(KvDtype::kFp8E4M3, 0.07); }

// A fork's child reads the parent's positions (shared full blocks, a copy
// of the open block), and the two then grow apart.
TEST(KvCacheTest, ForkedChildReadsTheParentsPositions) {
  for (KvDtype dtype : {KvDtype::kF32, KvDtype::kFp8E4M3}) {
    const double tolerance = dtype == KvDtype::kF32 ? 0.0 : 0.07;
    KvManager kv(8, 4, 2);
    KvStorage storage(kGeometry, KvCacheOptions{dtype, 4}, 8, 2);
    std::mt19937 rng(5);
    KvSequence parent, child;
    std::vector<std::vector<float>> parent_keys(kGeometry.num_layers);
    WriteRandom(kv, storage, parent, 6, rng, parent_keys);
    std::vector<KvSlotOp> ops;
    ASSERT_TRUE(kv.Fork(parent, &child, &ops).ok());
    for (const KvSlotOp& op : ops) storage.Apply(op);
    std::vector<std::vector<float>> child_keys = parent_keys;
    ExpectHolds(storage, child, child_keys, tolerance);
    WriteRandom(kv, storage, child, 3, rng, child_keys);
    WriteRandom(kv, storage, parent, 1, rng, parent_keys);
    ExpectHolds(storage, child, child_keys, tolerance);
    ExpectHolds(storage, parent, parent_keys, tolerance);
    kv.Free(parent);
    kv.Free(child);
    EXPECT_EQ(kv.blocks().num_blocks_held(), 0);
  }
}

// Truncating into a full block reloads its first positions into the slot;
// writing on from there reads back like a sequence that never went further.
TEST(KvCacheTest, TruncationIntoAFullBlockReloadsIt) {
  KvManager kv(8, 4, 1);
  KvStorage storage(kGeometry, KvCacheOptions{KvDtype::kBf16, 4}, 8, 1);
  std::mt19937 rng(9);
  KvSequence seq;
  std::vector<std::vector<float>> keys(kGeometry.num_layers);
  WriteRandom(kv, storage, seq, 10, rng, keys);
  std::vector<KvSlotOp> ops;
  ASSERT_TRUE(kv.Truncate(seq, 6, &ops).ok());
  ASSERT_EQ(ops.size(), 1u);
  for (const KvSlotOp& op : ops) storage.Apply(op);
  const size_t row = static_cast<size_t>(kGeometry.num_kv_heads) * kGeometry.head_dim;
  for (auto& layer_keys : keys) layer_keys.resize(6 * row);
  ExpectHolds(storage, seq, keys, 1.0 / 256);
  WriteRandom(kv, storage, seq, 5, rng, keys);
  ExpectHolds(storage, seq, keys, 1.0 / 256);
  kv.Free(seq);
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

namespace tetra {
namespace {

// A sequence's KV moved from one storage to another through the real KV
// transport (loopback), as prefill hands a prompt to decode: other block
// ids and another slot on the receiving side, which then reads every
// position bit for bit as the sender does, and goes on writing.
void ExpectMovesAcrossStorages(KvDtype dtype, int64_t tokens) {
  const KvCacheOptions options{dtype, /*block_tokens=*/4};
  KvManager kv_a(8, 4, 2), kv_b(8, 4, 3);
  KvStorage a(kGeometry, options, 8, 2), b(kGeometry, options, 8, 3);
  ASSERT_EQ(a.transfer_format(), b.transfer_format());
  std::mt19937 rng(11);
  std::vector<std::vector<float>> keys(kGeometry.num_layers);
  KvSequence seq_a;
  WriteRandom(kv_a, a, seq_a, tokens, rng, keys);
  // The receiving side: other blocks (a filler holds two first) and another slot.
  KvSequence filler, seq_b;
  ASSERT_TRUE(kv_b.Reserve(filler, 8).ok());
  ASSERT_TRUE(kv_b.Reserve(seq_b, tokens).ok());
  ASSERT_NE(seq_a.slot, seq_b.slot);
  const int64_t full = tokens / options.block_tokens;
  const bool has_open = tokens % options.block_tokens != 0;
  std::span<const BlockId> from(seq_a.blocks.data(), full), to(seq_b.blocks.data(), full);

  auto receiver = transport::TransferReceiver::Listen("127.0.0.1", 0).value();
  auto sender = transport::TransferSender::Create("127.0.0.1", receiver->port());
  std::vector<transport::ChunkRegions> regions;
  for (int l = 0; l < kGeometry.num_layers; ++l) regions.push_back(b.LayerRegions(l, to, has_open ? seq_b.slot : -1));
  std::promise<Status> done;
  ASSERT_TRUE(receiver->Expect(1, regions, transport::Clock::now() + std::chrono::seconds(20),
                               [&](Status s) { done.set_value(s); }).ok());
  auto out = sender->Start(1);
  for (int l = 0; l < kGeometry.num_layers; ++l) {
    transport::ChunkParts parts;
    for (auto r : a.LayerRegions(l, from, has_open ? seq_a.slot : -1)) parts.push_back(r);
    out->Send(l, parts);
  }
  ASSERT_TRUE(out->Finish(kGeometry.num_layers, transport::Clock::now() + std::chrono::seconds(20)).ok());
  ASSERT_TRUE(done.get_future().get().ok());
  kv_b.Commit(seq_b, {}, tokens);

  for (int layer = 0; layer < kGeometry.num_layers; ++layer) {
    const KvSequenceView va = a.View(layer, seq_a.blocks, seq_a.slot, tokens);
    const KvSequenceView vb = b.View(layer, seq_b.blocks, seq_b.slot, tokens);
    for (int64_t p = 0; p < tokens; ++p) {
      for (int h = 0; h < kGeometry.num_kv_heads; ++h) {
        ASSERT_EQ(ReadKey(a, va, layer, p, h), ReadKey(b, vb, layer, p, h)) << "layer " << layer << " position " << p;
      }
    }
  }
  // Both go on alike: the next tokens complete the open block the same way.
  std::mt19937 rng_a(5), rng_b(5);
  std::vector<std::vector<float>> more_a = keys, more_b = keys;
  WriteRandom(kv_a, a, seq_a, 6, rng_a, more_a);
  WriteRandom(kv_b, b, seq_b, 6, rng_b, more_b);
  ExpectHolds(b, seq_b, more_b, dtype == KvDtype::kF32 ? 0.0 : 0.07);
  for (int layer = 0; layer < kGeometry.num_layers; ++layer) {
    const KvSequenceView va = a.View(layer, seq_a.blocks, seq_a.slot, seq_a.num_tokens);
    const KvSequenceView vb = b.View(layer, seq_b.blocks, seq_b.slot, seq_b.num_tokens);
    for (int64_t p = 0; p < seq_a.num_tokens; ++p) {
      ASSERT_EQ(ReadKey(a, va, layer, p, 1), ReadKey(b, vb, layer, p, 1)) << "layer " << layer << " position " << p;
    }
  }
  kv_a.Free(seq_a);
  kv_b.Free(seq_b);
  kv_b.Free(filler);
}

TEST(KvCacheTest, Fp8SequenceMovesThroughTheTransportBitForBit) {
  for (int64_t tokens : {3, 4, 9, 12}) {  // shorter than a block, exactly one, several plus an open block, whole blocks
    SCOPED_TRACE(tokens);
    ExpectMovesAcrossStorages(KvDtype::kFp8E4M3, tokens);
  }
}
TEST(KvCacheTest, F32AndBf16SequencesMoveThroughTheTransport) {
  ExpectMovesAcrossStorages(KvDtype::kF32, 9);
  ExpectMovesAcrossStorages(KvDtype::kBf16, 9);
}

TEST(KvCacheTest, TransferFormatNamesWhatMustMatch) {
  KvStorage a(kGeometry, KvCacheOptions{KvDtype::kFp8E4M3, 4}, 2, 1);
  KvStorage b(kGeometry, KvCacheOptions{KvDtype::kBf16, 4}, 2, 1);
  EXPECT_EQ(a.transfer_format(), "kv fp8 block 4 layers 2 kv_heads 3 head_dim 8");
  EXPECT_NE(a.transfer_format(), b.transfer_format());
}

}  // namespace
}  // namespace tetra

namespace tetra {
namespace {

// Block `block` of a layer's keys (or values) dequantized, as Write takes
// rows: [block_tokens, num_kv_heads, head_dim].
std::vector<float> ReadBlock(const KvStorage& storage, int layer, BlockId block, bool values) {
  const KvLayerView view = storage.layer(layer);
  const int bt = view.block_tokens, dim = view.head_dim, heads = view.num_kv_heads;
  std::vector<float> head(static_cast<size_t>(bt) * dim), rows(static_cast<size_t>(bt) * heads * dim);
  for (int h = 0; h < heads; ++h) {
    LoadKvBlockRows(view, values ? view.values : view.keys, values ? view.value_scales : view.key_scales, block, h, 0,
                    bt, head.data());
    for (int s = 0; s < bt; ++s) std::copy_n(&head[s * dim], dim, &rows[(static_cast<size_t>(s) * heads + h) * dim]);
  }
  return rows;
}

std::vector<uint8_t> Bytes(const std::vector<std::span<uint8_t>>& regions) {
  std::vector<uint8_t> out;
  for (auto r : regions) out.insert(out.end(), r.begin(), r.end());
  return out;
}

// A block converted from one dtype to another holds what a storage of the
// target dtype holds when it stores the source block's values itself.
TEST(KvCacheTest, ConvertedBlocksHoldWhatTheTargetFormatStores) {
  const KvDtype dtypes[] = {KvDtype::kFp8E4M3, KvDtype::kBf16, KvDtype::kF32};
  for (KvDtype from : dtypes) {
    for (KvDtype to : dtypes) {
      SCOPED_TRACE(std::string(KvDtypeName(from)) + " -> " + KvDtypeName(to));
      KvManager kv(4, 4, 1), kv_oracle(4, 4, 1);
      KvStorage source(kGeometry, KvCacheOptions{from, 4}, 4, 1), oracle(kGeometry, KvCacheOptions{to, 4}, 4, 1);
      std::mt19937 rng(21);
      std::vector<std::vector<float>> keys(kGeometry.num_layers);
      KvSequence seq, oracle_seq;
      WriteRandom(kv, source, seq, 8, rng, keys);  // two full blocks
      ASSERT_TRUE(kv_oracle.Reserve(oracle_seq, 8).ok());
      const KvTransferFormat f = ParseKvTransferFormat(source.transfer_format()).value();
      const KvTransferFormat t = ParseKvTransferFormat(oracle.transfer_format()).value();
      EXPECT_EQ(f.dtype, from);
      EXPECT_EQ(f.geometry.num_kv_heads, kGeometry.num_kv_heads);
      for (int layer = 0; layer < kGeometry.num_layers; ++layer) {
        for (int b = 0; b < 2; ++b) {
          const std::vector<float> k = ReadBlock(source, layer, seq.blocks[b], false);
          const std::vector<float> v = ReadBlock(source, layer, seq.blocks[b], true);
          oracle.Write(layer, oracle_seq.blocks, oracle_seq.slot, b * 4, 4, k.data(), v.data());
          std::vector<uint8_t> converted;
          const BlockId block = seq.blocks[b];
          ASSERT_TRUE(ConvertKvBlock(f, source.LayerRegions(layer, {&block, 1}, -1), t, &converted).ok());
          const BlockId oracle_block = oracle_seq.blocks[b];
          EXPECT_EQ(converted, Bytes(oracle.LayerRegions(layer, {&oracle_block, 1}, -1))) << "layer " << layer;
        }
      }
      kv.Free(seq);
      kv_oracle.Free(oracle_seq);
    }
  }
}

TEST(KvCacheTest, ConversionRefusesOtherGeometriesAndBadRegions) {
  KvStorage a(kGeometry, KvCacheOptions{KvDtype::kFp8E4M3, 4}, 2, 1);
  KvStorage b(KvGeometry{kGeometry.num_layers, kGeometry.num_kv_heads, 16}, KvCacheOptions{KvDtype::kF32, 4}, 2, 1);
  const KvTransferFormat f = ParseKvTransferFormat(a.transfer_format()).value();
  const KvTransferFormat t = ParseKvTransferFormat(b.transfer_format()).value();
  std::vector<uint8_t> out;
  const BlockId block = 0;
  EXPECT_FALSE(ConvertKvBlock(f, a.LayerRegions(0, {&block, 1}, -1), t, &out).ok());
  EXPECT_FALSE(ConvertKvBlock(f, a.LayerRegions(0, {}, 0), f, &out).ok());  // an open block's spans
  EXPECT_FALSE(ParseKvTransferFormat("kv fp8 block 4").ok());
  EXPECT_FALSE(ParseKvTransferFormat("kv int4 block 4 layers 2 kv_heads 3 head_dim 8").ok());
  EXPECT_FALSE(ParseKvTransferFormat(a.transfer_format() + " extra").ok());
}

}  // namespace
}  // namespace tetra
