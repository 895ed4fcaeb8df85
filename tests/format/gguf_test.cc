// GGUF reading of files written by the gguf package's GGUFWriter (values
// checked against what GGUFReader reports), and of real vocab GGUF files.
#include "format/gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "format/model_files.h"
#include "kernels/reference/dequantize.h"
#include "test_util.h"

namespace tetra {
namespace {

using testing::FixturePath;
using testing::ReadBytes;
using testing::ReadJson;

std::string HexDecode(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// Expected JSON values (from the Python script) in the parser's representation.
nlohmann::ordered_json ExpectedValue(const nlohmann::json& value) {
  if (value.is_object() && value.contains("bytes_hex")) return HexDecode(value["bytes_hex"].get<std::string>());
  if (value.is_array()) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const auto& v : value) out.push_back(ExpectedValue(v));
    return out;
  }
  return nlohmann::ordered_json::parse(value.dump());
}

void ExpectTensorsMatch(const std::vector<WeightTensor>& tensors, const uint8_t* file_begin,
                        const nlohmann::json& expected_tensors) {
  ASSERT_EQ(tensors.size(), expected_tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const WeightTensor& tensor = tensors[i];
    const nlohmann::json& expected = expected_tensors[i];
    SCOPED_TRACE(tensor.name);
    EXPECT_EQ(tensor.name, expected["name"].get<std::string>());
    EXPECT_EQ(static_cast<uint32_t>(tensor.dtype), expected["type_id"].get<uint32_t>());
    EXPECT_EQ(tensor.shape, expected["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(tensor.data - file_begin, expected["file_offset"].get<int64_t>());
    EXPECT_EQ(tensor.num_bytes, expected["num_bytes"].get<size_t>());
    const std::vector<float> values = expected["values"].get<std::vector<float>>();
    ASSERT_EQ(static_cast<size_t>(tensor.num_elements()), values.size());
    std::vector<float> out(values.size());
    DequantizeRow(tensor.dtype, tensor.data, out.data(), tensor.num_elements());
    for (size_t k = 0; k < values.size(); ++k) ASSERT_EQ(out[k], values[k]) << "element " << k;
  }
}

TEST(GgufTest, ReadsEveryMetadataTypeOfTheFixture) {
  const std::vector<uint8_t> bytes = ReadBytes(FixturePath("format/tiny.gguf"));
  ASSERT_FALSE(bytes.empty());
  const nlohmann::json expected = ReadJson(FixturePath("format/gguf_expected.json"))["tiny.gguf"];
  StatusOr<ParsedGguf> parsed = ParseGguf(bytes.data(), bytes.size(), "tiny.gguf");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->version, expected["version"].get<uint32_t>());
  EXPECT_EQ(parsed->alignment, 32u);

  const nlohmann::json& expected_metadata = expected["metadata"];
  ASSERT_EQ(parsed->metadata.size(), expected_metadata.size());
  size_t index = 0;
  for (const auto& [key, value] : parsed->metadata.items()) {
    const nlohmann::json& want = expected_metadata[index++];
    SCOPED_TRACE(key);
    EXPECT_EQ(key, want["key"].get<std::string>());  // file order kept
    EXPECT_EQ(value, ExpectedValue(want["value"]));
    const GgufKeyType& type = parsed->metadata_types.at(key);
    std::string type_name = GgufValueTypeName(type.type);
    for (char& c : type_name) c = static_cast<char>(std::toupper(c));
    EXPECT_EQ(type_name, want["type"].get<std::string>());
    if (type.type == GgufValueType::kArray) {
      std::string element = GgufValueTypeName(type.array_element_type);
      for (char& c : element) c = static_cast<char>(std::toupper(c));
      EXPECT_EQ(element, want["element_type"].get<std::string>());
    }
  }
  // Type-specific JSON kinds.
  EXPECT_TRUE(parsed->metadata["test.u64"].is_number_unsigned());
  EXPECT_EQ(parsed->metadata["test.u64"].get<uint64_t>(), 18000000000000000000ull);
  EXPECT_EQ(parsed->metadata["test.i64"].get<int64_t>(), -9000000000000000000ll);
  EXPECT_TRUE(parsed->metadata["test.bool_true"].is_boolean());
  EXPECT_EQ(parsed->metadata["test.invalid_utf8"].get<std::string>(), std::string("bad\xff\xfe utf8 \xc3"));
  EXPECT_EQ(parsed->metadata["test.array_nested3"][0][1][1].get<int64_t>(), 3);

  ExpectTensorsMatch(parsed->tensors, bytes.data(), expected["tensors"]);
}

TEST(GgufTest, HonoursCustomAlignment) {
  const std::vector<uint8_t> bytes = ReadBytes(FixturePath("format/aligned64.gguf"));
  const nlohmann::json expected = ReadJson(FixturePath("format/gguf_expected.json"))["aligned64.gguf"];
  StatusOr<ParsedGguf> parsed = ParseGguf(bytes.data(), bytes.size(), "aligned64.gguf");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->alignment, 64u);
  EXPECT_EQ(parsed->alignment, expected["alignment"].get<uint64_t>());
  EXPECT_EQ(parsed->data_offset % 64, 0u);
  ExpectTensorsMatch(parsed->tensors, bytes.data(), expected["tensors"]);
}

TEST(GgufTest, OpenModelFilesMapsAGgufFile) {
  const std::string path = FixturePath("format/tiny.gguf");
  StatusOr<std::unique_ptr<ModelFiles>> model = OpenModelFiles(path);
  ASSERT_TRUE(model.ok()) << model.status().message();
  EXPECT_EQ((*model)->format, ModelFiles::Format::kGguf);
  EXPECT_EQ((*model)->gguf_version, 3u);
  EXPECT_EQ((*model)->gguf_metadata["general.architecture"], "testarch");
  EXPECT_EQ((*model)->weights.size(), 10u);
  const WeightTensor* q4k = (*model)->weights.Find("blk.0.q4_k.weight");
  ASSERT_NE(q4k, nullptr);
  EXPECT_EQ(q4k->dtype, DType::kQ4_K);
  EXPECT_EQ(q4k->shape, (std::vector<int64_t>{2, 256}));
  EXPECT_EQ((*model)->weights.Find("missing"), nullptr);
  std::vector<std::string> names = (*model)->weights.Names();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_EQ(names.front(), "blk.0.q2_k.weight");
}

TEST(GgufTest, ParsesEveryVocabFile) {
  const std::filesystem::path dir = std::filesystem::path(TETRA_FIXTURES_DIR) / "vocab";
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << "missing " << dir;
  int num_files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".gguf") continue;
    SCOPED_TRACE(entry.path().string());
    ++num_files;
    StatusOr<std::unique_ptr<ModelFiles>> model = OpenModelFiles(entry.path().string());
    ASSERT_TRUE(model.ok()) << model.status().message();
    const nlohmann::ordered_json& metadata = (*model)->gguf_metadata;
    ASSERT_TRUE(metadata.contains("tokenizer.ggml.model"));
    EXPECT_TRUE(metadata["tokenizer.ggml.model"].is_string());
    ASSERT_TRUE(metadata.contains("tokenizer.ggml.tokens"));
    ASSERT_TRUE(metadata["tokenizer.ggml.tokens"].is_array());
    EXPECT_GT(metadata["tokenizer.ggml.tokens"].size(), 1000u);
    EXPECT_TRUE(metadata["general.architecture"].is_string());
    // Dumping with replacement never throws even on invalid UTF-8 tokens.
    EXPECT_NO_THROW(metadata.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
  }
  EXPECT_GE(num_files, 10);
}

TEST(GgufTest, KnownVocabValues) {
  const std::string path = std::string(TETRA_FIXTURES_DIR) + "/vocab/ggml-vocab-llama-spm.gguf";
  StatusOr<std::unique_ptr<ModelFiles>> model = OpenModelFiles(path);
  ASSERT_TRUE(model.ok()) << model.status().message();
  const nlohmann::ordered_json& metadata = (*model)->gguf_metadata;
  EXPECT_EQ(metadata["tokenizer.ggml.model"], "llama");
  EXPECT_EQ(metadata["tokenizer.ggml.tokens"].size(), 32000u);
  EXPECT_EQ(metadata["tokenizer.ggml.tokens"][1], "<s>");
  EXPECT_EQ(metadata["tokenizer.ggml.scores"].size(), 32000u);
  EXPECT_TRUE(metadata["tokenizer.ggml.scores"][0].is_number_float());
}

}  // namespace
}  // namespace tetra
