#include "kvcache/block_allocator.h"

#include "base/check.h"

namespace tetra {

BlockAllocator::BlockAllocator(int num_blocks) : ref_counts_(static_cast<size_t>(num_blocks), 0) {
  TETRA_CHECK(num_blocks >= 0);
  free_.reserve(static_cast<size_t>(num_blocks));
  // Lowest ids on top, so a fresh allocator hands out 0, 1, 2, ...
  for (int id = num_blocks - 1; id >= 0; --id) free_.push_back(id);
}

std::optional<std::vector<BlockId>> BlockAllocator::Allocate(int n) {
  TETRA_CHECK(n >= 0);
  if (n > num_blocks_free()) return std::nullopt;
  std::vector<BlockId> blocks(static_cast<size_t>(n));
  for (BlockId& id : blocks) {
    id = free_.back();
    free_.pop_back();
    ref_counts_[id] = 1;
  }
  return blocks;
}

void BlockAllocator::AddRef(BlockId id) {
  TETRA_CHECK(id >= 0 && id < num_blocks() && ref_counts_[id] > 0, "AddRef of block {} that is not held", id);
  ++ref_counts_[id];
}

void BlockAllocator::Release(BlockId id) {
  TETRA_CHECK(id >= 0 && id < num_blocks() && ref_counts_[id] > 0, "Release of block {} that is not held", id);
  if (--ref_counts_[id] == 0) free_.push_back(id);
}

int BlockAllocator::ref_count(BlockId id) const {
  TETRA_CHECK(id >= 0 && id < num_blocks());
  return ref_counts_[id];
}

}  // namespace tetra
