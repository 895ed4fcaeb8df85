#include "model/linear.h"

#include <algorithm>
#include <vector>

#include "base/check.h"
#include "base/logging.h"
#include "kernels/reference/matmul.h"
#include "kernels/w4a8/gemm.h"
#include "kernels/w4a8/w8a8.h"

namespace tetra {

std::optional<WeightFormat> ParseWeightFormat(std::string_view name) {
  if (name == "reference") return WeightFormat::kReference;
  if (name == "w4a8") return WeightFormat::kW4A8;
  return std::nullopt;
}

std::string_view WeightFormatName(WeightFormat format) {
  return format == WeightFormat::kW4A8 ? "w4a8" : "reference";
}

StatusOr<Linear> Linear::Bind(const MatrixView& weights, WeightFormat format, const std::string& name,
                              bool eight_bit, ThreadPool* pool) {
  Linear linear;
  linear.view_ = weights;
  if (format == WeightFormat::kW4A8) {
    if (weights.cols % PackedW4::kMinGroupSize != 0) {
      TETRA_LOG_DEBUG("{}: {} columns are not whole 32-value groups; kept on the reference path", name,
                      weights.cols);
      return linear;
    }
    if (eight_bit && weights.dtype == DType::kQ6_K && HasFastW6A8()) {
      auto packed = PackW6(weights, pool);
      if (!packed.ok()) return packed.status().WithPrefix(name + ": ");
      linear.packed6_ = std::make_shared<const PackedW6>(std::move(packed).value());
      return linear;
    }
    if (eight_bit && HasFastW8A8()) {
      auto packed = PackW8(weights, pool);
      if (!packed.ok()) return packed.status().WithPrefix(name + ": ");
      linear.packed8_ = std::make_shared<const PackedW8>(std::move(packed).value());
      return linear;
    }
    if (eight_bit) {
      auto planes = PackW8Planes(weights, PackedW4::kMinGroupSize, pool);
      if (!planes.ok()) return planes.status().WithPrefix(name + ": ");
      linear.packed_ = std::make_shared<const PackedW4>(std::move(planes->high));
      linear.packed_low_ = std::make_shared<const PackedW4>(std::move(planes->low));
      return linear;
    }
    auto packed = PackW4(weights, PackedW4::kMinGroupSize, pool);
    if (!packed.ok()) return packed.status().WithPrefix(name + ": ");
    linear.packed_ = std::make_shared<const PackedW4>(std::move(packed).value());
  }
  return linear;
}

void Linear::Apply(const float* x, int64_t n, float* y, LinearInput* input, ThreadPool& pool) const {
  const LinearTarget target[] = {{this, y, rows()}};
  ApplyShared(target, x, n, input, pool);
}

void Linear::Prepare(const float* x, int64_t n, LinearInput* input) const {
  input->x = x;
  input->n = n;
  input->is_quantized = is_packed();
  if (input->is_quantized) {
    QuantizeActivations(x, n, view_.cols, ActivationGroupSize(), &input->quantized);
  }
}

void Linear::Prepare(const float* x, int64_t n, LinearInput* input, ThreadPool& pool) const {
  if (!is_packed() || n < 2) {
    Prepare(x, n, input);
    return;
  }
  input->x = x;
  input->n = n;
  input->is_quantized = true;
  ResizeActivations(n, view_.cols, ActivationGroupSize(), &input->quantized);
  pool.ParallelFor(n, 16, [&](int64_t begin, int64_t end) { QuantizeActivationRows(x, begin, end, &input->quantized); });
}

void Linear::Slice(const LinearInput& all, int64_t first, int64_t count, LinearInput* out) const {
  TETRA_CHECK(0 <= first && 0 <= count && first + count <= all.n, "rows [{}, {}) of {}", first, first + count, all.n);
  out->x = all.x + first * view_.cols;
  out->n = count;
  out->is_quantized = all.is_quantized;
  if (all.is_quantized) SliceActivations(all.quantized, first, count, &out->quantized);
}

void Linear::ApplyRows(const LinearInput& input, int64_t row_begin, int64_t row_end, float* y,
                       int64_t y_stride) const {
  if (packed8_ != nullptr) {
    TETRA_CHECK(input.is_quantized, "input prepared for another format");
    GemmW8A8(*packed8_, input.quantized, y, y_stride, row_begin, row_end);
  } else if (packed6_ != nullptr) {
    TETRA_CHECK(input.is_quantized, "input prepared for another format");
    GemmW6A8(*packed6_, input.quantized, y, y_stride, row_begin, row_end);
  } else if (packed_ != nullptr) {
    TETRA_CHECK(input.is_quantized, "input prepared for another format");
    GemmW4A8(*packed_, input.quantized, y, y_stride, row_begin, row_end);
    if (packed_low_ != nullptr) {
      // y += low plane, through a per-thread scratch of the same layout.
      thread_local std::vector<float> low;
      low.resize(static_cast<size_t>(input.n * y_stride));
      GemmW4A8(*packed_low_, input.quantized, low.data(), y_stride, row_begin, row_end);
      for (int64_t t = 0; t < input.n; ++t) {
        for (int64_t r = row_begin; r < row_end; ++r) y[t * y_stride + r] += low[t * y_stride + r];
      }
    }
  } else {
    MatMulRows(view_, input.x, input.n, y, y_stride, row_begin, row_end);
  }
}

void ApplyShared(std::span<const LinearTarget> targets, const float* x, int64_t n, LinearInput* input,
                 ThreadPool& pool) {
  constexpr int64_t kRowsPerItem = 64;
  const Linear& first = *targets[0].layer;
  for (const LinearTarget& t : targets) {
    TETRA_CHECK(t.layer->cols() == first.cols() && t.layer->is_packed() == first.is_packed(),
                "layers sharing an input differ in width or format");
  }
  first.Prepare(x, n, input);
  int64_t num_items = 0;
  for (const LinearTarget& t : targets) num_items += (t.layer->rows() + kRowsPerItem - 1) / kRowsPerItem;
  pool.ParallelFor(num_items, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      int64_t i = item;
      for (const LinearTarget& t : targets) {
        const int64_t items_here = (t.layer->rows() + kRowsPerItem - 1) / kRowsPerItem;
        if (i < items_here) {
          const int64_t row = i * kRowsPerItem;
          t.layer->ApplyRows(*input, row, std::min(t.layer->rows(), row + kRowsPerItem), t.y, t.y_stride);
          break;
        }
        i -= items_here;
      }
    }
  });
}

}  // namespace tetra
