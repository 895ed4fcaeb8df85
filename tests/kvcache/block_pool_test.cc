// BlockPool: all-or-nothing allocation, reference counts, every block freed
// exactly once, and the prefix cache (hits, verification against
// collisions, LRU eviction of unreferenced cached blocks).
#include "kvcache/block_pool.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <set>

namespace tetra {
namespace {

std::vector<int32_t> Tokens(int n, int32_t first) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

TEST(BlockPoolTest, AllocatesDistinctBlocksUntilFull) {
  BlockPool pool(8, 4);
  std::vector<BlockId> a;
  ASSERT_TRUE(pool.Allocate(5, &a).ok());
  EXPECT_EQ(pool.num_blocks_free(), 3);
  EXPECT_EQ(pool.num_blocks_held(), 5);
  // Never part of a request, and the error says why in a typed status.
  std::vector<BlockId> none;
  const Status full = pool.Allocate(4, &none);
  EXPECT_TRUE(full.is_resource_exhausted());
  EXPECT_NE(full.message().find("4 blocks of 4 tokens needed, 3 of 8 free"), std::string::npos) << full.message();
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(pool.num_blocks_free(), 3);
  std::vector<BlockId> b;
  ASSERT_TRUE(pool.Allocate(3, &b).ok());
  std::set<BlockId> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 8u);
  EXPECT_EQ(*all.begin(), 0);
  EXPECT_EQ(*all.rbegin(), 7);
  EXPECT_EQ(pool.num_blocks_free(), 0);
  EXPECT_TRUE(pool.Allocate(0, &b).ok());
}

TEST(BlockPoolTest, SharedBlockIsFreedByItsLastOwner) {
  BlockPool pool(2, 4);
  std::vector<BlockId> a;
  ASSERT_TRUE(pool.Allocate(1, &a).ok());
  const BlockId id = a[0];
  pool.AddRef(id);
  EXPECT_EQ(pool.ref_count(id), 2);
  pool.Release(id);
  EXPECT_EQ(pool.num_blocks_free(), 1);
  pool.Release(id);
  EXPECT_EQ(pool.num_blocks_free(), 2);
  EXPECT_EQ(pool.ref_count(id), 0);
}

TEST(BlockPoolTest, RandomTrafficConservesBlocks) {
  BlockPool pool(64, 4);
  std::mt19937 rng(7);
  std::vector<BlockId> held;
  for (int step = 0; step < 2000; ++step) {
    if (rng() % 2 == 0) {
      const int n = static_cast<int>(rng() % 6);
      const bool fits = n <= static_cast<int>(64 - held.size());
      EXPECT_EQ(pool.Allocate(n, &held).ok(), fits);
    } else if (!held.empty()) {
      const size_t i = rng() % held.size();
      pool.Release(held[i]);
      held.erase(held.begin() + static_cast<long>(i));
    }
    ASSERT_EQ(pool.num_blocks_held(), static_cast<int>(held.size()));
    std::set<BlockId> distinct(held.begin(), held.end());
    ASSERT_EQ(distinct.size(), held.size());
  }
}

TEST(BlockPoolDeathTest, DoubleReleaseIsABug) {
  BlockPool pool(1, 4);
  std::vector<BlockId> a;
  ASSERT_TRUE(pool.Allocate(1, &a).ok());
  pool.Release(a[0]);
  EXPECT_DEATH(pool.Release(a[0]), "not held");
}

TEST(BlockPoolTest, ChainHashDependsOnParentAndEveryToken) {
  const std::vector<int32_t> t = Tokens(16, 100);
  const BlockHash h = BlockPool::ChainHash(BlockPool::kRootHash, t);
  EXPECT_EQ(h, BlockPool::ChainHash(BlockPool::kRootHash, t));
  EXPECT_NE(h, BlockPool::ChainHash(h, t));
  for (size_t i = 0; i < t.size(); ++i) {
    std::vector<int32_t> changed = t;
    ++changed[i];
    EXPECT_NE(h, BlockPool::ChainHash(BlockPool::kRootHash, changed)) << i;
  }
}

TEST(BlockPoolTest, PublishedBlockIsFoundWithANewReference) {
  BlockPool pool(4, 4);
  std::vector<BlockId> a;
  ASSERT_TRUE(pool.Allocate(2, &a).ok());
  const std::vector<int32_t> first = Tokens(4, 0), second = Tokens(4, 4);
  const BlockHash h0 = BlockPool::ChainHash(BlockPool::kRootHash, first);
  const BlockHash h1 = BlockPool::ChainHash(h0, second);
  ASSERT_TRUE(pool.Publish(a[0], h0, kNoBlock, first));
  ASSERT_TRUE(pool.Publish(a[1], h1, a[0], second));
  EXPECT_FALSE(pool.Publish(a[1], h1, a[0], second));  // once
  EXPECT_EQ(pool.Lookup(h0, kNoBlock, first), a[0]);
  EXPECT_EQ(pool.ref_count(a[0]), 2);
  EXPECT_EQ(pool.Lookup(h1, a[0], second), a[1]);
  // Released by every owner, the blocks stay cached: free for allocation, and still found.
  for (int i = 0; i < 2; ++i) {
    pool.Release(a[0]);
    pool.Release(a[1]);
  }
  EXPECT_EQ(pool.num_blocks_free(), 4);
  EXPECT_EQ(pool.num_blocks_cached(), 2);
  EXPECT_EQ(pool.Lookup(h0, kNoBlock, first), a[0]);
  EXPECT_EQ(pool.num_blocks_cached(), 1);
  EXPECT_EQ(pool.num_blocks_held(), 1);
  pool.Release(a[0]);
}

TEST(BlockPoolTest, ACollidingHashNeverHandsOutAnotherPrefix) {
  BlockPool pool(4, 4);
  std::vector<BlockId> a;
  ASSERT_TRUE(pool.Allocate(2, &a).ok());
  const std::vector<int32_t> first = Tokens(4, 0), other = Tokens(4, 50);
  const BlockHash h = BlockPool::ChainHash(BlockPool::kRootHash, first);
  ASSERT_TRUE(pool.Publish(a[0], h, kNoBlock, first));
  // Same hash, other tokens (a forced collision): no hit.
  EXPECT_EQ(pool.Lookup(h, kNoBlock, other), kNoBlock);
  // Same hash and tokens but another parent: no hit either.
  EXPECT_EQ(pool.Lookup(h, a[1], first), kNoBlock);
  // A colliding publication replaces the entry rather than sharing it.
  ASSERT_TRUE(pool.Publish(a[1], h, kNoBlock, other));
  EXPECT_FALSE(pool.is_published(a[0]));
  EXPECT_EQ(pool.Lookup(h, kNoBlock, first), kNoBlock);
  EXPECT_EQ(pool.Lookup(h, kNoBlock, other), a[1]);
}

TEST(BlockPoolTest, EvictsTheLeastRecentlyReleasedCachedBlock) {
  BlockPool pool(3, 4);
  std::vector<BlockId> a;
  ASSERT_TRUE(pool.Allocate(3, &a).ok());
  std::vector<std::vector<int32_t>> tokens;
  std::vector<BlockHash> hashes;
  for (int i = 0; i < 3; ++i) {
    tokens.push_back(Tokens(4, 10 * i));
    hashes.push_back(BlockPool::ChainHash(BlockPool::kRootHash, tokens[i]));
    ASSERT_TRUE(pool.Publish(a[i], hashes[i], kNoBlock, tokens[i]));
  }
  pool.Release(a[1]);
  pool.Release(a[0]);
  pool.Release(a[2]);
  EXPECT_EQ(pool.num_blocks_cached(), 3);
  std::vector<BlockId> b;
  ASSERT_TRUE(pool.Allocate(1, &b).ok());
  EXPECT_EQ(b[0], a[1]);  // released first, evicted first
  EXPECT_FALSE(pool.is_published(a[1]));
  EXPECT_EQ(pool.Lookup(hashes[1], kNoBlock, tokens[1]), kNoBlock);
  EXPECT_EQ(pool.Lookup(hashes[0], kNoBlock, tokens[0]), a[0]);  // a hit moves it out of the LRU
  ASSERT_TRUE(pool.Allocate(1, &b).ok());
  EXPECT_EQ(b[1], a[2]);
  EXPECT_FALSE(pool.Allocate(1, &b).ok());
}

TEST(BlockPoolTest, AChildWhoseParentWasEvictedIsNotFound) {
  BlockPool pool(3, 4);
  std::vector<BlockId> a;
  ASSERT_TRUE(pool.Allocate(2, &a).ok());
  const std::vector<int32_t> first = Tokens(4, 0), second = Tokens(4, 4);
  const BlockHash h0 = BlockPool::ChainHash(BlockPool::kRootHash, first);
  const BlockHash h1 = BlockPool::ChainHash(h0, second);
  ASSERT_TRUE(pool.Publish(a[0], h0, kNoBlock, first));
  ASSERT_TRUE(pool.Publish(a[1], h1, a[0], second));
  pool.Release(a[0]);  // parent first in the LRU
  pool.Release(a[1]);
  std::vector<BlockId> b;
  ASSERT_TRUE(pool.Allocate(2, &b).ok());  // the free block, then the parent
  // The same first block, recomputed into a fresh block and published again.
  ASSERT_TRUE(pool.Publish(b[1], h0, kNoBlock, first));
  EXPECT_EQ(pool.Lookup(h1, b[1], second), kNoBlock);  // the stale child does not chain to the new parent
}

}  // namespace
}  // namespace tetra
