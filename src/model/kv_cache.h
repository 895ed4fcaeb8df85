// The paged KV cache's storage: every layer's blocks, and per sequence slot
// the open block at f32. Which block belongs to which sequence is decided in
// kvcache/kv_manager.h (ids only); this class holds what the ids name. The
// layout attention reads is kernels/attention/paged_kv.h: full blocks are
// stored FP8 E4M3 with one scale per block per KV head (or BF16 / F32); a
// sequence's last, partly filled block lives in its slot at f32 until it is
// full, when its scales are fixed and it is quantized into the block its
// table names.
//
// Memory: address space for every block and slot is reserved at once and
// committed as it is first written, so an idle cache costs address space only.
// One thread at a time: the runner's (the forward pass writes, and KvSlotOps
// run between steps).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "kernels/attention/paged_kv.h"
#include "kvcache/kv_manager.h"

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

// A KvStorage::transfer_format() read back.
struct KvTransferFormat {
  KvDtype dtype = KvDtype::kFp8E4M3;
  int block_tokens = 0;
  KvGeometry geometry;
};
StatusOr<KvTransferFormat> ParseKvTransferFormat(std::string_view text);

// Converts one full block's LayerRegions (keys, values, FP8 scales) of
// format `from` into the bytes the same block's regions hold in format `to`
// (same geometry and block size, another dtype), back to back: what a
// storage of format `to` would hold had it stored the block's f32 values
// itself (FP8 -> wider is exact; to FP8 quantizes per block and head as
// StoreKvBlock does). Open blocks are f32 in every format: they need none.
// Invalid when the geometries differ or the regions do not match `from`.
Status ConvertKvBlock(const KvTransferFormat& from, std::span<const std::span<uint8_t>> regions,
                      const KvTransferFormat& to, std::vector<uint8_t>* out);

class KvStorage {
 public:
  KvStorage(const KvGeometry& geometry, const KvCacheOptions& options, int num_blocks, int num_slots);
  ~KvStorage();
  KvStorage(const KvStorage&) = delete;
  KvStorage& operator=(const KvStorage&) = delete;

  const KvGeometry& geometry() const { return geometry_; }
  const KvCacheOptions& options() const { return options_; }
  int num_blocks() const { return num_blocks_; }
  int num_slots() const { return num_slots_; }

  KvLayerView layer(int layer) const;

  // Stores layer `layer`'s keys and values of positions [first, first + count)
  // of the sequence with this block table and slot; k and v are
  // [count, num_kv_heads, head_dim]. The table covers every position written.
  void Write(int layer, std::span<const BlockId> block_table, int slot, int64_t first, int64_t count,
             const float* k, const float* v);
  // What attention reads of layer `layer` for a sequence of `length`
  // positions (all written).
  KvSequenceView View(int layer, std::span<const BlockId> block_table, int slot, int64_t length) const;

  // Moves open-block data as the KvManager asked (a fork, a truncation).
  void Apply(const KvSlotOp& op);

  // The bytes of layer `layer` that hold `blocks` (full blocks) and, when
  // open_slot >= 0, that slot's open block, as spans in a fixed order: per
  // block its keys, its values, then (FP8) its key and value scales; then
  // the open block's f32 keys and values. Two storages of the same
  // transfer_format() give spans of the same sizes, so copying one's spans
  // into the other's moves a sequence's KV between processes
  // (transport/kv_transfer.h): the receiving side's sequence then reads the
  // same keys and values, bit for bit. The spans stay valid for the
  // storage's life; no thread may write the blocks while they are copied.
  std::vector<std::span<uint8_t>> LayerRegions(int layer, std::span<const BlockId> blocks, int open_slot) const;
  // What must match for LayerRegions to line up across two storages, e.g.
  // "kv fp8 block 64 layers 30 kv_heads 3 head_dim 64".
  std::string transfer_format() const;

 private:
  uint8_t* keys(int layer) const;
  uint8_t* values(int layer) const;
  float* key_scales(int layer) const;    // [num_blocks, num_kv_heads]
  float* value_scales(int layer) const;
  float* open_keys(int layer, int slot) const;    // [num_kv_heads, block_tokens, head_dim]
  float* open_values(int layer, int slot) const;
  int64_t open_block_floats() const;

  KvGeometry geometry_;
  KvCacheOptions options_;
  int num_blocks_ = 0;
  int num_slots_ = 0;
  int64_t layer_data_bytes_ = 0;   // one layer's keys (or values)
  int64_t layer_scale_count_ = 0;  // one layer's key (or value) scales
  int64_t layer_open_bytes_ = 0;   // one layer's open keys (or values), all slots
  int64_t layer_bytes_ = 0;
  uint8_t* memory_ = nullptr;  // [layers][keys, values, key scales, value scales, open keys, open values]
  size_t memory_bytes_ = 0;
};

}  // namespace tetra
