// The paged KV cache: a pool of fixed-size blocks shared by sequences
// (KvPool), and one sequence's block table and open block (KvCache). The
// layout attention reads is kernels/attention/paged_kv.h: full blocks are
// stored FP8 E4M3 with one scale per block per KV head (or BF16 / F32), and
// the block a sequence is still filling stays f32 until it is full, when its
// scales are fixed and it is stored once.
//
// Blocks are allocated up front by Reserve (the scheduler's step, where
// running out is an answer, not a crash), so the forward pass never fails.
// A pool and its caches belong to one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/attention/paged_kv.h"
#include "kvcache/block_allocator.h"

namespace tetra {

struct KvCacheOptions {
  KvDtype dtype = KvDtype::kFp8E4M3;
  int block_tokens = 64;  // positions per block, and per FP8 scale
};

// "fp8" / "bf16" / "f32"; an error naming the value for anything else.
StatusOr<KvDtype> ParseKvDtype(const std::string& name);
const char* KvDtypeName(KvDtype dtype);

struct KvGeometry {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
};

class KvPool {
 public:
  // Address space for num_blocks blocks of every layer is reserved at once;
  // memory is committed as blocks are first written.
  KvPool(const KvGeometry& geometry, const KvCacheOptions& options, int num_blocks);
  ~KvPool();
  KvPool(const KvPool&) = delete;
  KvPool& operator=(const KvPool&) = delete;

  // Blocks that hold `tokens` positions.
  static int BlocksFor(int64_t tokens, int block_tokens) {
    return static_cast<int>((tokens + block_tokens - 1) / block_tokens);
  }

  const KvGeometry& geometry() const { return geometry_; }
  const KvCacheOptions& options() const { return options_; }
  BlockAllocator& allocator() { return allocator_; }

  KvLayerView layer(int layer) const;
  uint8_t* keys(int layer) const;
  uint8_t* values(int layer) const;
  float* key_scales(int layer) const;    // [num_blocks, num_kv_heads]
  float* value_scales(int layer) const;

 private:
  KvGeometry geometry_;
  KvCacheOptions options_;
  BlockAllocator allocator_;
  int64_t layer_data_bytes_ = 0;   // one layer's keys (or values)
  int64_t layer_scale_count_ = 0;  // one layer's key (or value) scales
  uint8_t* memory_ = nullptr;      // [layers][keys, values, key scales, value scales]
  size_t memory_bytes_ = 0;
};

// One sequence's cache: its block table in a pool and its open block.
class KvCache {
 public:
  explicit KvCache(KvPool& pool);
  ~KvCache();  // releases its blocks
  KvCache(KvCache&& other) noexcept;
  KvCache& operator=(KvCache&&) = delete;
  KvCache(const KvCache&) = delete;

  int64_t length() const { return length_; }
  // Positions the held blocks cover.
  int64_t capacity() const { return static_cast<int64_t>(blocks_.size()) * pool_->options().block_tokens; }
  KvPool& pool() const { return *pool_; }

  // Holds the blocks that positions [length, length + n) need. Error (and
  // nothing held beyond before) when the pool has too few free blocks.
  Status Reserve(int64_t n);

  // Stores layer `layer`'s keys and values of positions
  // [length, length + count), k and v [count, num_kv_heads, head_dim];
  // within the reserved capacity. Each layer is written once per step.
  void Write(int layer, int64_t count, const float* k, const float* v);
  // What attention reads for `layer` once the step's positions are written:
  // `length() + count` positions.
  KvSequenceView View(int layer, int64_t count) const;
  // Called once every layer holds the n new positions.
  void Advance(int64_t n);

 private:
  KvPool* pool_;
  int64_t length_ = 0;
  std::vector<BlockId> blocks_;
  // The block being filled, per layer: [num_kv_heads, block_tokens, head_dim].
  std::vector<std::vector<float>> open_keys_;
  std::vector<std::vector<float>> open_values_;
};

}  // namespace tetra
