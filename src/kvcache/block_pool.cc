#include "kvcache/block_pool.h"

#include <algorithm>

#include "base/check.h"

namespace tetra {

BlockPool::BlockPool(int num_blocks, int block_tokens)
    : block_tokens_(block_tokens),
      ref_counts_(static_cast<size_t>(num_blocks), 0),
      entries_(static_cast<size_t>(num_blocks)),
      tokens_(static_cast<size_t>(num_blocks) * block_tokens) {
  TETRA_CHECK(num_blocks >= 0 && block_tokens > 0, "{} blocks of {} tokens", num_blocks, block_tokens);
  free_.reserve(static_cast<size_t>(num_blocks));
  // Lowest ids on top, so a fresh pool hands out 0, 1, 2, ...
  for (int id = num_blocks - 1; id >= 0; --id) free_.push_back(id);
}

Status BlockPool::Allocate(int n, std::vector<BlockId>* out) {
  TETRA_CHECK(n >= 0);
  if (n > num_blocks_free()) {
    return Status::WithCode(StatusCode::kResourceExhausted,
                            fmt::format("KV cache is full: {} blocks of {} tokens needed, {} of {} free", n,
                                        block_tokens_, num_blocks_free(), num_blocks()));
  }
  for (int i = 0; i < n; ++i) {
    BlockId id;
    if (!free_.empty()) {
      id = free_.back();
      free_.pop_back();
    } else {  // evict the least recently released cached block
      id = lru_head_;
      LruRemove(id);
      --num_blocks_cached_;
      Unpublish(id);
    }
    ref_counts_[id] = 1;
    out->push_back(id);
  }
  return Status::Ok();
}

void BlockPool::AddRef(BlockId id) {
  TETRA_CHECK(id >= 0 && id < num_blocks() && ref_counts_[id] > 0, "AddRef of block {} that is not held", id);
  ++ref_counts_[id];
}

void BlockPool::Release(BlockId id) {
  TETRA_CHECK(id >= 0 && id < num_blocks() && ref_counts_[id] > 0, "Release of block {} that is not held", id);
  if (--ref_counts_[id] > 0) return;
  if (is_published(id)) {
    LruPushBack(id);
    ++num_blocks_cached_;
  } else {
    free_.push_back(id);
  }
}

int BlockPool::ref_count(BlockId id) const {
  TETRA_CHECK(id >= 0 && id < num_blocks());
  return ref_counts_[id];
}

BlockHash BlockPool::ChainHash(BlockHash parent, std::span<const int32_t> tokens) {
  // FNV-1a over the parent hash and the token ids, then a 64-bit finalizer
  // (splitmix64) so that nearby inputs spread over the whole table.
  uint64_t h = 0xcbf29ce484222325ULL ^ parent;
  auto mix_in = [&h](uint64_t value) {
    for (int byte = 0; byte < 8; ++byte) {
      h ^= (value >> (8 * byte)) & 0xff;
      h *= 0x100000001b3ULL;
    }
  };
  mix_in(parent);
  for (int32_t token : tokens) mix_in(static_cast<uint32_t>(token));
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

BlockId BlockPool::Lookup(BlockHash hash, BlockId parent, std::span<const int32_t> tokens) {
  if (!prefix_caching_ || static_cast<int>(tokens.size()) != block_tokens_) return kNoBlock;
  const auto it = cached_.find(hash);
  if (it == cached_.end()) return kNoBlock;
  const BlockId id = it->second;
  const uint64_t parent_cache_id = parent == kNoBlock ? 0 : entries_[parent].cache_id;
  if (parent != kNoBlock && parent_cache_id == 0) return kNoBlock;
  if (entries_[id].parent_cache_id != parent_cache_id) return kNoBlock;
  const std::span<const int32_t> held = TokensOf(id);
  if (!std::equal(held.begin(), held.end(), tokens.begin())) return kNoBlock;
  if (ref_counts_[id] == 0) {  // cached and unreferenced: take it back from the eviction list
    LruRemove(id);
    --num_blocks_cached_;
  }
  ++ref_counts_[id];
  return id;
}

bool BlockPool::Publish(BlockId id, BlockHash hash, BlockId parent, std::span<const int32_t> tokens) {
  TETRA_CHECK(id >= 0 && id < num_blocks() && ref_counts_[id] > 0, "Publish of block {} that is not held", id);
  TETRA_CHECK(static_cast<int>(tokens.size()) == block_tokens_, "Publish of {} tokens, not a full block",
              tokens.size());
  if (!prefix_caching_ || is_published(id)) return false;
  const uint64_t parent_cache_id = parent == kNoBlock ? 0 : entries_[parent].cache_id;
  if (parent != kNoBlock && parent_cache_id == 0) return false;  // the chain is not cached above here
  if (const auto it = cached_.find(hash); it != cached_.end()) {
    const BlockId other = it->second;
    const std::span<const int32_t> held = TokensOf(other);
    if (entries_[other].parent_cache_id == parent_cache_id && std::equal(held.begin(), held.end(), tokens.begin())) {
      return false;  // the same prefix is cached already
    }
    // A stale entry (its parent was evicted and recomputed) or a collision: replace it.
    if (ref_counts_[other] == 0) {
      LruRemove(other);
      --num_blocks_cached_;
      Unpublish(other);
      free_.push_back(other);
    } else {
      Unpublish(other);
    }
  }
  Entry& entry = entries_[id];
  entry.cache_id = next_cache_id_++;
  entry.hash = hash;
  entry.parent_cache_id = parent_cache_id;
  std::copy(tokens.begin(), tokens.end(), tokens_.begin() + static_cast<size_t>(id) * block_tokens_);
  cached_[hash] = id;
  return true;
}

void BlockPool::Unpublish(BlockId id) {
  Entry& entry = entries_[id];
  if (entry.cache_id == 0) return;
  const auto it = cached_.find(entry.hash);
  if (it != cached_.end() && it->second == id) cached_.erase(it);
  entry.cache_id = 0;
}

void BlockPool::LruPushBack(BlockId id) {
  Entry& entry = entries_[id];
  entry.lru_prev = lru_tail_;
  entry.lru_next = kNoBlock;
  if (lru_tail_ != kNoBlock) {
    entries_[lru_tail_].lru_next = id;
  } else {
    lru_head_ = id;
  }
  lru_tail_ = id;
}

void BlockPool::LruRemove(BlockId id) {
  Entry& entry = entries_[id];
  if (entry.lru_prev != kNoBlock) {
    entries_[entry.lru_prev].lru_next = entry.lru_next;
  } else {
    lru_head_ = entry.lru_next;
  }
  if (entry.lru_next != kNoBlock) {
    entries_[entry.lru_next].lru_prev = entry.lru_prev;
  } else {
    lru_tail_ = entry.lru_prev;
  }
  entry.lru_prev = entry.lru_next = kNoBlock;
}

}  // namespace tetra
