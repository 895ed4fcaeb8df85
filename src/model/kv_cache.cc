#include "model/kv_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>

#include "base/check.h"
#include "kernels/attention/kv_quantize.h"

namespace tetra {

namespace {
int64_t AlignUp(int64_t n, int64_t alignment) { return (n + alignment - 1) / alignment * alignment; }
}  // namespace

StatusOr<KvDtype> ParseKvDtype(const std::string& name) {
  if (name == "fp8") return KvDtype::kFp8E4M3;
  if (name == "bf16") return KvDtype::kBf16;
  if (name == "f32") return KvDtype::kF32;
  return Status::Errorf("unknown KV cache type '{}': expected fp8, bf16 or f32", name);
}

const char* KvDtypeName(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kFp8E4M3: return "fp8";
    case KvDtype::kBf16: return "bf16";
    case KvDtype::kF32: return "f32";
  }
  return "?";
}

KvPool::KvPool(const KvGeometry& geometry, const KvCacheOptions& options, int num_blocks)
    : geometry_(geometry), options_(options), allocator_(num_blocks) {
  TETRA_CHECK(geometry.num_layers > 0 && geometry.num_kv_heads > 0 && geometry.head_dim > 0);
  TETRA_CHECK(options.block_tokens > 0);
  const int64_t block_elements = static_cast<int64_t>(geometry.num_kv_heads) * options.block_tokens * geometry.head_dim;
  layer_data_bytes_ = AlignUp(block_elements * KvDtypeBytes(options.dtype) * num_blocks, 64);
  layer_scale_count_ = AlignUp(static_cast<int64_t>(num_blocks) * geometry.num_kv_heads, 16);
  memory_bytes_ = static_cast<size_t>((2 * layer_data_bytes_ + 2 * layer_scale_count_ * 4) * geometry.num_layers);
  if (memory_bytes_ > 0) {
    // Anonymous pages are committed on first touch, so an idle pool costs
    // address space only.
    void* p = mmap(nullptr, memory_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    TETRA_CHECK(p != MAP_FAILED, "cannot reserve {} bytes for the KV cache", memory_bytes_);
    memory_ = static_cast<uint8_t*>(p);
  }
}

KvPool::~KvPool() {
  if (memory_ != nullptr) munmap(memory_, memory_bytes_);
}

uint8_t* KvPool::keys(int layer) const {
  return memory_ + static_cast<size_t>(layer) * (2 * layer_data_bytes_ + 2 * layer_scale_count_ * 4);
}
uint8_t* KvPool::values(int layer) const { return keys(layer) + layer_data_bytes_; }
float* KvPool::key_scales(int layer) const { return reinterpret_cast<float*>(keys(layer) + 2 * layer_data_bytes_); }
float* KvPool::value_scales(int layer) const { return key_scales(layer) + layer_scale_count_; }

KvLayerView KvPool::layer(int layer) const {
  KvLayerView view;
  view.dtype = options_.dtype;
  view.block_tokens = options_.block_tokens;
  view.num_kv_heads = geometry_.num_kv_heads;
  view.head_dim = geometry_.head_dim;
  view.keys = keys(layer);
  view.values = values(layer);
  view.key_scales = key_scales(layer);
  view.value_scales = value_scales(layer);
  return view;
}

KvCache::KvCache(KvPool& pool) : pool_(&pool) {
  const KvGeometry& g = pool.geometry();
  const size_t open_size = static_cast<size_t>(g.num_kv_heads) * pool.options().block_tokens * g.head_dim;
  open_keys_.assign(g.num_layers, std::vector<float>(open_size));
  open_values_.assign(g.num_layers, std::vector<float>(open_size));
}

KvCache::KvCache(KvCache&& other) noexcept
    : pool_(other.pool_),
      length_(other.length_),
      blocks_(std::move(other.blocks_)),
      open_keys_(std::move(other.open_keys_)),
      open_values_(std::move(other.open_values_)) {
  other.blocks_.clear();
  other.length_ = 0;
}

KvCache::~KvCache() {
  for (BlockId id : blocks_) pool_->allocator().Release(id);
}

Status KvCache::Reserve(int64_t n) {
  const int block_tokens = pool_->options().block_tokens;
  const int need = KvPool::BlocksFor(length_ + n, block_tokens) - static_cast<int>(blocks_.size());
  if (need <= 0) return Status::Ok();
  std::optional<std::vector<BlockId>> blocks = pool_->allocator().Allocate(need);
  if (!blocks) {
    return Status::Errorf("KV cache is full: {} more tokens need {} blocks of {} tokens, {} of {} are free", n, need,
                          block_tokens, pool_->allocator().num_blocks_free(), pool_->allocator().num_blocks());
  }
  blocks_.insert(blocks_.end(), blocks->begin(), blocks->end());
  return Status::Ok();
}

void KvCache::Write(int layer, int64_t count, const float* k, const float* v) {
  TETRA_CHECK(length_ + count <= capacity(), "KV write past the reserved capacity");
  const KvGeometry& g = pool_->geometry();
  const int block_tokens = pool_->options().block_tokens;
  const KvLayerView view = pool_->layer(layer);
  float* open_k = open_keys_[layer].data();
  float* open_v = open_values_[layer].data();
  const int64_t row = static_cast<int64_t>(g.num_kv_heads) * g.head_dim;
  for (int64_t t = 0; t < count; ++t) {
    const int64_t position = length_ + t;
    const int slot = static_cast<int>(position % block_tokens);
    for (int h = 0; h < g.num_kv_heads; ++h) {
      const size_t to = (static_cast<size_t>(h) * block_tokens + slot) * g.head_dim;
      std::memcpy(open_k + to, k + t * row + h * g.head_dim, sizeof(float) * g.head_dim);
      std::memcpy(open_v + to, v + t * row + h * g.head_dim, sizeof(float) * g.head_dim);
    }
    if (slot == block_tokens - 1) {  // the block is full: fix its scales and store it
      const BlockId block = blocks_[position / block_tokens];
      StoreKvBlock(view, open_k, block, pool_->keys(layer), pool_->key_scales(layer));
      StoreKvBlock(view, open_v, block, pool_->values(layer), pool_->value_scales(layer));
    }
  }
}

KvSequenceView KvCache::View(int layer, int64_t count) const {
  KvSequenceView view;
  view.length = length_ + count;
  view.block_table = blocks_.data();
  view.open_keys = open_keys_[layer].data();
  view.open_values = open_values_[layer].data();
  return view;
}

void KvCache::Advance(int64_t n) {
  TETRA_CHECK(length_ + n <= capacity());
  length_ += n;
}

}  // namespace tetra
