#include "kernels/reference/matmul.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/reference/dequantize.h"

namespace tetra {

// Sixteen independent partial sums let the compiler vectorise without
// reassociating a single reduction chain.
__attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
float DotF32(const float* a, const float* b, int64_t n) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  for (int step = kLanes / 2; step > 0; step /= 2) {
    for (int j = 0; j < step; ++j) acc[j] += acc[j + step];
  }
  return acc[0] + tail;
}

void DequantizeMatrixRow(const MatrixView& w, int64_t r, float* out) {
  DequantizeRow(w.dtype, w.row(r), out, w.cols);
}

void MatMulRows(const MatrixView& w, const float* x, int64_t num_tokens, float* y, int64_t y_stride,
                int64_t row_begin, int64_t row_end) {
  constexpr int64_t kRowsPerChunk = 16;
  thread_local std::vector<float> scratch;
  if (w.dtype != DType::kF32) scratch.resize(static_cast<size_t>(kRowsPerChunk * w.cols));
  for (int64_t chunk = row_begin; chunk < row_end; chunk += kRowsPerChunk) {
    const int64_t chunk_end = std::min(row_end, chunk + kRowsPerChunk);
    for (int64_t r = chunk; r < chunk_end; ++r) {
      const float* row;
      if (w.dtype == DType::kF32) {
        row = reinterpret_cast<const float*>(w.row(r));
      } else {
        float* buf = scratch.data() + (r - chunk) * w.cols;
        DequantizeMatrixRow(w, r, buf);
        row = buf;
      }
      for (int64_t t = 0; t < num_tokens; ++t) y[t * y_stride + r] = DotF32(row, x + t * w.cols, w.cols);
    }
  }
}

void MatMul(const MatrixView& w, const float* x, int64_t num_tokens, float* y, ThreadPool& pool,
            int64_t y_stride) {
  if (y_stride < 0) y_stride = w.rows;
  pool.ParallelFor(w.rows, 16, [&](int64_t begin, int64_t end) {
    MatMulRows(w, x, num_tokens, y, y_stride, begin, end);
  });
}

}  // namespace tetra
