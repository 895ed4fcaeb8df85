// GGUF v3 writer (little-endian), the inverse of gguf.h's ParseGguf, laid out
// byte for byte as the `gguf` Python package's GGUFWriter lays it out:
//   header, key/values in insertion order, tensor infos, zero padding to the
//   alignment, then each tensor's data padded to the alignment.
//
// The layout is fixed when the writer is created (metadata and tensor infos
// are written then); the tensor data is streamed afterwards in declaration
// order, in pieces of any size, so the output is never held in memory.
// The file is written to "<path>.tmp-<pid>" and renamed onto `path` only by
// Commit(), after every byte has arrived and been flushed: a failed or
// abandoned write (destructor without Commit) removes the temporary file and
// leaves nothing at `path`.
// One thread uses one writer. Errors name the output path and the problem.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "format/gguf.h"
#include "tensor/dtype.h"

namespace tetra {

// Metadata in the representation ParseGguf returns (see gguf.h): a JSON value
// per key plus its GGUF type. Keys keep insertion order; Set on an existing
// key replaces its value and type in place.
class GgufMetadata {
 public:
  GgufMetadata() = default;
  // All keys of a parsed file, in file order, with their types.
  static GgufMetadata FromParsed(const nlohmann::ordered_json& values,
                                 const std::unordered_map<std::string, GgufKeyType>& types);

  void Set(const std::string& key, GgufKeyType type, nlohmann::ordered_json value);
  void SetString(const std::string& key, const std::string& value);
  void SetUint32(const std::string& key, uint32_t value);
  void SetInt32(const std::string& key, int32_t value);
  void SetFloat32(const std::string& key, float value);
  void SetBool(const std::string& key, bool value);
  void SetArray(const std::string& key, GgufValueType element_type, nlohmann::ordered_json values);
  void Erase(const std::string& key);

  bool Has(const std::string& key) const { return values_.contains(key); }
  const nlohmann::ordered_json& values() const { return values_; }
  const GgufKeyType& type(const std::string& key) const { return types_.at(key); }

 private:
  nlohmann::ordered_json values_ = nlohmann::ordered_json::object();
  std::unordered_map<std::string, GgufKeyType> types_;
};

// One tensor's entry in the file. Shape outermost first, as WeightTensor's
// (a linear weight is {out_features, in_features}; the file stores ne[] reversed).
struct GgufTensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  // Bytes of the data: RowBytes(dtype, shape.back()) * rows.
  size_t num_bytes() const;
};

// GGUF's limits that llama.cpp enforces when it reads.
inline constexpr size_t kGgufMaxTensorNameBytes = 63;

class GgufWriter {
 public:
  // Validates everything (value types, tensor names, shapes against block
  // sizes), creates the temporary file and writes header, metadata and tensor
  // infos. The alignment is general.alignment when the metadata has it (a
  // uint32 power of two), else 32.
  static StatusOr<std::unique_ptr<GgufWriter>> Create(const std::string& path, const GgufMetadata& metadata,
                                                      std::vector<GgufTensorInfo> tensors);
  ~GgufWriter();  // removes the temporary file unless committed
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  // The next `size` bytes of tensor data: tensors in declaration order, a
  // tensor's bytes may come in several pieces; padding is inserted between
  // tensors. Error when more bytes arrive than the tensors hold.
  Status Write(const void* data, size_t size);
  // Checks that every tensor got all its bytes, pads, flushes, syncs and
  // renames the temporary file onto the path.
  Status Commit();

  const std::string& path() const { return path_; }
  uint64_t alignment() const { return alignment_; }

 private:
  GgufWriter() = default;
  Status WriteRaw(const void* data, size_t size);
  Status WritePadding(uint64_t position);
  Status Fail(Status status);  // closes and removes the temporary file

  std::string path_;
  std::string temp_path_;
  std::FILE* file_ = nullptr;
  uint64_t alignment_ = kGgufDefaultAlignment;
  std::vector<GgufTensorInfo> tensors_;
  size_t current_tensor_ = 0;       // index of the tensor being written
  size_t current_tensor_done_ = 0;  // its bytes written so far
  uint64_t data_written_ = 0;       // bytes into the data section, padding included
  bool is_committed_ = false;
};

}  // namespace tetra
