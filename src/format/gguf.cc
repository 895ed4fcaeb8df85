#include "format/gguf.h"

#include <fmt/format.h>

#include <limits>
#include <unordered_set>
#include <utility>

#include "format/byte_reader.h"

namespace tetra {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian uint32

// The fewest bytes one value of the type can occupy in the file; used to
// reject counts that the remaining bytes could not possibly hold before any
// allocation happens.
uint64_t MinEncodedBytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
    case GgufValueType::kString:  // the uint64 length
      return 8;
    case GgufValueType::kArray:  // element type + uint64 count
      return 12;
  }
  return 1;
}

bool IsKnownValueType(uint32_t id) { return id <= static_cast<uint32_t>(GgufValueType::kFloat64); }

// Parses one GGUF file; holds the cursor and the name used in messages.
class GgufParser {
 public:
  GgufParser(const uint8_t* data, size_t size, const std::string& display_name)
      : data_(data), reader_(data, size), display_name_(display_name) {}

  StatusOr<ParsedGguf> Parse();

 private:
  template <typename... Args>
  Status Error(fmt::format_string<Args...> format, Args&&... args) const {
    return Status::Error(display_name_ + ": " + fmt::format(format, std::forward<Args>(args)...));
  }
  Status Truncated(const std::string& what) const {
    return Error("truncated: file ends at byte {} while reading {}", reader_.size(), what);
  }

  Status ReadString(const std::string& what, std::string* out);
  // Reads one value of `type` into *out. depth counts enclosing arrays.
  Status ReadValue(GgufValueType type, const std::string& key, int depth,
                   nlohmann::ordered_json* out);
  Status ReadArray(const std::string& key, int depth, nlohmann::ordered_json* out,
                   GgufValueType* element_type);
  Status ReadTensorInfo(size_t index, WeightTensor* tensor, uint64_t* offset);

  const uint8_t* data_;
  ByteReader reader_;
  const std::string& display_name_;
};

Status GgufParser::ReadString(const std::string& what, std::string* out) {
  uint64_t length = 0;
  if (!reader_.Read(&length)) return Truncated("the length of " + what);
  if (length > reader_.remaining()) {
    return Error("{}: string length {} exceeds the {} bytes left in the file", what, length,
                 reader_.remaining());
  }
  reader_.ReadBytes(length, out);
  return Status::Ok();
}

Status GgufParser::ReadValue(GgufValueType type, const std::string& key, int depth,
                             nlohmann::ordered_json* out) {
  bool ok = true;
  switch (type) {
    case GgufValueType::kUint8: {
      uint8_t v = 0;
      ok = reader_.Read(&v);
      *out = static_cast<uint64_t>(v);
      break;
    }
    case GgufValueType::kInt8: {
      int8_t v = 0;
      ok = reader_.Read(&v);
      *out = static_cast<int64_t>(v);
      break;
    }
    case GgufValueType::kUint16: {
      uint16_t v = 0;
      ok = reader_.Read(&v);
      *out = static_cast<uint64_t>(v);
      break;
    }
    case GgufValueType::kInt16: {
      int16_t v = 0;
      ok = reader_.Read(&v);
      *out = static_cast<int64_t>(v);
      break;
    }
    case GgufValueType::kUint32: {
      uint32_t v = 0;
      ok = reader_.Read(&v);
      *out = static_cast<uint64_t>(v);
      break;
    }
    case GgufValueType::kInt32: {
      int32_t v = 0;
      ok = reader_.Read(&v);
      *out = static_cast<int64_t>(v);
      break;
    }
    case GgufValueType::kUint64: {
      uint64_t v = 0;
      ok = reader_.Read(&v);
      *out = v;
      break;
    }
    case GgufValueType::kInt64: {
      int64_t v = 0;
      ok = reader_.Read(&v);
      *out = v;
      break;
    }
    case GgufValueType::kFloat32: {
      float v = 0;
      ok = reader_.Read(&v);
      *out = static_cast<double>(v);
      break;
    }
    case GgufValueType::kFloat64: {
      double v = 0;
      ok = reader_.Read(&v);
      *out = v;
      break;
    }
    case GgufValueType::kBool: {
      uint8_t v = 0;
      ok = reader_.Read(&v);
      *out = v != 0;
      break;
    }
    case GgufValueType::kString: {
      std::string s;
      TETRA_RETURN_IF_ERROR(ReadString(fmt::format("metadata key '{}'", key), &s));
      *out = std::move(s);
      break;
    }
    case GgufValueType::kArray: {
      GgufValueType element_type;
      return ReadArray(key, depth + 1, out, &element_type);
    }
  }
  if (!ok) return Truncated(fmt::format("the value of metadata key '{}'", key));
  return Status::Ok();
}

