// Fixed-size KV blocks with reference counts, and the prefix cache over them.
// No tensors: the storage a block id names lives in model/kv_cache.h.
//
// A block is in one of three states:
//   free    - in no table, holds nothing worth keeping;
//   held    - in at least one sequence's block table (ref count > 0; a
//             prompt shared by parallel samples is held once per sample);
//   cached  - in no table (ref count 0) but published: it holds a full block
//             of some prefix, which a later request with the same prefix can
//             take back instead of recomputing it, until it is evicted.
// Allocation takes free blocks first, then evicts cached ones, least
// recently released first. Blocks free + cached are what can be allocated.
//
// Prefix keys: a full block is published under the chain hash of its tokens
// and its parent's hash (so equal hashes mean equal prefixes), and a lookup
// also compares the block's own tokens and its parent's cache entry, so a
// hash collision can never hand out another prefix's keys.
//
// One thread at a time (the scheduler's).
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "base/status.h"

namespace tetra {

using BlockId = int32_t;
inline constexpr BlockId kNoBlock = -1;
using BlockHash = uint64_t;

class BlockPool {
 public:
  BlockPool(int num_blocks, int block_tokens);
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  int num_blocks() const { return static_cast<int>(ref_counts_.size()); }
  int block_tokens() const { return block_tokens_; }
  // Blocks Allocate can hand out now: free plus cached.
  int num_blocks_free() const { return static_cast<int>(free_.size()) + num_blocks_cached_; }
  int num_blocks_held() const { return num_blocks() - num_blocks_free(); }
  int num_blocks_cached() const { return num_blocks_cached_; }
  // Blocks that hold `tokens` positions.
  int BlocksFor(int64_t tokens) const { return static_cast<int>((tokens + block_tokens_ - 1) / block_tokens_); }

  // Appends n blocks, each with a reference count of 1, to `out`; a
  // kResourceExhausted error (and nothing allocated) when fewer than n are
  // free or cached.
  Status Allocate(int n, std::vector<BlockId>* out);
  void AddRef(BlockId id);   // another owner of a held block
  // Drops one reference; at zero the block becomes cached if published,
  // else free.
  void Release(BlockId id);
  int ref_count(BlockId id) const;

  // --- Prefix cache ---
  // Turned off, Publish does nothing and Lookup finds nothing.
  void set_prefix_caching(bool enabled) { prefix_caching_ = enabled; }
  bool prefix_caching() const { return prefix_caching_; }
  // The chain hash of a full block of tokens after a parent block with
  // hash `parent` (kRootHash for a sequence's first block).
  static constexpr BlockHash kRootHash = 0x7e74a5eedULL;
  static BlockHash ChainHash(BlockHash parent, std::span<const int32_t> tokens);

  // The block that caches `tokens` (block_tokens of them) after the cached
  // block `parent` (kNoBlock for a sequence's first block), with a new
  // reference; kNoBlock when there is none.
  BlockId Lookup(BlockHash hash, BlockId parent, std::span<const int32_t> tokens);
  // Records that the held, full block `id` holds `tokens` after `parent`
  // (kNoBlock for the first block, else a cached block). Returns false, and
  // publishes nothing, when caching is off, the parent is not cached, or
  // another block already caches this prefix (two requests computed it at
  // once; the first one stays).
  bool Publish(BlockId id, BlockHash hash, BlockId parent, std::span<const int32_t> tokens);
  bool is_published(BlockId id) const { return entries_[id].cache_id != 0; }

 private:
  struct Entry {
    uint64_t cache_id = 0;         // nonzero while published; unique per publication
    BlockHash hash = 0;
    uint64_t parent_cache_id = 0;  // the parent's cache_id at publication (0: first block)
    // Least-recently-released list of cached, unreferenced blocks.
    BlockId lru_prev = kNoBlock, lru_next = kNoBlock;
  };
  void LruPushBack(BlockId id);
  void LruRemove(BlockId id);
  void Unpublish(BlockId id);
  std::span<const int32_t> TokensOf(BlockId id) const {
    return {&tokens_[static_cast<size_t>(id) * block_tokens_], static_cast<size_t>(block_tokens_)};
  }

  int block_tokens_;
  bool prefix_caching_ = true;
  std::vector<int32_t> ref_counts_;  // [num_blocks]
  std::vector<BlockId> free_;        // a stack: the most recently freed block is reused first
  std::vector<Entry> entries_;       // [num_blocks]
  std::vector<int32_t> tokens_;      // [num_blocks, block_tokens] the tokens a published block holds
  std::unordered_map<BlockHash, BlockId> cached_;  // hash -> published block
  BlockId lru_head_ = kNoBlock, lru_tail_ = kNoBlock;
  int num_blocks_cached_ = 0;
  uint64_t next_cache_id_ = 1;
};

}  // namespace tetra
