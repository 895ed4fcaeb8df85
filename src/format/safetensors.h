// safetensors reader: an 8-byte little-endian header length, a JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {...}}, then the data (offsets relative to its start).
//
// ParseSafetensors never maps files and never trusts the input (it is the
// target of fuzz/safetensors_fuzzer.cc): the header length, every shape and
// every data range are checked against the buffer, and each range must hold
// exactly shape x dtype-size bytes. Errors name the file and the problem:
//   "model-00001-of-00002.safetensors: tensor 'lm_head.weight': unsupported dtype F8_E4M3".
// Supported dtypes: F32, F16, BF16, F64, I8, I16, I32, I64.
// Pure function; any thread.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "format/model_files.h"

namespace tetra {

inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100u << 20;  // as the reference implementation
inline constexpr size_t kSafetensorsMaxDims = 8;

struct ParsedSafetensors {
  nlohmann::json metadata;  // "__metadata__" (null when absent); not interpreted
  uint64_t data_offset = 0;  // 8 + header length
  // Sorted by name. Data points into the buffer given to ParseSafetensors.
  std::vector<WeightTensor> tensors;
};

StatusOr<ParsedSafetensors> ParseSafetensors(const uint8_t* data, size_t size,
                                             const std::string& display_name);

}  // namespace tetra
