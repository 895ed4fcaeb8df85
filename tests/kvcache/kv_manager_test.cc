// KvManager: block tables grow all-or-nothing, prefixes are shared through
// the cache, forks share full blocks and copy the open one, truncation
// reloads a block it cuts into, and every block comes back. The oracle for
// the cache is a model of the storage: the test records which tokens each
// block was written with, and every attached block must hold exactly the
// tokens of the prompt at its positions.
#include "kvcache/kv_manager.h"

#include <gtest/gtest.h>

#include <map>
#include <numeric>
#include <random>

namespace tetra {
namespace {

std::vector<int32_t> Tokens(int n, int32_t first) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

// Runs a sequence's prompt as if computed: attach, reserve, commit.
int64_t Prefill(KvManager& kv, KvSequence& seq, const std::vector<int32_t>& prompt) {
  const int64_t hit = kv.AttachCachedPrefix(seq, prompt);
  EXPECT_TRUE(kv.Reserve(seq, static_cast<int64_t>(prompt.size())).ok());
  kv.Commit(seq, prompt, static_cast<int64_t>(prompt.size()));
  return hit;
}

TEST(KvManagerTest, ReserveIsAllOrNothingAndTyped) {
  KvManager kv(4, 16, 2);
  KvSequence a, b;
  ASSERT_TRUE(kv.Reserve(a, 40).ok());  // 3 blocks
  EXPECT_EQ(a.blocks.size(), 3u);
  EXPECT_TRUE(a.holds_kv());
  EXPECT_EQ(kv.BlocksToReserve(b, 40), 3);
  const Status full = kv.Reserve(b, 40);
  EXPECT_TRUE(full.is_resource_exhausted()) << full.message();
  EXPECT_TRUE(b.blocks.empty());
  EXPECT_FALSE(b.holds_kv());
  EXPECT_EQ(kv.blocks().num_blocks_free(), 1);
  ASSERT_TRUE(kv.Reserve(a, 48).ok());  // still 3 blocks
  EXPECT_EQ(a.blocks.size(), 3u);
  kv.Free(a);
  EXPECT_EQ(kv.blocks().num_blocks_free(), 4);
  EXPECT_EQ(kv.num_slots_free(), 2);
}

TEST(KvManagerTest, SlotsRunOutAsATypedStatus) {
  KvManager kv(8, 16, 1);
  KvSequence a, b;
  ASSERT_TRUE(kv.Reserve(a, 1).ok());
  EXPECT_TRUE(kv.Reserve(b, 1).is_resource_exhausted());
  EXPECT_EQ(kv.blocks().num_blocks_free(), 7);
  kv.Free(a);
  EXPECT_TRUE(kv.Reserve(b, 1).ok());
  kv.Free(b);
}

TEST(KvManagerTest, ASecondRequestWithTheSamePrefixAttachesItsFullBlocks) {
  KvManager kv(16, 4, 4);
  const std::vector<int32_t> prompt = Tokens(14, 100);  // 3 full blocks + 2
  KvSequence a, b;
  EXPECT_EQ(Prefill(kv, a, prompt), 0);
  EXPECT_EQ(Prefill(kv, b, prompt), 12);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a.blocks[i], b.blocks[i]) << i;
  EXPECT_NE(a.blocks[3], b.blocks[3]);
  EXPECT_EQ(kv.prefix_tokens_queried(), 28);
  EXPECT_EQ(kv.prefix_tokens_hit(), 12);
  // A diverging prompt shares only the blocks before the divergence.
  std::vector<int32_t> other = prompt;
  other[9] = 7;
  KvSequence c;
  EXPECT_EQ(Prefill(kv, c, other), 8);
  kv.Free(a);
  kv.Free(b);
  kv.Free(c);
  EXPECT_EQ(kv.blocks().num_blocks_held(), 0);
  // Still cached after every owner left.
  KvSequence d;
  EXPECT_EQ(kv.AttachCachedPrefix(d, prompt), 12);
  kv.Free(d);
}

TEST(KvManagerTest, AWholeCachedPromptLeavesItsLastBlockToCompute) {
  KvManager kv(16, 4, 4);
  const std::vector<int32_t> prompt = Tokens(12, 0);
  KvSequence a, b;
  Prefill(kv, a, prompt);
  EXPECT_EQ(Prefill(kv, b, prompt), 8);  // not 12: the last token's logits are needed
  kv.Free(a);
  kv.Free(b);
}

TEST(KvManagerTest, GeneratedTokensArePublishedOnceKnown) {
  KvManager kv(16, 4, 4);
  std::vector<int32_t> tokens = Tokens(6, 0);
  KvSequence a;
  Prefill(kv, a, tokens);
  // Decode two tokens: the KV of position 6 is written before token 7 is known.
  tokens.push_back(50);
  ASSERT_TRUE(kv.Reserve(a, 7).ok());
  kv.Commit(a, tokens, 7);
  tokens.push_back(51);
  ASSERT_TRUE(kv.Reserve(a, 8).ok());
  kv.Commit(a, std::span<const int32_t>(tokens).first(7), 8);  // token 7 not known yet
  EXPECT_EQ(a.num_hashed_blocks, 1);
  kv.PublishKnown(a, tokens);
  EXPECT_EQ(a.num_hashed_blocks, 2);
  KvSequence b;
  tokens.push_back(0);
  EXPECT_EQ(kv.AttachCachedPrefix(b, tokens), 8);
  kv.Free(a);
  kv.Free(b);
}

TEST(KvManagerTest, ForkSharesFullBlocksAndCopiesTheOpenOne) {
  KvManager kv(16, 4, 4);
  KvSequence parent;
  Prefill(kv, parent, Tokens(10, 0));  // 2 full + 2 open
  KvSequence child;
  std::vector<KvSlotOp> ops;
  ASSERT_TRUE(kv.Fork(parent, &child, &ops).ok());
  ASSERT_EQ(child.blocks.size(), 3u);
  EXPECT_EQ(child.blocks[0], parent.blocks[0]);
  EXPECT_EQ(child.blocks[1], parent.blocks[1]);
  EXPECT_NE(child.blocks[2], parent.blocks[2]);
  EXPECT_EQ(kv.blocks().ref_count(parent.blocks[0]), 2);
  EXPECT_EQ(child.num_tokens, 10);
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].kind, KvSlotOp::Kind::kCopySlot);
  EXPECT_EQ(ops[0].from_slot, parent.slot);
  EXPECT_EQ(ops[0].to_slot, child.slot);
  EXPECT_EQ(ops[0].num_tokens, 2);
  EXPECT_NE(child.slot, parent.slot);
  kv.Free(parent);
  EXPECT_EQ(kv.blocks().ref_count(child.blocks[0]), 1);
  kv.Free(child);
  EXPECT_EQ(kv.blocks().num_blocks_held(), 0);
  EXPECT_EQ(kv.num_slots_free(), 4);
}

