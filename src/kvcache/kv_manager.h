// Sequences' block tables over one BlockPool: how the scheduler grows,
// shares, shortens and frees a sequence's KV. No tensors (base only), so the
// scheduler is tested without a model.
//
// A sequence's KV is its block table (full blocks, then the block it is
// filling), the number of positions written, and a sequence slot: the
// storage side (model/kv_cache.h) keeps the open block of each slot at
// higher precision until it is full, when it is quantized into the block
// the table names; the runner also keeps each slot's last sampled token.
// So every block of a table has an id and one format, whatever happens to
// the sequence: preemption, forking for n > 1, rollback, transfer.
//
// Operations that move open-block data (a fork copies the parent's open
// block, a truncation back into a full block reloads it) are returned as
// KvSlotOps for the storage to run before the next step reads the sequence.
//
// One thread at a time (the scheduler's).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "kvcache/block_pool.h"

namespace tetra {

struct KvSequence {
  std::vector<BlockId> blocks;  // the block table: positions [i * block_tokens, (i + 1) * block_tokens)
  int64_t num_tokens = 0;       // positions whose keys and values are written
  int slot = -1;                // its sequence slot while it holds KV, else -1
  // Prefix-cache bookkeeping: the leading full blocks already hashed (and
  // published where possible), and the chain hash of the last of them.
  int num_hashed_blocks = 0;
  BlockHash last_hash = BlockPool::kRootHash;
  bool is_chain_published = true;  // every hashed block is published, so the next one can be

  bool holds_kv() const { return slot >= 0; }
};

// Data the storage moves between a sequence's open block and its slot.
struct KvSlotOp {
  enum class Kind : uint8_t {
    kCopySlot,   // slot to_slot's open block = slot from_slot's (a fork)
    kLoadBlock,  // slot to_slot's open block = the full block from_block, dequantized (a truncation)
  };
  Kind kind = Kind::kCopySlot;
  int from_slot = -1;
  BlockId from_block = kNoBlock;
  int to_slot = -1;
  int num_tokens = 0;  // open positions to move (slots 0 .. num_tokens - 1)
};

class KvManager {
 public:
  // num_slots: how many sequences may hold KV at once.
  KvManager(int num_blocks, int block_tokens, int num_slots);
  KvManager(const KvManager&) = delete;
  KvManager& operator=(const KvManager&) = delete;

  BlockPool& blocks() { return blocks_; }
  const BlockPool& blocks() const { return blocks_; }
  int block_tokens() const { return blocks_.block_tokens(); }
  int num_slots() const { return num_slots_; }
  int num_slots_free() const { return static_cast<int>(free_slots_.size()); }

  // For a sequence that holds nothing yet: attaches the cached blocks of
  // the longest cached prefix of `tokens`, leaving at least one token to
  // compute (its logits are needed); returns the positions attached.
  // Counts the tokens queried and hit.
  int64_t AttachCachedPrefix(KvSequence& seq, std::span<const int32_t> tokens);

  // Blocks Reserve(seq, num_tokens) would take from the pool.
  int BlocksToReserve(const KvSequence& seq, int64_t num_tokens) const;
  // Makes seq's table cover positions [0, num_tokens) and gives it a slot if
  // it has none. kResourceExhausted (and nothing taken) when the pool has
  // too few blocks or no slot is free.
  Status Reserve(KvSequence& seq, int64_t num_tokens);

  // Positions [seq.num_tokens, num_tokens) are written (the step that wrote
  // them has been scheduled before any step that reads them). Blocks full
  // of known tokens are published to the prefix cache: `tokens` are the
  // sequence's tokens known so far (at least num_tokens of them, or fewer
  // when its last sampled tokens are not known yet).
  void Commit(KvSequence& seq, std::span<const int32_t> tokens, int64_t num_tokens);
  // Publishes any block that became full of known tokens since Commit.
  void PublishKnown(KvSequence& seq, std::span<const int32_t> tokens);

  // `child` (empty) shares parent's full blocks and gets its own copy of
  // the parent's open block (a new block and slot, and a kCopySlot op).
  // kResourceExhausted (and nothing taken) when there is no block or slot.
  Status Fork(const KvSequence& parent, KvSequence* child, std::vector<KvSlotOp>* ops);

  // Keeps positions [0, num_tokens) (<= seq.num_tokens) and releases the
  // blocks past them. When the new end falls inside a full block, its
  // positions are reloaded into the slot (a kLoadBlock op); a block that
  // others share or the cache holds is replaced by a private one first
  // (kResourceExhausted when none is free: then nothing changes).
  Status Truncate(KvSequence& seq, int64_t num_tokens, std::vector<KvSlotOp>* ops);

  // Releases every block (last first, so a prefix's tail is evicted before
  // its head) and the slot; the sequence holds nothing after.
  void Free(KvSequence& seq);

  // Prefix-cache counters, in tokens, since construction.
  int64_t prefix_tokens_queried() const { return prefix_tokens_queried_; }
  int64_t prefix_tokens_hit() const { return prefix_tokens_hit_; }

 private:
  int TakeSlot();

  BlockPool blocks_;
  int num_slots_;
  std::vector<int> free_slots_;  // a stack, lowest slot on top when fresh
  int64_t prefix_tokens_queried_ = 0;
  int64_t prefix_tokens_hit_ = 0;
};

}  // namespace tetra
