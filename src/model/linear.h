// A linear layer bound for the forward pass. The reference format keeps a
// view of the stored weights and computes in f32 (dequantizing rows per
// call); W4A8 repacks the weights at load time into 4-bit groups and runs
// the integer kernels with activations quantized to int8 per token.
// Immutable after Bind and shared by every runner; scratch is the caller's.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kernels/w4a8/packed_w4.h"
#include "kernels/w4a8/quantize_activations.h"
#include "kernels/w4a8/w6a8.h"
#include "kernels/w4a8/w8a8.h"
#include "tensor/matrix_view.h"

namespace tetra {

enum class WeightFormat {
  kReference,  // f32 compute on the stored weights: the truth
  kW4A8,       // 4-bit weights x int8 activations
};

// "reference" / "w4a8"; nullopt for anything else.
std::optional<WeightFormat> ParseWeightFormat(std::string_view name);
std::string_view WeightFormatName(WeightFormat format);

// Activations prepared once for any number of ApplyRows calls on layers of
// the same input width: quantized to int8 for packed layers, kept as f32
// otherwise. Buffers are reused from call to call.
struct LinearInput {
  const float* x = nullptr;  // [n, cols]
  int64_t n = 0;
  bool is_quantized = false;
  QuantizedActivations quantized;
};

class Linear {
 public:
  Linear() = default;
  // W4A8 falls back to the reference path for matrices whose rows are not
  // whole 32-value groups (logged once per matrix at debug level).
  // `eight_bit` keeps the stored precision up to 8 bits in W4A8, for layers
  // where 4 bits cost too much accuracy (the output head, attention): Q6_K
  // runs as W6A8 (AVX2 or AVX-512 VNNI), other types as W8A8 (AVX-512
  // VNNI); elsewhere as two 4-bit planes on the W4A8 kernels.
  // With a pool, packing runs in parallel on it.
  static StatusOr<Linear> Bind(const MatrixView& weights, WeightFormat format, const std::string& name,
                               bool eight_bit = false, ThreadPool* pool = nullptr);

  // x: [n, cols] -> y: [n, rows] (row stride rows); `input` holds the
  // prepared activations (the caller's scratch, reused from call to call).
  void Apply(const float* x, int64_t n, float* y, LinearInput* input, ThreadPool& pool) const;

  // Prepares x for this layer (and any layer of the same width and format).
  void Prepare(const float* x, int64_t n, LinearInput* input) const;
  // The same, its rows quantized in parallel on `pool`.
  void Prepare(const float* x, int64_t n, LinearInput* input, ThreadPool& pool) const;
  // `out` becomes rows [first, first + count) of `all`, prepared for this
  // layer (a view into it: no copy, no allocation).
  void Slice(const LinearInput& all, int64_t first, int64_t count, LinearInput* out) const;
  // y[t * y_stride + r] for r in [row_begin, row_end), on the calling thread.
  void ApplyRows(const LinearInput& input, int64_t row_begin, int64_t row_end, float* y,
                 int64_t y_stride) const;

  int64_t rows() const { return view_.rows; }
  int64_t cols() const { return view_.cols; }
  bool empty() const { return view_.empty(); }
  bool is_packed() const { return packed_ != nullptr || packed8_ != nullptr || packed6_ != nullptr; }
  // The activation group size the packed kernels take (packed layers only).
  int ActivationGroupSize() const {
    return packed8_ != nullptr ? PackedW8::kGroupSize : packed6_ != nullptr ? PackedW6::kGroupSize : packed_->group_size;
  }

 private:
  MatrixView view_;
  std::shared_ptr<const PackedW4> packed_;      // null on the reference path
  std::shared_ptr<const PackedW4> packed_low_;  // low nibbles of 8-bit weights, or null
  std::shared_ptr<const PackedW8> packed8_;     // 8-bit weights on W8A8, or null
  std::shared_ptr<const PackedW6> packed6_;     // Q6_K weights on W6A8, or null
};

// Several layers that read the same input (q, k and v; gate and up): the
// input is prepared once and all their rows run in one parallel loop.
struct LinearTarget {
  const Linear* layer;
  float* y;          // [n, y_stride]
  int64_t y_stride;  // >= layer->rows()
};
// All targets must have the same input width and format (checked).
void ApplyShared(std::span<const LinearTarget> targets, const float* x, int64_t n, LinearInput* input,
                 ThreadPool& pool);

}  // namespace tetra
