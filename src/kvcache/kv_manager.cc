#include "kvcache/kv_manager.h"

#include <algorithm>

#include "base/check.h"

namespace tetra {

KvManager::KvManager(int num_blocks, int block_tokens, int num_slots)
    : blocks_(num_blocks, block_tokens), num_slots_(num_slots) {
  TETRA_CHECK(num_slots > 0, "{} sequence slots", num_slots);
  free_slots_.reserve(static_cast<size_t>(num_slots));
  for (int slot = num_slots - 1; slot >= 0; --slot) free_slots_.push_back(slot);
}

int KvManager::TakeSlot() {
  TETRA_CHECK(!free_slots_.empty());
  const int slot = free_slots_.back();
  free_slots_.pop_back();
  return slot;
}

int64_t KvManager::AttachCachedPrefix(KvSequence& seq, std::span<const int32_t> tokens) {
  TETRA_CHECK(seq.blocks.empty() && seq.num_tokens == 0, "AttachCachedPrefix on a sequence that holds KV");
  const int bt = block_tokens();
  prefix_tokens_queried_ += static_cast<int64_t>(tokens.size());
  if (tokens.empty() || !blocks_.prefix_caching()) return 0;
  const int64_t max_blocks = (static_cast<int64_t>(tokens.size()) - 1) / bt;
  BlockHash hash = BlockPool::kRootHash;
  BlockId parent = kNoBlock;
  for (int64_t b = 0; b < max_blocks; ++b) {
    const std::span<const int32_t> block_tokens = tokens.subspan(b * bt, bt);
    const BlockHash next_hash = BlockPool::ChainHash(hash, block_tokens);
    const BlockId id = blocks_.Lookup(next_hash, parent, block_tokens);
    if (id == kNoBlock) break;
    seq.blocks.push_back(id);
    hash = next_hash;
    parent = id;
  }
  seq.num_tokens = static_cast<int64_t>(seq.blocks.size()) * bt;
  seq.num_hashed_blocks = static_cast<int>(seq.blocks.size());
  seq.last_hash = hash;
  seq.is_chain_published = true;
  prefix_tokens_hit_ += seq.num_tokens;
  return seq.num_tokens;
}

int KvManager::BlocksToReserve(const KvSequence& seq, int64_t num_tokens) const {
  return std::max(0, blocks_.BlocksFor(num_tokens) - static_cast<int>(seq.blocks.size()));
}

Status KvManager::Reserve(KvSequence& seq, int64_t num_tokens) {
  if (!seq.holds_kv() && free_slots_.empty()) {
    return Status::WithCode(StatusCode::kResourceExhausted,
                            fmt::format("no sequence slot is free ({} in use)", num_slots_));
  }
  TETRA_RETURN_IF_ERROR(blocks_.Allocate(BlocksToReserve(seq, num_tokens), &seq.blocks));
  if (!seq.holds_kv()) seq.slot = TakeSlot();
  return Status::Ok();
}

void KvManager::Commit(KvSequence& seq, std::span<const int32_t> tokens, int64_t num_tokens) {
  TETRA_CHECK(num_tokens >= seq.num_tokens && blocks_.BlocksFor(num_tokens) <= static_cast<int>(seq.blocks.size()),
              "Commit of {} positions: {} written, {} blocks held", num_tokens, seq.num_tokens, seq.blocks.size());
  seq.num_tokens = num_tokens;
  PublishKnown(seq, tokens);
}

void KvManager::PublishKnown(KvSequence& seq, std::span<const int32_t> tokens) {
  const int bt = block_tokens();
  const int64_t known = std::min<int64_t>(seq.num_tokens, static_cast<int64_t>(tokens.size()));
  const int full = static_cast<int>(known / bt);
  for (int b = seq.num_hashed_blocks; b < full; ++b) {
    const std::span<const int32_t> block_tokens = tokens.subspan(static_cast<size_t>(b) * bt, bt);
    seq.last_hash = BlockPool::ChainHash(seq.last_hash, block_tokens);
    if (seq.is_chain_published) {
      const BlockId parent = b == 0 ? kNoBlock : seq.blocks[b - 1];
      // Already published (attached from the cache, or shared with a fork) or newly published.
      seq.is_chain_published = blocks_.is_published(seq.blocks[b]) ||
                               blocks_.Publish(seq.blocks[b], seq.last_hash, parent, block_tokens);
    }
  }
  seq.num_hashed_blocks = std::max(seq.num_hashed_blocks, full);
}

Status KvManager::Fork(const KvSequence& parent, KvSequence* child, std::vector<KvSlotOp>* ops) {
  TETRA_CHECK(child->blocks.empty() && !child->holds_kv(), "Fork into a sequence that holds KV");
  TETRA_CHECK(parent.holds_kv() || parent.num_tokens == 0, "Fork of a sequence without a slot");
  const int bt = block_tokens();
  const int full = static_cast<int>(parent.num_tokens / bt);
  const int open_tokens = static_cast<int>(parent.num_tokens % bt);
  if (free_slots_.empty()) {
    return Status::WithCode(StatusCode::kResourceExhausted,
                            fmt::format("no sequence slot is free for a parallel sample ({} in use)", num_slots_));
  }
  std::vector<BlockId> open_block;
  if (open_tokens > 0) TETRA_RETURN_IF_ERROR(blocks_.Allocate(1, &open_block));
  child->blocks.assign(parent.blocks.begin(), parent.blocks.begin() + full);
  for (BlockId id : child->blocks) blocks_.AddRef(id);
  child->blocks.insert(child->blocks.end(), open_block.begin(), open_block.end());
  child->num_tokens = parent.num_tokens;
  child->slot = TakeSlot();
  child->num_hashed_blocks = parent.num_hashed_blocks;  // only full blocks are hashed
  child->last_hash = parent.last_hash;
  child->is_chain_published = parent.is_chain_published;
  if (open_tokens > 0) {
    ops->push_back({KvSlotOp::Kind::kCopySlot, parent.slot, kNoBlock, child->slot, open_tokens});
  }
  return Status::Ok();
}

Status KvManager::Truncate(KvSequence& seq, int64_t num_tokens, std::vector<KvSlotOp>* ops) {
  TETRA_CHECK(0 <= num_tokens && num_tokens <= seq.num_tokens, "Truncate to {} of {} positions", num_tokens,
              seq.num_tokens);
  if (num_tokens == seq.num_tokens) return Status::Ok();
  const int bt = block_tokens();
  const int64_t old_full = seq.num_tokens / bt;
  const int keep_blocks = blocks_.BlocksFor(num_tokens);
  const int open_tokens = static_cast<int>(num_tokens % bt);
  // The new end inside a block that was full: its positions go back to the slot.
  const bool reopens_full_block = open_tokens > 0 && num_tokens / bt < old_full;
  BlockId reopened = kNoBlock;
  if (reopens_full_block) {
    reopened = seq.blocks[keep_blocks - 1];
    if (blocks_.ref_count(reopened) > 1 || blocks_.is_published(reopened)) {
      std::vector<BlockId> fresh;
      TETRA_RETURN_IF_ERROR(blocks_.Allocate(1, &fresh));
      seq.blocks[keep_blocks - 1] = fresh[0];
    }
    ops->push_back({KvSlotOp::Kind::kLoadBlock, -1, reopened, seq.slot, open_tokens});
  }
  for (size_t b = seq.blocks.size(); b-- > static_cast<size_t>(keep_blocks);) blocks_.Release(seq.blocks[b]);
  seq.blocks.resize(keep_blocks);
  // The reopened block was replaced by a private copy: drop our reference
  // to the shared one after the load op has named it (the op runs before any
  // later allocation can reuse it, in the same step's order).
  if (reopened != kNoBlock && seq.blocks[keep_blocks - 1] != reopened) blocks_.Release(reopened);
  seq.num_tokens = num_tokens;
  if (seq.num_hashed_blocks > num_tokens / bt) {
    // Hashes of the dropped blocks are gone; rehash from the start next time.
    seq.num_hashed_blocks = 0;
    seq.last_hash = BlockPool::kRootHash;
    seq.is_chain_published = true;
  }
  return Status::Ok();
}

void KvManager::Free(KvSequence& seq) {
  for (size_t b = seq.blocks.size(); b-- > 0;) blocks_.Release(seq.blocks[b]);
  seq.blocks.clear();
  seq.num_tokens = 0;
  seq.num_hashed_blocks = 0;
  seq.last_hash = BlockPool::kRootHash;
  seq.is_chain_published = true;
  if (seq.holds_kv()) free_slots_.push_back(seq.slot);
  seq.slot = -1;
}

}  // namespace tetra
