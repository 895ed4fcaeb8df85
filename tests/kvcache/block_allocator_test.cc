// BlockAllocator: all-or-nothing allocation, reference counts, and every
// block freed exactly once.
#include "kvcache/block_allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

namespace tetra {
namespace {

TEST(BlockAllocatorTest, AllocatesDistinctBlocksUntilFull) {
  BlockAllocator allocator(8);
  auto a = allocator.Allocate(5);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(allocator.num_blocks_free(), 3);
  EXPECT_EQ(allocator.num_blocks_used(), 5);
  // Never part of a request.
  EXPECT_FALSE(allocator.Allocate(4).has_value());
  EXPECT_EQ(allocator.num_blocks_free(), 3);
  auto b = allocator.Allocate(3);
  ASSERT_TRUE(b.has_value());
  std::set<BlockId> all(a->begin(), a->end());
  all.insert(b->begin(), b->end());
  EXPECT_EQ(all.size(), 8u);
  EXPECT_EQ(*all.begin(), 0);
  EXPECT_EQ(*all.rbegin(), 7);
  EXPECT_EQ(allocator.num_blocks_free(), 0);
  EXPECT_TRUE(allocator.Allocate(0).has_value());
}

TEST(BlockAllocatorTest, SharedBlockIsFreedByItsLastOwner) {
  BlockAllocator allocator(2);
  auto a = allocator.Allocate(1);
  ASSERT_TRUE(a.has_value());
  const BlockId id = (*a)[0];
  allocator.AddRef(id);
  EXPECT_EQ(allocator.ref_count(id), 2);
  allocator.Release(id);
  EXPECT_EQ(allocator.num_blocks_free(), 1);
  allocator.Release(id);
  EXPECT_EQ(allocator.num_blocks_free(), 2);
  EXPECT_EQ(allocator.ref_count(id), 0);
}

TEST(BlockAllocatorTest, RandomTrafficConservesBlocks) {
  BlockAllocator allocator(64);
  std::mt19937 rng(7);
  std::vector<BlockId> held;
  for (int step = 0; step < 2000; ++step) {
    if (rng() % 2 == 0) {
      const int n = static_cast<int>(rng() % 6);
      auto blocks = allocator.Allocate(n);
      if (n <= static_cast<int>(64 - held.size())) {
        ASSERT_TRUE(blocks.has_value());
        held.insert(held.end(), blocks->begin(), blocks->end());
      } else {
        EXPECT_FALSE(blocks.has_value());
      }
    } else if (!held.empty()) {
      const size_t i = rng() % held.size();
      allocator.Release(held[i]);
      held.erase(held.begin() + static_cast<long>(i));
    }
    ASSERT_EQ(allocator.num_blocks_used(), static_cast<int>(held.size()));
    std::set<BlockId> distinct(held.begin(), held.end());
    ASSERT_EQ(distinct.size(), held.size());
  }
}

TEST(BlockAllocatorDeathTest, DoubleReleaseIsABug) {
  BlockAllocator allocator(1);
  auto a = allocator.Allocate(1);
  allocator.Release((*a)[0]);
  EXPECT_DEATH(allocator.Release((*a)[0]), "not held");
}

}  // namespace
}  // namespace tetra