Status GgufParser::ReadArray(const std::string& key, int depth, nlohmann::ordered_json* out,
                             GgufValueType* element_type) {
  if (depth > kGgufMaxArrayDepth) {
    return Error("metadata key '{}': arrays nested deeper than {} levels", key, kGgufMaxArrayDepth);
  }
  uint32_t type_id = 0;
  uint64_t count = 0;
  if (!reader_.Read(&type_id)) return Truncated(fmt::format("the array type of metadata key '{}'", key));
  if (!IsKnownValueType(type_id)) {
    return Error("metadata key '{}': unknown array element type {}", key, type_id);
  }
  if (!reader_.Read(&count)) return Truncated(fmt::format("the array length of metadata key '{}'", key));
  *element_type = static_cast<GgufValueType>(type_id);
  const uint64_t min_bytes = MinEncodedBytes(*element_type);
  if (count > reader_.remaining() / min_bytes) {
    return Error("metadata key '{}': array length {} of {} cannot fit in the {} bytes left in the file",
                 key, count, GgufValueTypeName(*element_type), reader_.remaining());
  }
  *out = nlohmann::ordered_json::array();
  nlohmann::ordered_json::array_t& elements = out->get_ref<nlohmann::ordered_json::array_t&>();
  elements.reserve(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) {
    elements.emplace_back();
    if (*element_type == GgufValueType::kArray) {
      GgufValueType inner_type;
      TETRA_RETURN_IF_ERROR(ReadArray(key, depth + 1, &elements.back(), &inner_type));
    } else {
      TETRA_RETURN_IF_ERROR(ReadValue(*element_type, key, depth, &elements.back()));
    }
  }
  return Status::Ok();
}

Status GgufParser::ReadTensorInfo(size_t index, WeightTensor* tensor, uint64_t* offset) {
  TETRA_RETURN_IF_ERROR(ReadString(fmt::format("the name of tensor #{}", index), &tensor->name));
  const std::string& name = tensor->name;
  uint32_t num_dims = 0;
  if (!reader_.Read(&num_dims)) return Truncated(fmt::format("tensor '{}'", name));
  if (num_dims == 0 || num_dims > kGgufMaxDims) {
    return Error("tensor '{}': {} dimensions (must be 1..{})", name, num_dims, kGgufMaxDims);
  }
  uint64_t ne[kGgufMaxDims] = {};
  uint64_t num_elements = 1;
  for (uint32_t d = 0; d < num_dims; ++d) {
    if (!reader_.Read(&ne[d])) return Truncated(fmt::format("the shape of tensor '{}'", name));
    if (ne[d] == 0 || ne[d] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Error("tensor '{}': dimension {} has invalid size {}", name, d, static_cast<int64_t>(ne[d]));
    }
    if (num_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ne[d]) {
      return Error("tensor '{}': element count overflows", name);
    }
    num_elements *= ne[d];
  }
  uint32_t type_id = 0;
  if (!reader_.Read(&type_id)) return Truncated(fmt::format("the type of tensor '{}'", name));
  std::optional<DType> dtype = DTypeFromGgufId(type_id);
  if (!dtype) return Error("tensor '{}': unknown or unsupported tensor type id {}", name, type_id);
  if (!reader_.Read(offset)) return Truncated(fmt::format("the offset of tensor '{}'", name));

  const DTypeTraits& traits = GetDTypeTraits(*dtype);
  if (ne[0] % static_cast<uint64_t>(traits.block_size) != 0) {
    return Error("tensor '{}': row length {} is not a multiple of the {} block size {}", name, ne[0],
                 traits.name, traits.block_size);
  }
  const uint64_t num_blocks = num_elements / static_cast<uint64_t>(traits.block_size);
  if (num_blocks > std::numeric_limits<uint64_t>::max() / traits.block_bytes) {
    return Error("tensor '{}': byte size overflows", name);
  }
  tensor->dtype = *dtype;
  tensor->num_bytes = static_cast<size_t>(num_blocks * traits.block_bytes);
  tensor->shape.clear();
  for (int d = static_cast<int>(num_dims) - 1; d >= 0; --d) tensor->shape.push_back(static_cast<int64_t>(ne[d]));
  return Status::Ok();
}

