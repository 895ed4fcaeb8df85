// One sequence's keys and values, contiguous per layer, f32. The reference
// layout; the paged FP8 cache replaces it behind the same calls. Owned by the
// sequence; one thread at a time.
#pragma once

#include <cstdint>
#include <vector>

namespace tetra {

class KvCache {
 public:
  KvCache(int num_layers, int num_kv_heads, int head_dim)
      : row_size_(static_cast<int64_t>(num_kv_heads) * head_dim), keys_(num_layers), values_(num_layers) {}

  int64_t length() const { return length_; }
  int64_t row_size() const { return row_size_; }  // num_kv_heads * head_dim

  // Makes room for positions [length, length + n) in every layer.
  void Reserve(int64_t n) {
    const size_t need = static_cast<size_t>((length_ + n) * row_size_);
    for (auto& k : keys_) k.resize(need);
    for (auto& v : values_) v.resize(need);
  }
  // [capacity, num_kv_heads, head_dim]
  float* keys(int layer) { return keys_[layer].data(); }
  float* values(int layer) { return values_[layer].data(); }
  // Called once all layers hold the n new positions.
  void Advance(int64_t n) { length_ += n; }

 private:
  int64_t row_size_;
  int64_t length_ = 0;
  std::vector<std::vector<float>> keys_;
  std::vector<std::vector<float>> values_;
};

}  // namespace tetra
