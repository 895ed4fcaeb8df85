// A non-owning view of a stored weight matrix: `rows` rows of `cols` elements
// of `dtype`, row r starting at data + r * row_stride_bytes. Quantized rows
// hold whole blocks (cols is a multiple of the type's block size).
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensor/dtype.h"

namespace tetra {

struct MatrixView {
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const uint8_t* data = nullptr;
  size_t row_stride_bytes = 0;

  // Rows stored back to back (stride RowBytes(dtype, cols)).
  static MatrixView Contiguous(DType dtype, int64_t rows, int64_t cols, const void* data) {
    return {dtype, rows, cols, static_cast<const uint8_t*>(data), RowBytes(dtype, cols)};
  }

  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_stride_bytes; }
  bool empty() const { return data == nullptr; }
};

}  // namespace tetra
