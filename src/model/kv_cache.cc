#include "model/kv_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
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

KvStorage::KvStorage(const KvGeometry& geometry, const KvCacheOptions& options, int num_blocks, int num_slots)
    : geometry_(geometry), options_(options), num_blocks_(num_blocks), num_slots_(num_slots) {
  TETRA_CHECK(geometry.num_layers > 0 && geometry.num_kv_heads > 0 && geometry.head_dim > 0);
  TETRA_CHECK(options.block_tokens > 0 && num_blocks >= 0 && num_slots > 0);
  const int64_t block_elements = static_cast<int64_t>(geometry.num_kv_heads) * options.block_tokens * geometry.head_dim;
  layer_data_bytes_ = AlignUp(block_elements * KvDtypeBytes(options.dtype) * num_blocks, 64);
  layer_scale_count_ = AlignUp(static_cast<int64_t>(num_blocks) * geometry.num_kv_heads, 16);
  layer_open_bytes_ = AlignUp(open_block_floats() * 4 * num_slots, 64);
  layer_bytes_ = 2 * layer_data_bytes_ + 2 * layer_scale_count_ * 4 + 2 * layer_open_bytes_;
  memory_bytes_ = static_cast<size_t>(layer_bytes_ * geometry.num_layers);
  // Anonymous pages are committed on first touch, so an idle cache costs
  // address space only.
  void* p = mmap(nullptr, memory_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  TETRA_CHECK(p != MAP_FAILED, "cannot reserve {} bytes for the KV cache", memory_bytes_);
  memory_ = static_cast<uint8_t*>(p);
}

KvStorage::~KvStorage() { munmap(memory_, memory_bytes_); }

int64_t KvStorage::open_block_floats() const {
  return static_cast<int64_t>(geometry_.num_kv_heads) * options_.block_tokens * geometry_.head_dim;
}

uint8_t* KvStorage::keys(int layer) const { return memory_ + static_cast<size_t>(layer) * layer_bytes_; }
uint8_t* KvStorage::values(int layer) const { return keys(layer) + layer_data_bytes_; }
float* KvStorage::key_scales(int layer) const { return reinterpret_cast<float*>(keys(layer) + 2 * layer_data_bytes_); }
float* KvStorage::value_scales(int layer) const { return key_scales(layer) + layer_scale_count_; }
float* KvStorage::open_keys(int layer, int slot) const {
  TETRA_CHECK(slot >= 0 && slot < num_slots_, "sequence slot {} of {}", slot, num_slots_);
  uint8_t* base = keys(layer) + 2 * layer_data_bytes_ + 2 * layer_scale_count_ * 4;
  return reinterpret_cast<float*>(base) + slot * open_block_floats();
}
float* KvStorage::open_values(int layer, int slot) const {
  return reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(open_keys(layer, slot)) + layer_open_bytes_);
}