TEST(KvManagerTest, ForkAtABlockBoundaryNeedsNoCopy) {
  KvManager kv(16, 4, 4);
  KvSequence parent, child;
  Prefill(kv, parent, Tokens(8, 0));
  std::vector<KvSlotOp> ops;
  ASSERT_TRUE(kv.Fork(parent, &child, &ops).ok());
  EXPECT_TRUE(ops.empty());
  EXPECT_EQ(child.blocks, parent.blocks);
  kv.Free(parent);
  kv.Free(child);
  EXPECT_EQ(kv.blocks().num_blocks_held(), 0);
}

TEST(KvManagerTest, TruncateReleasesAndReloadsTheBlockItCutsInto) {
  KvManager kv(16, 4, 4);
  KvSequence a;
  ASSERT_TRUE(kv.Reserve(a, 14).ok());
  kv.Commit(a, {}, 14);  // tokens unknown: nothing published
  std::vector<KvSlotOp> ops;
  // Inside the open block: nothing to move.
  ASSERT_TRUE(kv.Truncate(a, 13, &ops).ok());
  EXPECT_TRUE(ops.empty());
  EXPECT_EQ(a.blocks.size(), 4u);
  // Into full block 1, owned alone: reloaded in place, blocks 2 and 3 released.
  const BlockId block1 = a.blocks[1];
  ASSERT_TRUE(kv.Truncate(a, 6, &ops).ok());
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].kind, KvSlotOp::Kind::kLoadBlock);
  EXPECT_EQ(ops[0].from_block, block1);
  EXPECT_EQ(ops[0].to_slot, a.slot);
  EXPECT_EQ(ops[0].num_tokens, 2);
  EXPECT_EQ(a.blocks.size(), 2u);
  EXPECT_EQ(a.blocks[1], block1);
  EXPECT_EQ(kv.blocks().num_blocks_held(), 2);
  // To a boundary: no reload.
  ops.clear();
  ASSERT_TRUE(kv.Truncate(a, 4, &ops).ok());
  EXPECT_TRUE(ops.empty());
  EXPECT_EQ(a.blocks.size(), 1u);
  kv.Free(a);
  EXPECT_EQ(kv.blocks().num_blocks_held(), 0);
}

