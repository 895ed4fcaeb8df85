// The weights and metadata of a model, read from a GGUF file or a Hugging Face
// directory, as one map from tensor name to a view of its bytes. The data are
// memory-mapped: opening a model costs no more than mapping its files.
// Immutable after OpenModelFiles returns; any thread may read it.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/mapped_file.h"
#include "base/status.h"
#include "tensor/dtype.h"

namespace tetra {

// A view of one stored tensor. Shape is outermost first, as PyTorch prints it:
// a linear layer's weight is {out_features, in_features}; a GGUF tensor's ne[]
// is reversed into this order. Rows are contiguous along the last dimension.
struct WeightTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into a mapping owned by the WeightMap
  size_t num_bytes = 0;

  int64_t num_elements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

class WeightMap {
 public:
  // Keeps the mapping alive as long as the map.
  void AddFile(std::unique_ptr<MappedFile> file) { files_.push_back(std::move(file)); }
  // Error if the name is already present.
  Status Add(WeightTensor tensor);
  const WeightTensor* Find(std::string_view name) const;
  // Sorted names.
  std::vector<std::string> Names() const;
  size_t size() const { return tensors_.size(); }

 private:
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::unordered_map<std::string, WeightTensor> tensors_;
};

struct ModelFiles {
  enum class Format { kGguf, kHfDirectory };
  Format format = Format::kGguf;
  std::string path;  // the .gguf file or the directory

  // GGUF: every key/value of the header, in file order ("general.architecture",
  // "tokenizer.ggml.tokens", ...). Empty for HF directories.
  nlohmann::ordered_json gguf_metadata;
  uint32_t gguf_version = 0;

  // HF directories: the parsed JSON files (null when a file is absent).
  nlohmann::json hf_config;             // config.json (required)
  nlohmann::json hf_generation_config;  // generation_config.json
  nlohmann::json hf_tokenizer_config;   // tokenizer_config.json
  std::string hf_tokenizer_json_path;   // tokenizer.json ("" when absent)

  WeightMap weights;
};

// Opens a GGUF file or a HF directory (config.json + model.safetensors or
// sharded model-0000x-of-0000y.safetensors with model.safetensors.index.json).
// Every error names the file and the problem.
StatusOr<std::unique_ptr<ModelFiles>> OpenModelFiles(const std::string& path);

}  // namespace tetra
