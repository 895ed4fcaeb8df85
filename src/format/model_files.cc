#include "format/model_files.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>

#include "format/gguf.h"
#include "format/safetensors.h"

namespace tetra {

Status WeightMap::Add(WeightTensor tensor) {
  auto [it, inserted] = tensors_.try_emplace(tensor.name);
  if (!inserted) return Status::Errorf("duplicate tensor '{}'", tensor.name);
  it->second = std::move(tensor);
  return Status::Ok();
}

const WeightTensor* WeightMap::Find(std::string_view name) const {
  auto it = tensors_.find(std::string(name));
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<std::string> WeightMap::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, tensor] : tensors_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

namespace {

namespace fs = std::filesystem;

StatusOr<std::unique_ptr<ModelFiles>> OpenGgufFile(const std::string& path,
                                                   std::unique_ptr<MappedFile> file) {
  auto model = std::make_unique<ModelFiles>();
  model->format = ModelFiles::Format::kGguf;
  model->path = path;
  TETRA_ASSIGN_OR_RETURN(ParsedGguf parsed, ParseGguf(file->data(), file->size(), path));
  model->gguf_version = parsed.version;
  model->gguf_metadata = std::move(parsed.metadata);
  for (WeightTensor& tensor : parsed.tensors) {
    TETRA_RETURN_IF_ERROR(model->weights.Add(std::move(tensor)).WithPrefix(path + ": "));
  }
  model->weights.AddFile(std::move(file));
  return model;
}

// Parses a JSON file; `required` false turns a missing file into null.
StatusOr<nlohmann::json> ReadJsonFile(const fs::path& path, bool required) {
  std::error_code ec;
  if (!required && !fs::exists(path, ec)) return nlohmann::json();
  TETRA_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path.string()));
  nlohmann::json json = nlohmann::json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return Status::Errorf("{}: not valid JSON", path.string());
  if (!json.is_object()) return Status::Errorf("{}: expected a JSON object", path.string());
  return json;
}

// Maps one safetensors file and adds its tensors. When `expected` is not
// null, every name in it must be present in the file.
Status AddSafetensorsFile(const fs::path& path, const std::vector<std::string>* expected,
                          const std::string& index_name, WeightMap* weights) {
  TETRA_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Open(path.string()));
  auto file = std::make_unique<MappedFile>(std::move(mapped));
  TETRA_ASSIGN_OR_RETURN(ParsedSafetensors parsed,
                         ParseSafetensors(file->data(), file->size(), path.string()));
  if (expected != nullptr) {
    std::set<std::string_view> present;
    for (const WeightTensor& tensor : parsed.tensors) present.insert(tensor.name);
    for (const std::string& name : *expected) {
      if (present.count(name) == 0) {
        return Status::Errorf("{}: tensor '{}' is listed for shard '{}' but missing from it", index_name,
                              name, path.filename().string());
      }
    }
  }
  for (WeightTensor& tensor : parsed.tensors) {
    TETRA_RETURN_IF_ERROR(weights->Add(std::move(tensor)).WithPrefix(path.string() + ": "));
  }
  weights->AddFile(std::move(file));
  return Status::Ok();
}

// A shard name from the index must be a plain file name inside the directory.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name.find('\\') == std::string::npos &&
         name != "." && name != "..";
}

StatusOr<std::unique_ptr<ModelFiles>> OpenHfDirectory(const std::string& path) {
  const fs::path dir(path);
  auto model = std::make_unique<ModelFiles>();
  model->format = ModelFiles::Format::kHfDirectory;
  model->path = path;
  TETRA_ASSIGN_OR_RETURN(model->hf_config, ReadJsonFile(dir / "config.json", /*required=*/true));
  TETRA_ASSIGN_OR_RETURN(model->hf_generation_config,
                         ReadJsonFile(dir / "generation_config.json", /*required=*/false));
  TETRA_ASSIGN_OR_RETURN(model->hf_tokenizer_config,
                         ReadJsonFile(dir / "tokenizer_config.json", /*required=*/false));
  std::error_code ec;
  if (fs::is_regular_file(dir / "tokenizer.json", ec)) {
    model->hf_tokenizer_json_path = (dir / "tokenizer.json").string();
  }

  const fs::path index_path = dir / "model.safetensors.index.json";
  const fs::path single_path = dir / "model.safetensors";
  if (fs::exists(index_path, ec)) {
    TETRA_ASSIGN_OR_RETURN(nlohmann::json index, ReadJsonFile(index_path, /*required=*/true));
    auto weight_map_it = index.find("weight_map");
    if (weight_map_it == index.end() || !weight_map_it->is_object()) {
      return Status::Errorf("{}: missing or non-object 'weight_map'", index_path.string());
    }
    std::map<std::string, std::vector<std::string>> names_by_shard;  // sorted: deterministic order
    for (const auto& [name, shard] : weight_map_it->items()) {
      if (!shard.is_string() || !IsPlainFileName(shard.get_ref<const std::string&>())) {
        return Status::Errorf("{}: tensor '{}' has an invalid shard file name", index_path.string(), name);
      }
      names_by_shard[shard.get<std::string>()].push_back(name);
    }
    if (names_by_shard.empty()) return Status::Errorf("{}: 'weight_map' is empty", index_path.string());
    for (const auto& [shard, names] : names_by_shard) {
      TETRA_RETURN_IF_ERROR(
          AddSafetensorsFile(dir / shard, &names, index_path.string(), &model->weights));
    }
  } else if (fs::exists(single_path, ec)) {
    TETRA_RETURN_IF_ERROR(AddSafetensorsFile(single_path, nullptr, "", &model->weights));
  } else {
    return Status::Errorf("{}: no model.safetensors or model.safetensors.index.json", path);
  }
  return model;
}

}  // namespace

StatusOr<std::unique_ptr<ModelFiles>> OpenModelFiles(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec) return Status::Errorf("{}: {}", path, ec.message());
  if (fs::is_directory(status)) return OpenHfDirectory(path);
  TETRA_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Open(path));
  auto file = std::make_unique<MappedFile>(std::move(mapped));
  if (!HasGgufMagic(file->data(), file->size())) {
    return Status::Errorf(
        "{}: neither a GGUF file (no GGUF magic) nor a Hugging Face model directory", path);
  }
  return OpenGgufFile(path, std::move(file));
}

}  // namespace tetra