KvLayerView KvStorage::layer(int layer) const {
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

void KvStorage::Write(int layer, std::span<const BlockId> block_table, int slot, int64_t first, int64_t count,
                      const float* k, const float* v) {
  const int block_tokens = options_.block_tokens;
  TETRA_CHECK(first >= 0 && count >= 0 && (first + count + block_tokens - 1) / block_tokens <=
                                              static_cast<int64_t>(block_table.size()),
              "KV write of positions [{}, {}) past a table of {} blocks", first, first + count, block_table.size());
  const KvLayerView view = this->layer(layer);
  float* open_k = open_keys(layer, slot);
  float* open_v = open_values(layer, slot);
  const int head_dim = geometry_.head_dim;
  const int64_t row = static_cast<int64_t>(geometry_.num_kv_heads) * head_dim;
  for (int64_t t = 0; t < count; ++t) {
    const int64_t position = first + t;
    const int in_block = static_cast<int>(position % block_tokens);
    for (int h = 0; h < geometry_.num_kv_heads; ++h) {
      const size_t to = (static_cast<size_t>(h) * block_tokens + in_block) * head_dim;
      std::memcpy(open_k + to, k + t * row + h * head_dim, sizeof(float) * head_dim);
      std::memcpy(open_v + to, v + t * row + h * head_dim, sizeof(float) * head_dim);
    }
    if (in_block == block_tokens - 1) {  // the block is full: fix its scales and store it
      const BlockId block = block_table[position / block_tokens];
      TETRA_CHECK(block >= 0 && block < num_blocks_, "block {} of {}", block, num_blocks_);
      StoreKvBlock(view, open_k, block, keys(layer), key_scales(layer));
      StoreKvBlock(view, open_v, block, values(layer), value_scales(layer));
    }
  }
}

KvSequenceView KvStorage::View(int layer, std::span<const BlockId> block_table, int slot, int64_t length) const {
  KvSequenceView view;
  view.length = length;
  view.block_table = block_table.data();
  view.open_keys = open_keys(layer, slot);
  view.open_values = open_values(layer, slot);
  return view;
}

void KvStorage::Apply(const KvSlotOp& op) {
  const int block_tokens = options_.block_tokens;
  const int head_dim = geometry_.head_dim;
  TETRA_CHECK(op.num_tokens >= 0 && op.num_tokens < block_tokens, "slot op of {} positions", op.num_tokens);
  for (int layer = 0; layer < geometry_.num_layers; ++layer) {
    const KvLayerView view = this->layer(layer);
    for (int h = 0; h < geometry_.num_kv_heads; ++h) {
      const size_t head_offset = static_cast<size_t>(h) * block_tokens * head_dim;
      float* to_k = open_keys(layer, op.to_slot) + head_offset;
      float* to_v = open_values(layer, op.to_slot) + head_offset;
      if (op.kind == KvSlotOp::Kind::kCopySlot) {
        std::memcpy(to_k, open_keys(layer, op.from_slot) + head_offset, sizeof(float) * op.num_tokens * head_dim);
        std::memcpy(to_v, open_values(layer, op.from_slot) + head_offset, sizeof(float) * op.num_tokens * head_dim);
      } else {
        TETRA_CHECK(op.from_block >= 0 && op.from_block < num_blocks_, "block {} of {}", op.from_block, num_blocks_);
        LoadKvBlockRows(view, view.keys, view.key_scales, op.from_block, h, 0, op.num_tokens, to_k);
        LoadKvBlockRows(view, view.values, view.value_scales, op.from_block, h, 0, op.num_tokens, to_v);
      }
    }
  }
}

std::vector<std::span<uint8_t>> KvStorage::LayerRegions(int layer, std::span<const BlockId> blocks,
                                                        int open_slot) const {
  TETRA_CHECK(layer >= 0 && layer < geometry_.num_layers, "layer {} of {}", layer, geometry_.num_layers);
  const int64_t block_bytes = static_cast<int64_t>(geometry_.num_kv_heads) * options_.block_tokens *
                              geometry_.head_dim * KvDtypeBytes(options_.dtype);
  const size_t scale_bytes = sizeof(float) * geometry_.num_kv_heads;
  const bool has_scales = options_.dtype == KvDtype::kFp8E4M3;
  std::vector<std::span<uint8_t>> regions;
  regions.reserve(blocks.size() * (has_scales ? 4 : 2) + 2);
  for (const BlockId block : blocks) {
    TETRA_CHECK(block >= 0 && block < num_blocks_, "block {} of {}", block, num_blocks_);
    regions.push_back({keys(layer) + block * block_bytes, static_cast<size_t>(block_bytes)});
    regions.push_back({values(layer) + block * block_bytes, static_cast<size_t>(block_bytes)});
    if (has_scales) {
      regions.push_back({reinterpret_cast<uint8_t*>(key_scales(layer) + block * geometry_.num_kv_heads), scale_bytes});
      regions.push_back({reinterpret_cast<uint8_t*>(value_scales(layer) + block * geometry_.num_kv_heads), scale_bytes});
    }
  }
  if (open_slot >= 0) {
    const size_t open_bytes = static_cast<size_t>(open_block_floats()) * sizeof(float);
    regions.push_back({reinterpret_cast<uint8_t*>(open_keys(layer, open_slot)), open_bytes});
    regions.push_back({reinterpret_cast<uint8_t*>(open_values(layer, open_slot)), open_bytes});
  }
  return regions;
}

std::string KvStorage::transfer_format() const {
  return fmt::format("kv {} block {} layers {} kv_heads {} head_dim {}", KvDtypeName(options_.dtype),
                     options_.block_tokens, geometry_.num_layers, geometry_.num_kv_heads, geometry_.head_dim);
}

StatusOr<KvTransferFormat> ParseKvTransferFormat(std::string_view text) {
  KvTransferFormat f;
  char dtype[16] = {};
  int consumed = 0;
  const std::string copy(text);
  if (std::sscanf(copy.c_str(), "kv %15s block %d layers %d kv_heads %d head_dim %d%n", dtype, &f.block_tokens,
                  &f.geometry.num_layers, &f.geometry.num_kv_heads, &f.geometry.head_dim, &consumed) != 5 ||
      consumed != static_cast<int>(copy.size())) {
    return Status::Errorf("'{}' is not a KV transfer format (kv DTYPE block N layers N kv_heads N head_dim N)", text);
  }
  TETRA_ASSIGN_OR_RETURN(f.dtype, ParseKvDtype(dtype));
  return f;
}

Status ConvertKvBlock(const KvTransferFormat& from, std::span<const std::span<uint8_t>> regions,
                      const KvTransferFormat& to, std::vector<uint8_t>* out) {
  const KvGeometry& g = from.geometry;
  if (from.block_tokens != to.block_tokens || g.num_layers != to.geometry.num_layers ||
      g.num_kv_heads != to.geometry.num_kv_heads || g.head_dim != to.geometry.head_dim) {
    return Status::Error("KV formats differ in more than the dtype: no conversion");
  }
  auto view_of = [&](KvDtype dtype) {
    KvLayerView v;
    v.dtype = dtype;
    v.block_tokens = from.block_tokens;
    v.num_kv_heads = g.num_kv_heads;
    v.head_dim = g.head_dim;
    return v;
  };
  const KvLayerView src = view_of(from.dtype), dst = view_of(to.dtype);
  const size_t elements = static_cast<size_t>(src.block_elements());
  const size_t src_bytes = elements * KvDtypeBytes(from.dtype);
  const size_t scale_bytes = sizeof(float) * g.num_kv_heads;
  const bool src_scales = from.dtype == KvDtype::kFp8E4M3, dst_scales = to.dtype == KvDtype::kFp8E4M3;
  if (regions.size() != (src_scales ? 4u : 2u) || regions[0].size() != src_bytes || regions[1].size() != src_bytes ||
      (src_scales && (regions[2].size() != scale_bytes || regions[3].size() != scale_bytes))) {
    return Status::Error("KV block regions do not match their format");
  }
  const size_t dst_bytes = elements * KvDtypeBytes(to.dtype);
  const size_t start = out->size();
  out->resize(start + 2 * dst_bytes + (dst_scales ? 2 * scale_bytes : 0));
  uint8_t* dst_keys = out->data() + start;
  uint8_t* dst_key_scales = dst_keys + 2 * dst_bytes;  // then the value scales
  std::vector<float> f32(elements);
  std::vector<float> scales(g.num_kv_heads);
  for (int kv = 0; kv < 2; ++kv) {  // keys, then values
    std::vector<float> src_scale(g.num_kv_heads, 1.0f);
    if (src_scales) std::memcpy(src_scale.data(), regions[2 + kv].data(), scale_bytes);
    const int64_t row = static_cast<int64_t>(from.block_tokens) * g.head_dim;
    for (int h = 0; h < g.num_kv_heads; ++h) {
      LoadKvBlockRows(src, regions[kv].data(), src_scale.data(), 0, h, 0, from.block_tokens, &f32[h * row]);
    }
    StoreKvBlock(dst, f32.data(), 0, dst_keys + kv * dst_bytes, scales.data());
    if (dst_scales) std::memcpy(dst_key_scales + kv * scale_bytes, scales.data(), scale_bytes);
  }
  return Status::Ok();
}

}  // namespace tetra