StatusOr<ParsedGguf> GgufParser::Parse() {
  ParsedGguf parsed;
  uint32_t magic = 0;
  if (!reader_.Read(&magic)) return Truncated("the magic");
  if (magic != kGgufMagic) return Error("not a GGUF file (bad magic 0x{:08x})", magic);
  if (!reader_.Read(&parsed.version)) return Truncated("the version");
  if (parsed.version == 0x02000000 || parsed.version == 0x03000000) {
    return Error("big-endian GGUF files are not supported");
  }
  if (parsed.version != 2 && parsed.version != 3) {
    return Error("unsupported GGUF version {} (supported: 2, 3)", parsed.version);
  }
  uint64_t num_tensors = 0;
  uint64_t num_kv = 0;
  if (!reader_.Read(&num_tensors)) return Truncated("the tensor count");
  if (!reader_.Read(&num_kv)) return Truncated("the metadata count");
  // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor
  // info at least 8 (name length) + 4 (dims) + 8 (ne[0]) + 4 (type) + 8 (offset).
  if (num_kv > reader_.remaining() / 13) {
    return Error("metadata count {} cannot fit in the {} bytes left in the file", num_kv, reader_.remaining());
  }
  if (num_tensors > reader_.remaining() / 32) {
    return Error("tensor count {} cannot fit in the {} bytes left in the file", num_tensors,
                 reader_.remaining());
  }

  using ObjectEntries = std::vector<std::pair<const std::string, nlohmann::ordered_json>>;
  ObjectEntries& metadata_entries =
      static_cast<ObjectEntries&>(parsed.metadata.get_ref<nlohmann::ordered_json::object_t&>());
  metadata_entries.reserve(static_cast<size_t>(num_kv));
  for (uint64_t i = 0; i < num_kv; ++i) {
    std::string key;
    TETRA_RETURN_IF_ERROR(ReadString(fmt::format("metadata key #{}", i), &key));
    uint32_t type_id = 0;
    if (!reader_.Read(&type_id)) return Truncated(fmt::format("the type of metadata key '{}'", key));
    if (!IsKnownValueType(type_id)) return Error("metadata key '{}': unknown value type {}", key, type_id);
    // The unordered map finds duplicates in O(1); ordered_json lookups are linear.
    if (parsed.metadata_types.count(key) != 0) return Error("duplicate metadata key '{}'", key);
    GgufKeyType key_type;
    key_type.type = static_cast<GgufValueType>(type_id);
    nlohmann::ordered_json value;
    if (key_type.type == GgufValueType::kArray) {
      TETRA_RETURN_IF_ERROR(ReadArray(key, 1, &value, &key_type.array_element_type));
    } else {
      TETRA_RETURN_IF_ERROR(ReadValue(key_type.type, key, 0, &value));
    }
    parsed.metadata_types.emplace(key, key_type);
    // Appends without ordered_map::emplace's linear search for the key.
    metadata_entries.emplace_back(std::move(key), std::move(value));
  }

  auto alignment_it = parsed.metadata.find("general.alignment");
  if (alignment_it != parsed.metadata.end()) {
    if (!alignment_it->is_number_integer()) {
      return Error("general.alignment must be an integer, got {}", alignment_it->type_name());
    }
    const int64_t alignment = alignment_it->get<int64_t>();
    if (alignment <= 0 || static_cast<uint64_t>(alignment) > kGgufMaxAlignment ||
        (alignment & (alignment - 1)) != 0) {
      return Error("general.alignment {} is not a power of two in [1, 2^30]", alignment);
    }
    parsed.alignment = static_cast<uint64_t>(alignment);
  }

  std::vector<uint64_t> offsets;
  offsets.reserve(static_cast<size_t>(num_tensors));
  parsed.tensors.reserve(static_cast<size_t>(num_tensors));
  std::unordered_set<std::string> names;
  for (uint64_t i = 0; i < num_tensors; ++i) {
    WeightTensor tensor;
    uint64_t offset = 0;
    TETRA_RETURN_IF_ERROR(ReadTensorInfo(static_cast<size_t>(i), &tensor, &offset));
    if (!names.insert(tensor.name).second) return Error("duplicate tensor name '{}'", tensor.name);
    parsed.tensors.push_back(std::move(tensor));
    offsets.push_back(offset);
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t header_end = reader_.position();
  parsed.data_offset = (header_end + parsed.alignment - 1) / parsed.alignment * parsed.alignment;
  const uint64_t file_size = reader_.size();
  for (size_t i = 0; i < parsed.tensors.size(); ++i) {
    WeightTensor& tensor = parsed.tensors[i];
    const uint64_t offset = offsets[i];
    if (offset % parsed.alignment != 0) {
      return Error("tensor '{}': data offset {} is not a multiple of the alignment {}", tensor.name,
                   offset, parsed.alignment);
    }
    // 128-bit arithmetic: offset and size come from the file and may be huge.
    const unsigned __int128 begin = static_cast<unsigned __int128>(parsed.data_offset) + offset;
    const unsigned __int128 end = begin + tensor.num_bytes;
    if (end > file_size) {
      const std::string end_text = end > std::numeric_limits<uint64_t>::max()
                                       ? std::string("beyond 2^64")
                                       : fmt::format("{}", static_cast<uint64_t>(end));
      return Error("tensor '{}' ends at byte {} past file size {}", tensor.name, end_text, file_size);
    }
    tensor.data = data_ + static_cast<size_t>(begin);
  }
  return parsed;
}

}  // namespace

bool HasGgufMagic(const uint8_t* data, size_t size) {
  return size >= 4 && data[0] == 'G' && data[1] == 'G' && data[2] == 'U' && data[3] == 'F';
}

StatusOr<ParsedGguf> ParseGguf(const uint8_t* data, size_t size, const std::string& display_name) {
  if (data == nullptr) size = 0;
  static const uint8_t kEmpty = 0;
  GgufParser parser(data != nullptr ? data : &kEmpty, size, display_name);
  return parser.Parse();
}

const char* GgufValueTypeName(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8: return "uint8";
    case GgufValueType::kInt8: return "int8";
    case GgufValueType::kUint16: return "uint16";
    case GgufValueType::kInt16: return "int16";
    case GgufValueType::kUint32: return "uint32";
    case GgufValueType::kInt32: return "int32";
    case GgufValueType::kFloat32: return "float32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kUint64: return "uint64";
    case GgufValueType::kInt64: return "int64";
    case GgufValueType::kFloat64: return "float64";
  }
  return "unknown";
}

}  // namespace tetra
