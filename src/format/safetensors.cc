#include "format/safetensors.h"

#include <fmt/format.h>

#include <cstring>
#include <limits>
#include <optional>
#include <string_view>

namespace tetra {

namespace {

std::optional<DType> DTypeFromSafetensorsName(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  if (name == "F64") return DType::kF64;
  if (name == "I8") return DType::kI8;
  if (name == "I16") return DType::kI16;
  if (name == "I32") return DType::kI32;
  if (name == "I64") return DType::kI64;
  return std::nullopt;
}

// Reads a non-negative integer that fits in int64 from a JSON value.
std::optional<uint64_t> AsCount(const nlohmann::json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer()) {
    const int64_t v = value.get<int64_t>();
    if (v >= 0) return static_cast<uint64_t>(v);
  }
  return std::nullopt;
}

}  // namespace

StatusOr<ParsedSafetensors> ParseSafetensors(const uint8_t* data, size_t size,
                                             const std::string& display_name) {
  auto error = [&display_name](const std::string& message) {
    return Status::Error(display_name + ": " + message);
  };
  if (data == nullptr || size < 8) {
    return error(fmt::format("too small for a safetensors file ({} bytes)", data == nullptr ? 0 : size));
  }
  uint64_t header_length = 0;
  std::memcpy(&header_length, data, 8);
  if (header_length > kSafetensorsMaxHeaderBytes) {
    return error(fmt::format("header length {} exceeds the limit of {} bytes", header_length,
                             kSafetensorsMaxHeaderBytes));
  }
  if (header_length > size - 8) {
    return error(fmt::format("header length {} exceeds the {} bytes left in the file", header_length,
                             size - 8));
  }
  const char* header_begin = reinterpret_cast<const char*>(data + 8);
  nlohmann::json header =
      nlohmann::json::parse(header_begin, header_begin + header_length, /*cb=*/nullptr,
                            /*allow_exceptions=*/false);
  if (header.is_discarded()) return error("header is not valid JSON");
  if (!header.is_object()) return error("header is not a JSON object");

  ParsedSafetensors parsed;
  parsed.data_offset = 8 + header_length;
  const uint64_t data_size = size - parsed.data_offset;
  const uint8_t* data_section = data + parsed.data_offset;
  parsed.tensors.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {  // nlohmann::json objects iterate in sorted key order
    const std::string& name = it.key();
    nlohmann::json& entry = it.value();
    if (name == "__metadata__") {
      parsed.metadata = std::move(entry);
      continue;
    }
    auto tensor_error = [&](const std::string& message) {
      return error(fmt::format("tensor '{}': {}", name, message));
    };
    if (!entry.is_object()) return tensor_error("entry is not a JSON object");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return tensor_error("missing or non-string 'dtype'");
    if (shape_it == entry.end() || !shape_it->is_array()) return tensor_error("missing or non-array 'shape'");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
      return tensor_error("'data_offsets' must be an array [begin, end]");
    }
    const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
    std::optional<DType> dtype = DTypeFromSafetensorsName(dtype_name);
    if (!dtype) return tensor_error(fmt::format("unsupported dtype {}", dtype_name));
    if (shape_it->size() > kSafetensorsMaxDims) {
      return tensor_error(fmt::format("{} dimensions (at most {})", shape_it->size(), kSafetensorsMaxDims));
    }

    WeightTensor tensor;
    tensor.name = name;
    tensor.dtype = *dtype;
    uint64_t num_elements = 1;
    for (const nlohmann::json& dim_value : *shape_it) {
      std::optional<uint64_t> dim = AsCount(dim_value);
      if (!dim || *dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        // Numbers are printed; anything else only by type (dump() of a deeply
        // nested value would recurse).
        return tensor_error(fmt::format("invalid dimension {}", dim_value.is_number()
                                                                    ? dim_value.dump()
                                                                    : std::string(dim_value.type_name())));
      }
      if (*dim != 0 && num_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / *dim) {
        return tensor_error("element count overflows");
      }
      num_elements *= *dim;
      tensor.shape.push_back(static_cast<int64_t>(*dim));
    }
    const size_t element_bytes = GetDTypeTraits(*dtype).block_bytes;
    if (num_elements > std::numeric_limits<uint64_t>::max() / element_bytes) {
      return tensor_error("byte size overflows");
    }
    const uint64_t expected_bytes = num_elements * element_bytes;

    std::optional<uint64_t> begin = AsCount((*offsets_it)[0]);
    std::optional<uint64_t> end = AsCount((*offsets_it)[1]);
    if (!begin || !end) return tensor_error("data_offsets must be non-negative integers");
    if (*begin > *end) return tensor_error(fmt::format("data_offsets [{}, {}] are reversed", *begin, *end));
    if (*end > data_size) {
      return tensor_error(fmt::format("data ends at offset {} past the {} bytes of the data section (file size {})",
                                      *end, data_size, size));
    }
    if (*end - *begin != expected_bytes) {
      return tensor_error(fmt::format("data_offsets [{}, {}] hold {} bytes but shape x {} needs {}", *begin,
                                      *end, *end - *begin, dtype_name, expected_bytes));
    }
    tensor.data = data_section + *begin;
    tensor.num_bytes = static_cast<size_t>(expected_bytes);
    parsed.tensors.push_back(std::move(tensor));
  }
  return parsed;
}

}  // namespace tetra
