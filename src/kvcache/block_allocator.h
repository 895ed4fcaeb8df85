// Fixed-size KV blocks with reference counts: which blocks are free, which
// are held and by how many owners (a prefix shared by parallel samples is
// held once per sample). No tensors: the storage lives in model/kv_cache.h.
// One thread at a time (the scheduler's, or a single sequence's owner).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace tetra {

using BlockId = int32_t;

class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks);

  // nullopt when fewer than n blocks are free; never allocates part of n.
  // Each returned block has a reference count of 1.
  std::optional<std::vector<BlockId>> Allocate(int n);
  void AddRef(BlockId id);   // another owner of a held block
  void Release(BlockId id);  // frees the block when its count reaches zero

  int num_blocks() const { return static_cast<int>(ref_counts_.size()); }
  int num_blocks_free() const { return static_cast<int>(free_.size()); }
  int num_blocks_used() const { return num_blocks() - num_blocks_free(); }
  int ref_count(BlockId id) const;

 private:
  std::vector<int32_t> ref_counts_;  // [num_blocks]
  std::vector<BlockId> free_;        // a stack: the most recently freed block is reused first
};

}  // namespace tetra
