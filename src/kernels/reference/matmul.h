// y = x · Wᵀ for a stored weight matrix W of any dequantizable type, in f32.
// The reference path: rows of W are dequantized once per call and applied to
// every token. Parallel over output rows on the given pool; no allocation
// besides a per-call scratch for dequantized rows.
#pragma once

#include <cstdint>

#include "base/thread_pool.h"
#include "tensor/matrix_view.h"

namespace tetra {

// Dot product of two f32 vectors (dispatched to AVX-512 / AVX2 / portable).
float DotF32(const float* a, const float* b, int64_t n);

// x: [num_tokens, w.cols], y: [num_tokens, w.rows] (row stride y_stride,
// default w.rows). Overwrites y.
void MatMul(const MatrixView& w, const float* x, int64_t num_tokens, float* y, ThreadPool& pool,
            int64_t y_stride = -1);

// Rows [row_begin, row_end) of y only, on the calling thread (callers split
// work themselves, e.g. into (expert, row tile) items).
void MatMulRows(const MatrixView& w, const float* x, int64_t num_tokens, float* y, int64_t y_stride,
                int64_t row_begin, int64_t row_end);

// Copies row r of w, dequantized, into out[w.cols].
void DequantizeMatrixRow(const MatrixView& w, int64_t r, float* out);

}  // namespace tetra
