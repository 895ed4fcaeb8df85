// GGUF reader (versions 2 and 3, little-endian). Parses the header, every
// metadata key/value and the tensor infos of a GGUF file held in memory, and
// returns views of the tensor data into that memory (no copies).
//
// ParseGguf never maps files and never trusts the input: every count, length,
// dimension and offset is checked against the bytes that remain before
// anything is allocated, so it is safe to run on hostile bytes (it is the
// target of fuzz/gguf_fuzzer.cc). Every error names the file (display_name)
// and the problem, e.g.
//   "model.gguf: tensor 'blk.3.ffn_up_exps.weight' ends at byte 9123456 past file size 9000000".
// Pure function; any thread.
//
// Metadata representation (nlohmann::ordered_json, keys in file order):
//   uint8/16/32/64 -> number_unsigned, int8/16/32/64 -> number_integer,
//   float32/64 -> number_float, bool -> boolean,
//   string -> string holding the raw bytes (NOT validated as UTF-8: dump it only
//             with error_handler_t::replace),
//   array -> array (arrays of arrays nest, up to kGgufMaxArrayDepth levels).
// The GGUF type of each key is kept in ParsedGguf::metadata_types.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "format/model_files.h"

namespace tetra {

enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// Limits applied to untrusted input.
inline constexpr int kGgufMaxArrayDepth = 8;    // array nested in array ... (top level = 1)
inline constexpr int kGgufMaxDims = 4;
inline constexpr uint64_t kGgufDefaultAlignment = 32;
inline constexpr uint64_t kGgufMaxAlignment = uint64_t{1} << 30;

// The type of a metadata value; for arrays also the type of their elements.
struct GgufKeyType {
  GgufValueType type = GgufValueType::kUint8;
  GgufValueType array_element_type = GgufValueType::kUint8;  // only for kArray
};

struct ParsedGguf {
  uint32_t version = 0;
  nlohmann::ordered_json metadata = nlohmann::ordered_json::object();
  std::unordered_map<std::string, GgufKeyType> metadata_types;
  uint64_t alignment = kGgufDefaultAlignment;  // general.alignment or 32
  uint64_t data_offset = 0;  // start of the tensor data section in the buffer
  // In file order. Shapes outermost first (GGUF ne[] reversed); data points
  // into the buffer given to ParseGguf, which must outlive these views.
  std::vector<WeightTensor> tensors;
};

// True when the buffer starts with the GGUF magic.
bool HasGgufMagic(const uint8_t* data, size_t size);

StatusOr<ParsedGguf> ParseGguf(const uint8_t* data, size_t size, const std::string& display_name);

// "uint32", "array", ... for messages.
const char* GgufValueTypeName(GgufValueType type);

}  // namespace tetra
