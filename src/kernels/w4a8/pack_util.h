// What the weight packers (PackW4 in packed_w4.cc, PackW8 in w8a8.cc) share:
// the checks on the view they read, f16 rounding of group parameters, and
// the tile loop. Stateless; any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

#include "base/status.h"
#include "base/thread_pool.h"
#include "tensor/matrix_view.h"

namespace tetra::pack_util {

// The largest finite f16: group scales and mins must fit it.
inline constexpr float kHalfMax = 65504.0f;

// f32 rounded to the nearest f16 value.
float RoundToHalf(float x);

// Errors, prefixed "<packer>: ", for a view that cannot be packed in groups
// of `group_size`: an undequantizable type, a bad shape, columns not a
// multiple of the group or of the type's block size, no data, a row stride
// shorter than a row.
Status CheckWeights(const MatrixView& weights, int group_size, std::string_view packer);

// Runs pack_tiles over chunks of [0, num_tiles), on the pool when given
// (tiles are independent: every byte and parameter belongs to one row), and
// returns the first error of the lowest chunk that failed.
Status ForTileChunks(int64_t num_tiles, ThreadPool* pool,
                     const std::function<Status(int64_t tile_begin, int64_t tile_end)>& pack_tiles);

}  // namespace tetra::pack_util