TEST(KvManagerTest, TruncateIntoASharedBlockTakesAPrivateCopy) {
  KvManager kv(16, 4, 4);
  KvSequence parent, child;
  Prefill(kv, parent, Tokens(8, 0));
  std::vector<KvSlotOp> ops;
  ASSERT_TRUE(kv.Fork(parent, &child, &ops).ok());
  const BlockId shared = child.blocks[1];
  ASSERT_TRUE(kv.Truncate(child, 6, &ops).ok());
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].from_block, shared);
  EXPECT_NE(child.blocks[1], shared);
  EXPECT_EQ(parent.blocks[1], shared);
  EXPECT_EQ(kv.blocks().ref_count(shared), 1);
  kv.Free(parent);
  kv.Free(child);
  EXPECT_EQ(kv.blocks().num_blocks_held(), 0);
}

// Random requests over a few shared prefixes, a pool small enough to evict:
// every attached block holds the prompt's tokens at its positions (the
// storage model), and at the end every block is free or cached.
TEST(KvManagerTest, RandomTrafficAttachesOnlyCorrectBlocks) {
  constexpr int kBlockTokens = 4;
  KvManager kv(40, kBlockTokens, 8);
  std::map<BlockId, std::vector<int32_t>> written;  // what the storage holds per block
  std::mt19937 rng(11);
  std::vector<std::vector<int32_t>> bases;
  for (int i = 0; i < 4; ++i) bases.push_back(Tokens(24, 1000 * i));
  std::vector<KvSequence> live;
  int64_t total_hits = 0;
  for (int step = 0; step < 3000; ++step) {
    if (live.size() < 6 && rng() % 2 == 0) {
      std::vector<int32_t> prompt = bases[rng() % bases.size()];
      prompt.resize(1 + rng() % prompt.size());
      if (rng() % 4 == 0) prompt[rng() % prompt.size()] = static_cast<int32_t>(rng() % 50);
      KvSequence seq;
      const int64_t hit = kv.AttachCachedPrefix(seq, prompt);
      total_hits += hit;
      ASSERT_LT(hit, static_cast<int64_t>(prompt.size()));
      for (int64_t b = 0; b < hit / kBlockTokens; ++b) {
        const std::vector<int32_t> expected(prompt.begin() + b * kBlockTokens, prompt.begin() + (b + 1) * kBlockTokens);
        ASSERT_EQ(written[seq.blocks[b]], expected) << "block " << b << " of a hit";
      }
      if (!kv.Reserve(seq, static_cast<int64_t>(prompt.size())).ok()) {
        kv.Free(seq);
        continue;
      }
      // The "forward pass" writes the computed positions' tokens.
      for (int64_t b = hit / kBlockTokens; b < static_cast<int64_t>(seq.blocks.size()); ++b) {
        const int64_t end = std::min<int64_t>((b + 1) * kBlockTokens, static_cast<int64_t>(prompt.size()));
        written[seq.blocks[b]].assign(prompt.begin() + b * kBlockTokens, prompt.begin() + end);
      }
      kv.Commit(seq, prompt, static_cast<int64_t>(prompt.size()));
      live.push_back(std::move(seq));
    } else if (!live.empty()) {
      const size_t i = rng() % live.size();
      kv.Free(live[i]);
      live.erase(live.begin() + static_cast<long>(i));
    }
  }
  for (KvSequence& seq : live) kv.Free(seq);
  EXPECT_GT(total_hits, 1000);  // the traffic did share prefixes
  EXPECT_EQ(kv.blocks().num_blocks_held(), 0);
  EXPECT_EQ(kv.blocks().num_blocks_free(), 40);
  EXPECT_EQ(kv.num_slots_free(), 8);
}

}  // namespace
}  // namespace tetra
