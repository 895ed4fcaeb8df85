#include "format/gguf_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <unordered_set>

namespace tetra {
namespace {

constexpr uint32_t kGgufVersion = 3;

uint64_t AlignUp(uint64_t value, uint64_t alignment) { return (value + alignment - 1) / alignment * alignment; }

template <typename T>
void Append(std::string* out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // host is little-endian (x86-64, arm64)
  out->append(bytes, sizeof(T));
}

void AppendString(std::string* out, const std::string& s) {
  Append<uint64_t>(out, s.size());
  out->append(s);
}

// Checks that `value` is an integer in [min, max] and returns it.
template <typename T>
StatusOr<T> IntegerIn(const std::string& key, const nlohmann::ordered_json& value) {
  const char* type_name = std::is_signed_v<T> ? "signed" : "unsigned";
  if (!value.is_number_integer()) {
    return Status::Errorf("key '{}': expected an integer for a {}-bit {} value, got {}", key, sizeof(T) * 8,
                          type_name, value.type_name());
  }
  bool fits;
  if (value.is_number_unsigned()) {
    fits = value.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  } else {
    const int64_t v = value.get<int64_t>();
    fits = v >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
           (v < 0 || static_cast<uint64_t>(v) <= static_cast<uint64_t>(std::numeric_limits<T>::max()));
  }
  if (!fits) {
    return Status::Errorf("key '{}': value {} does not fit a {}-bit {} integer", key, value.dump(), sizeof(T) * 8,
                          type_name);
  }
  return value.is_number_unsigned() ? static_cast<T>(value.get<uint64_t>()) : static_cast<T>(value.get<int64_t>());
}

template <typename T>
Status AppendInteger(const std::string& key, const nlohmann::ordered_json& value, std::string* out) {
  TETRA_ASSIGN_OR_RETURN(T v, IntegerIn<T>(key, value));
  Append<T>(out, v);
  return Status::Ok();
}

// One value of a scalar or string type (arrays are handled by the caller).
Status AppendValue(const std::string& key, GgufValueType type, const nlohmann::ordered_json& value,
                   std::string* out) {
  switch (type) {
    case GgufValueType::kUint8: return AppendInteger<uint8_t>(key, value, out);
    case GgufValueType::kInt8: return AppendInteger<int8_t>(key, value, out);
    case GgufValueType::kUint16: return AppendInteger<uint16_t>(key, value, out);
    case GgufValueType::kInt16: return AppendInteger<int16_t>(key, value, out);
    case GgufValueType::kUint32: return AppendInteger<uint32_t>(key, value, out);
    case GgufValueType::kInt32: return AppendInteger<int32_t>(key, value, out);
    case GgufValueType::kUint64: return AppendInteger<uint64_t>(key, value, out);
    case GgufValueType::kInt64: return AppendInteger<int64_t>(key, value, out);
    case GgufValueType::kFloat32:
    case GgufValueType::kFloat64:
      if (!value.is_number()) return Status::Errorf("key '{}': expected a number, got {}", key, value.type_name());
      if (type == GgufValueType::kFloat32) {
        Append<float>(out, value.get<float>());
      } else {
        Append<double>(out, value.get<double>());
      }
      return Status::Ok();
    case GgufValueType::kBool:
      if (!value.is_boolean()) return Status::Errorf("key '{}': expected a bool, got {}", key, value.type_name());
      Append<uint8_t>(out, value.get<bool>() ? 1 : 0);
      return Status::Ok();
    case GgufValueType::kString:
      if (!value.is_string()) return Status::Errorf("key '{}': expected a string, got {}", key, value.type_name());
      AppendString(out, value.get_ref<const std::string&>());
      return Status::Ok();
    case GgufValueType::kArray:
      return Status::Errorf("key '{}': arrays of arrays are not supported by the GGUF writer", key);
  }
  return Status::Errorf("key '{}': unknown GGUF value type {}", key, static_cast<uint32_t>(type));
}

Status AppendKeyValue(const std::string& key, const GgufKeyType& type, const nlohmann::ordered_json& value,
                      std::string* out) {
  AppendString(out, key);
  Append<uint32_t>(out, static_cast<uint32_t>(type.type));
  if (type.type != GgufValueType::kArray) return AppendValue(key, type.type, value, out);
  if (!value.is_array()) return Status::Errorf("key '{}': expected an array, got {}", key, value.type_name());
  Append<uint32_t>(out, static_cast<uint32_t>(type.array_element_type));
  Append<uint64_t>(out, value.size());
  for (const auto& element : value) {
    TETRA_RETURN_IF_ERROR(AppendValue(key, type.array_element_type, element, out));
  }
  return Status::Ok();
}

StatusOr<uint64_t> AlignmentOf(const GgufMetadata& metadata) {
  if (!metadata.Has("general.alignment")) return kGgufDefaultAlignment;
  const auto& value = metadata.values().at("general.alignment");
  if (metadata.type("general.alignment").type != GgufValueType::kUint32 || !value.is_number_integer()) {
    return Status::Error("key 'general.alignment': expected a uint32");
  }
  const int64_t alignment = value.get<int64_t>();
  if (alignment <= 0 || (alignment & (alignment - 1)) != 0 || static_cast<uint64_t>(alignment) > kGgufMaxAlignment) {
    return Status::Errorf("key 'general.alignment': {} is not a power of two up to {}", alignment,
                          kGgufMaxAlignment);
  }
  return static_cast<uint64_t>(alignment);
}

Status ValidateTensor(const GgufTensorInfo& t) {
  if (t.name.empty()) return Status::Error("a tensor has an empty name");
  if (t.name.size() > kGgufMaxTensorNameBytes) {
    return Status::Errorf("tensor '{}': name is {} bytes, longer than GGUF's {}", t.name, t.name.size(),
                          kGgufMaxTensorNameBytes);
  }
  const DTypeTraits& traits = GetDTypeTraits(t.dtype);
  if (traits.block_bytes == 0) {
    return Status::Errorf("tensor '{}': unknown type id {}", t.name, static_cast<uint32_t>(t.dtype));
  }
  if (t.shape.empty() || t.shape.size() > static_cast<size_t>(kGgufMaxDims)) {
    return Status::Errorf("tensor '{}': {} dimensions, GGUF allows 1 to {}", t.name, t.shape.size(), kGgufMaxDims);
  }
  int64_t elements = 1;
  for (int64_t d : t.shape) {
    if (d <= 0) return Status::Errorf("tensor '{}': dimension {} is not positive", t.name, d);
    if (elements > std::numeric_limits<int64_t>::max() / d) return Status::Errorf("tensor '{}': too large", t.name);
    elements *= d;
  }
  if (t.shape.back() % traits.block_size != 0) {
    return Status::Errorf("tensor '{}': row length {} is not a multiple of {}'s block size {}", t.name,
                          t.shape.back(), traits.name, traits.block_size);
  }
  return Status::Ok();
}

}  // namespace

GgufMetadata GgufMetadata::FromParsed(const nlohmann::ordered_json& values,
                                      const std::unordered_map<std::string, GgufKeyType>& types) {
  GgufMetadata metadata;
  for (auto it = values.begin(); it != values.end(); ++it) {
    auto type = types.find(it.key());
    // ParseGguf records a type for every key; a key without one is skipped.
    if (type != types.end()) metadata.Set(it.key(), type->second, it.value());
  }
  return metadata;
}

void GgufMetadata::Set(const std::string& key, GgufKeyType type, nlohmann::ordered_json value) {
  values_[key] = std::move(value);  // ordered_json keeps the old position of an existing key
  types_[key] = type;
}
void GgufMetadata::SetString(const std::string& key, const std::string& value) {
  Set(key, {GgufValueType::kString}, value);
}
void GgufMetadata::SetUint32(const std::string& key, uint32_t value) { Set(key, {GgufValueType::kUint32}, value); }
void GgufMetadata::SetInt32(const std::string& key, int32_t value) { Set(key, {GgufValueType::kInt32}, value); }
void GgufMetadata::SetFloat32(const std::string& key, float value) { Set(key, {GgufValueType::kFloat32}, value); }
void GgufMetadata::SetBool(const std::string& key, bool value) { Set(key, {GgufValueType::kBool}, value); }
void GgufMetadata::SetArray(const std::string& key, GgufValueType element_type, nlohmann::ordered_json values) {
  Set(key, {GgufValueType::kArray, element_type}, std::move(values));
}
void GgufMetadata::Erase(const std::string& key) {
  values_.erase(key);
  types_.erase(key);
}

size_t GgufTensorInfo::num_bytes() const {
  if (shape.empty()) return 0;
  size_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= static_cast<size_t>(shape[i]);
  return rows * RowBytes(dtype, shape.back());
}

StatusOr<std::unique_ptr<GgufWriter>> GgufWriter::Create(const std::string& path, const GgufMetadata& metadata,
                                                         std::vector<GgufTensorInfo> tensors) {
  auto prefixed = [&](const Status& s) { return s.WithPrefix(path + ": "); };
  uint64_t alignment = 0;
  {
    auto a = AlignmentOf(metadata);
    if (!a.ok()) return prefixed(a.status());
    alignment = *a;
  }
  // Everything before the tensor data, built in memory (metadata and infos are small).
  std::string head;
  Append<uint32_t>(&head, 0x46554747);  // "GGUF"
  Append<uint32_t>(&head, kGgufVersion);
  Append<uint64_t>(&head, tensors.size());
  Append<uint64_t>(&head, metadata.values().size());
  for (auto it = metadata.values().begin(); it != metadata.values().end(); ++it) {
    Status s = AppendKeyValue(it.key(), metadata.type(it.key()), it.value(), &head);
    if (!s.ok()) return prefixed(s);
  }
  std::unordered_set<std::string> names;
  uint64_t offset = 0;
  for (const GgufTensorInfo& t : tensors) {
    if (Status s = ValidateTensor(t); !s.ok()) return prefixed(s);
    if (!names.insert(t.name).second) return Status::Errorf("{}: tensor '{}' appears twice", path, t.name);
    AppendString(&head, t.name);
    Append<uint32_t>(&head, static_cast<uint32_t>(t.shape.size()));
    for (size_t i = t.shape.size(); i-- > 0;) Append<uint64_t>(&head, static_cast<uint64_t>(t.shape[i]));
    Append<uint32_t>(&head, static_cast<uint32_t>(t.dtype));
    Append<uint64_t>(&head, offset);
    offset += AlignUp(t.num_bytes(), alignment);
  }
  head.resize(AlignUp(head.size(), alignment), '\0');

  if (std::error_code ec; std::filesystem::is_directory(path, ec)) {
    return Status::Errorf("{}: is a directory", path);
  }
  std::unique_ptr<GgufWriter> writer(new GgufWriter());
  writer->path_ = path;
  writer->temp_path_ = fmt::format("{}.tmp-{}", path, getpid());
  writer->alignment_ = alignment;
  writer->tensors_ = std::move(tensors);
  const int fd = open(writer->temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Status::Errorf("{}: cannot create temporary file '{}': {}", path, writer->temp_path_,
                          std::strerror(errno));
  }
  writer->file_ = fdopen(fd, "wb");
  if (writer->file_ == nullptr) {
    close(fd);
    unlink(writer->temp_path_.c_str());
    return Status::Errorf("{}: cannot open temporary file: {}", path, std::strerror(errno));
  }
  std::setvbuf(writer->file_, nullptr, _IOFBF, size_t{1} << 22);
  TETRA_RETURN_IF_ERROR(writer->WriteRaw(head.data(), head.size()));
  TETRA_RETURN_IF_ERROR(writer->Write(nullptr, 0));  // steps past leading empty tensors (none today)
  return writer;
}

GgufWriter::~GgufWriter() {
  if (file_ != nullptr) std::fclose(file_);
  if (!is_committed_ && !temp_path_.empty()) unlink(temp_path_.c_str());
}

Status GgufWriter::Fail(Status status) {
  if (file_ != nullptr) std::fclose(file_);
  file_ = nullptr;
  if (!temp_path_.empty()) unlink(temp_path_.c_str());
  temp_path_.clear();
  return status;
}

Status GgufWriter::WriteRaw(const void* data, size_t size) {
  if (file_ == nullptr) return Status::Errorf("{}: write after a failed or finished write", path_);
  if (size > 0 && std::fwrite(data, 1, size, file_) != size) {
    return Fail(Status::Errorf("{}: write failed: {}", path_, std::strerror(errno)));
  }
  return Status::Ok();
}

Status GgufWriter::WritePadding(uint64_t position) {
  static const char kZeros[256] = {};
  uint64_t padding = AlignUp(position, alignment_) - position;
  while (padding > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(padding, sizeof(kZeros)));
    TETRA_RETURN_IF_ERROR(WriteRaw(kZeros, n));
    padding -= n;
  }
  return Status::Ok();
}

