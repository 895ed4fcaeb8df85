// safetensors files and HF directories written by the safetensors library;
// values checked against what that library reads back. Plus hostile headers.
#include "format/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "format/model_files.h"
#include "kernels/reference/dequantize.h"
#include "test_util.h"

namespace tetra {
namespace {

namespace fs = std::filesystem;
using testing::FixturePath;
using ::testing::HasSubstr;

std::vector<double> ValuesAsDouble(const WeightTensor& tensor) {
  std::vector<double> out;
  const int64_t n = tensor.num_elements();
  for (int64_t i = 0; i < n; ++i) {
    switch (tensor.dtype) {
      case DType::kI32: {
        int32_t v;
        std::memcpy(&v, tensor.data + 4 * i, 4);
        out.push_back(v);
        break;
      }
      default: {
        float v;
        DequantizeRow(tensor.dtype, tensor.data + i * RowBytes(tensor.dtype, 1), &v, 1);
        out.push_back(v);
      }
    }
  }
  return out;
}

void ExpectMatchesOracle(const WeightMap& weights) {
  const nlohmann::json expected = testing::ReadJson(FixturePath("format/safetensors_expected.json"));
  ASSERT_EQ(weights.size(), expected.size());
  const std::map<std::string, DType> dtypes = {
      {"float32", DType::kF32}, {"float16", DType::kF16}, {"bfloat16", DType::kBF16}, {"int32", DType::kI32}};
  for (const auto& [name, want] : expected.items()) {
    SCOPED_TRACE(name);
    const WeightTensor* tensor = weights.Find(name);
    ASSERT_NE(tensor, nullptr);
    EXPECT_EQ(tensor->dtype, dtypes.at(want["dtype"].get<std::string>()));
    EXPECT_EQ(tensor->shape, want["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(ValuesAsDouble(*tensor), want["values"].get<std::vector<double>>());
  }
}

TEST(HfDirectoryTest, ShardedDirectory) {
  StatusOr<std::unique_ptr<ModelFiles>> model = OpenModelFiles(FixturePath("format/hf_sharded"));
  ASSERT_TRUE(model.ok()) << model.status().message();
  EXPECT_EQ((*model)->format, ModelFiles::Format::kHfDirectory);
  EXPECT_EQ((*model)->hf_config["model_type"], "tiny");
  EXPECT_EQ((*model)->hf_generation_config["eos_token_id"][1], 3);
  EXPECT_EQ((*model)->hf_tokenizer_config["add_bos_token"], true);
  EXPECT_EQ((*model)->hf_tokenizer_json_path, "");
  EXPECT_TRUE((*model)->gguf_metadata.empty());
  ExpectMatchesOracle((*model)->weights);
}

TEST(HfDirectoryTest, SingleFileDirectory) {
  StatusOr<std::unique_ptr<ModelFiles>> model = OpenModelFiles(FixturePath("format/hf_single"));
  ASSERT_TRUE(model.ok()) << model.status().message();
  EXPECT_TRUE((*model)->hf_generation_config.is_null());
  ExpectMatchesOracle((*model)->weights);
}

// A scratch copy of a fixture directory that a test may damage.
class ScratchDirectory {
 public:
  explicit ScratchDirectory(const std::string& fixture) {
    path_ = fs::temp_directory_path() / ("tetra_format_test_" + std::to_string(::getpid()) + "_" + fixture);
    fs::remove_all(path_);
    fs::copy(FixturePath("format/" + fixture), path_);
  }
  ~ScratchDirectory() { fs::remove_all(path_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(path_ / name, std::ios::binary) << text;
  }
  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
};

std::string OpenError(const std::string& path) {
  StatusOr<std::unique_ptr<ModelFiles>> model = OpenModelFiles(path);
  return model.ok() ? "(opened ok)" : model.status().message();
}

TEST(HfDirectoryTest, Errors) {
  {
    ScratchDirectory dir("hf_sharded");
    fs::remove(fs::path(dir.path()) / "config.json");
    EXPECT_THAT(OpenError(dir.path()), HasSubstr("config.json"));
  }
  {
    ScratchDirectory dir("hf_sharded");
    dir.Write("config.json", "{not json");
    EXPECT_THAT(OpenError(dir.path()), HasSubstr("config.json: not valid JSON"));
  }
  {
    ScratchDirectory dir("hf_sharded");
    dir.Write("model.safetensors.index.json",
              R"({"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors",
                                 "ghost.weight": "model-00001-of-00002.safetensors"}})");
    EXPECT_THAT(OpenError(dir.path()),
                HasSubstr("model.safetensors.index.json: tensor 'ghost.weight' is listed for shard "
                          "'model-00001-of-00002.safetensors' but missing from it"));
  }
  {
    ScratchDirectory dir("hf_sharded");
    dir.Write("model.safetensors.index.json", R"({"weight_map": {"x": "../../etc/passwd"}})");
    EXPECT_THAT(OpenError(dir.path()), HasSubstr("tensor 'x' has an invalid shard file name"));
  }
  {
    ScratchDirectory dir("hf_sharded");
    dir.Write("model.safetensors.index.json", R"({"weight_map": {"x": "model-00009-of-00009.safetensors"}})");
    EXPECT_THAT(OpenError(dir.path()), HasSubstr("model-00009-of-00009.safetensors"));
  }
  {
    ScratchDirectory dir("hf_single");
    fs::remove(fs::path(dir.path()) / "model.safetensors");
    EXPECT_THAT(OpenError(dir.path()), HasSubstr("no model.safetensors or model.safetensors.index.json"));
  }
  EXPECT_THAT(OpenError(FixturePath("format/hf_single/model.safetensors")),
              HasSubstr("neither a GGUF file (no GGUF magic) nor a Hugging Face model directory"));
  EXPECT_THAT(OpenError(FixturePath("format/does_not_exist")), HasSubstr("does_not_exist"));
}

// Builds a safetensors buffer from a header string and n data bytes.
std::vector<uint8_t> Safetensors(const std::string& header, size_t num_data_bytes) {
  const uint64_t length = header.size();
  std::vector<uint8_t> bytes(8 + header.size() + num_data_bytes, 0);
  std::memcpy(bytes.data(), &length, 8);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  return bytes;
}

std::string ParseError(const std::vector<uint8_t>& bytes) {
  StatusOr<ParsedSafetensors> parsed = ParseSafetensors(bytes.data(), bytes.size(), "w.safetensors");
  if (parsed.ok()) return "(parsed ok)";
  EXPECT_EQ(parsed.status().message().rfind("w.safetensors: ", 0), 0u) << parsed.status().message();
  return parsed.status().message();
}

TEST(SafetensorsHostileTest, ValidMinimal) {
  std::vector<uint8_t> bytes =
      Safetensors(R"({"__metadata__": {"format": "pt"}, "w": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12]}})", 12);
  StatusOr<ParsedSafetensors> parsed = ParseSafetensors(bytes.data(), bytes.size(), "w.safetensors");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  ASSERT_EQ(parsed->tensors.size(), 1u);
  EXPECT_EQ(parsed->metadata["format"], "pt");
  EXPECT_EQ(parsed->tensors[0].num_bytes, 12u);
}

TEST(SafetensorsHostileTest, Errors) {
  EXPECT_THAT(ParseError({1, 2, 3}), HasSubstr("too small"));
  std::vector<uint8_t> huge_length(16, 0xFF);
  EXPECT_THAT(ParseError(huge_length), HasSubstr("exceeds the limit"));
  std::vector<uint8_t> past_end = Safetensors("{}", 0);
  past_end[0] = 200;
  EXPECT_THAT(ParseError(past_end), HasSubstr("header length 200 exceeds the 2 bytes left"));
  EXPECT_THAT(ParseError(Safetensors("{\"a\":", 0)), HasSubstr("header is not valid JSON"));
  EXPECT_THAT(ParseError(Safetensors("[1,2]", 0)), HasSubstr("header is not a JSON object"));
  EXPECT_THAT(ParseError(Safetensors(R"({"w": 3})", 0)), HasSubstr("tensor 'w': entry is not a JSON object"));
  EXPECT_THAT(ParseError(Safetensors(R"({"w": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}})", 1)),
              HasSubstr("tensor 'w': unsupported dtype F8_E4M3"));
  EXPECT_THAT(ParseError(Safetensors(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4)),
              HasSubstr("tensor 'w': invalid dimension -1"));
  EXPECT_THAT(ParseError(Safetensors(R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 4]}})", 4)),
              HasSubstr("tensor 'w': invalid dimension 2.5"));
  EXPECT_THAT(ParseError(Safetensors(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})", 4)),
              HasSubstr("element count overflows"));
  EXPECT_THAT(ParseError(Safetensors(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}})", 8)),
              HasSubstr("tensor 'w': data ends at offset 16 past the 8 bytes of the data section"));
  EXPECT_THAT(ParseError(Safetensors(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", 8)),
              HasSubstr("tensor 'w': data_offsets [0, 4] hold 4 bytes but shape x F32 needs 8"));
  EXPECT_THAT(ParseError(Safetensors(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8)),
              HasSubstr("reversed"));
  EXPECT_THAT(ParseError(Safetensors(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", 8)),
              HasSubstr("'data_offsets' must be an array [begin, end]"));
  EXPECT_THAT(ParseError(Safetensors(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", 8)),
              HasSubstr("missing or non-string 'dtype'"));
  EXPECT_THAT(ParseError(Safetensors(R"({"w": {"dtype": "F32", "shape": [1,1,1,1,1,1,1,1,1], "data_offsets": [0, 4]}})", 8)),
              HasSubstr("9 dimensions"));
}

TEST(SafetensorsHostileTest, DeeplyNestedJsonDoesNotRecurse) {
  // A dimension that is an array nested 100000 deep: the message must not
  // dump it (dump() recurses), and parsing/destroying it must not overflow.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_THAT(ParseError(Safetensors(R"({"w": {"dtype": "F32", "shape": [)" + deep +
                                         R"(], "data_offsets": [0, 4]}})", 4)),
              HasSubstr("tensor 'w': invalid dimension array"));
  EXPECT_THAT(ParseError(Safetensors(R"({"__metadata__": )" + deep + "}", 0)), HasSubstr("(parsed ok)"));
}

}  // namespace
}  // namespace tetra
