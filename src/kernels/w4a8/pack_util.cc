#include "kernels/w4a8/pack_util.h"

#include <vector>

#include "kernels/reference/dequantize.h"
#include "kernels/reference/quantize.h"

namespace tetra::pack_util {

float RoundToHalf(float x) { return HalfToFloat(FloatToHalf(x)); }

Status CheckWeights(const MatrixView& weights, int group_size, std::string_view packer) {
  const DTypeTraits& traits = GetDTypeTraits(weights.dtype);
  if (!traits.can_dequantize) return Status::Errorf("{}: cannot pack weights of type {}", packer, traits.name);
  if (weights.rows < 0 || weights.cols <= 0) {
    return Status::Errorf("{}: bad shape [{}, {}]", packer, weights.rows, weights.cols);
  }
  if (weights.cols % group_size != 0) {
    return Status::Errorf("{}: {} columns is not a multiple of the group size {}", packer, weights.cols, group_size);
  }
  if (weights.cols % traits.block_size != 0) {
    return Status::Errorf("{}: {} columns is not a multiple of the {} block size {}", packer, weights.cols,
                          traits.name, traits.block_size);
  }
  if (weights.rows > 0 && weights.data == nullptr) return Status::Errorf("{}: weight view has no data", packer);
  const size_t row_bytes = RowBytes(weights.dtype, weights.cols);
  if (weights.rows > 1 && weights.row_stride_bytes < row_bytes) {
    return Status::Errorf("{}: row stride {} bytes is shorter than a {} row of {} bytes", packer,
                          weights.row_stride_bytes, traits.name, row_bytes);
  }
  return Status::Ok();
}

Status ForTileChunks(int64_t num_tiles, ThreadPool* pool,
                     const std::function<Status(int64_t tile_begin, int64_t tile_end)>& pack_tiles) {
  std::vector<Status> chunk_status(static_cast<size_t>(num_tiles));  // indexed by a chunk's first tile
  auto run = [&](int64_t begin, int64_t end) { chunk_status[static_cast<size_t>(begin)] = pack_tiles(begin, end); };
  if (pool != nullptr) {
    pool->ParallelFor(num_tiles, 4, run);
  } else if (num_tiles > 0) {
    run(0, num_tiles);
  }
  for (const Status& status : chunk_status) {
    if (!status.ok()) return status;
  }
  return Status::Ok();
}

}  // namespace tetra::pack_util