Status GgufWriter::Write(const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  while (true) {
    // Close every tensor that is complete (pads it) before taking more bytes.
    while (current_tensor_ < tensors_.size() && current_tensor_done_ == tensors_[current_tensor_].num_bytes()) {
      TETRA_RETURN_IF_ERROR(WritePadding(current_tensor_done_));
      data_written_ += AlignUp(current_tensor_done_, alignment_);
      ++current_tensor_;
      current_tensor_done_ = 0;
    }
    if (size == 0) return Status::Ok();
    if (current_tensor_ >= tensors_.size()) {
      return Fail(Status::Errorf("{}: {} bytes of tensor data beyond the last tensor", path_, size));
    }
    const size_t n = std::min(size, tensors_[current_tensor_].num_bytes() - current_tensor_done_);
    TETRA_RETURN_IF_ERROR(WriteRaw(bytes, n));
    bytes += n;
    size -= n;
    current_tensor_done_ += n;
  }
}

Status GgufWriter::Commit() {
  if (file_ == nullptr) return Status::Errorf("{}: commit after a failed or finished write", path_);
  if (current_tensor_ < tensors_.size()) {
    const GgufTensorInfo& t = tensors_[current_tensor_];
    return Fail(Status::Errorf("{}: tensor '{}' got {} of its {} bytes", path_, t.name, current_tensor_done_,
                               t.num_bytes()));
  }
  if (std::fflush(file_) != 0 || fsync(fileno(file_)) != 0) {
    return Fail(Status::Errorf("{}: write failed: {}", path_, std::strerror(errno)));
  }
  const int closed = std::fclose(file_);
  file_ = nullptr;
  if (closed != 0) return Fail(Status::Errorf("{}: write failed: {}", path_, std::strerror(errno)));
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    return Fail(Status::Errorf("{}: cannot rename '{}' onto it: {}", path_, temp_path_, std::strerror(errno)));
  }
  is_committed_ = true;
  return Status::Ok();
}

}  // namespace tetra
