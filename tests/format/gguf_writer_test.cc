// GgufWriter against the `gguf` package's GGUFWriter: the same content gives
// the same bytes (fixture written by tools/fixtures/make_quantize_fixture.py),
// files read back with ParseGguf, and failures leave no file behind.
#include "format/gguf_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "format/gguf.h"
#include "test_util.h"

namespace tetra {
namespace {

using testing::FixturePath;
using testing::ReadBytes;
using testing::ReadJson;

GgufValueType ValueTypeNamed(const std::string& name) {
  static const std::map<std::string, GgufValueType> kTypes = {
      {"UINT8", GgufValueType::kUint8},     {"INT8", GgufValueType::kInt8},
      {"UINT16", GgufValueType::kUint16},   {"INT16", GgufValueType::kInt16},
      {"UINT32", GgufValueType::kUint32},   {"INT32", GgufValueType::kInt32},
      {"FLOAT32", GgufValueType::kFloat32}, {"BOOL", GgufValueType::kBool},
      {"STRING", GgufValueType::kString},   {"ARRAY", GgufValueType::kArray},
      {"UINT64", GgufValueType::kUint64},   {"INT64", GgufValueType::kInt64},
      {"FLOAT64", GgufValueType::kFloat64},
  };
  return kTypes.at(name);
}

DType DTypeNamed(const std::string& name) {
  for (uint32_t id = 0; id < 40; ++id) {
    auto dtype = DTypeFromGgufId(id);
    if (dtype && DTypeName(*dtype) == name) return *dtype;
  }
  ADD_FAILURE() << "unknown type " << name;
  return DType::kF32;
}

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() / ("tetra_gguf_writer_" + std::to_string(getpid()) + "_" +
                                                      ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const { return (path_ / name).string(); }
  // Names of the files in the directory (to see that no temporary is left).
  std::vector<std::string> Listing() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(path_)) names.push_back(entry.path().filename());
    return names;
  }

 private:
  std::filesystem::path path_;
};

struct Content {
  GgufMetadata metadata;
  std::vector<GgufTensorInfo> tensors;
  std::vector<std::vector<uint8_t>> data;
};

// What writer_reference.gguf holds, as recorded next to it.
Content ReferenceContent() {
  const nlohmann::json reference = ReadJson(FixturePath("quant/writer_reference.json"));
  Content content;
  for (const auto& key : reference["keys"]) {
    GgufKeyType type{ValueTypeNamed(key["type"])};
    if (key.contains("element_type")) type.array_element_type = ValueTypeNamed(key["element_type"]);
    content.metadata.Set(key["key"], type, nlohmann::ordered_json(key["value"]));
  }
  for (const auto& t : reference["tensors"]) {
    content.tensors.push_back({t["name"], DTypeNamed(t["type"]), t["shape"].get<std::vector<int64_t>>()});
    content.data.push_back(t["data"].get<std::vector<uint8_t>>());
  }
  return content;
}

// Writes each tensor in two pieces (streaming), then commits.
Status WriteContent(const std::string& path, const Content& content) {
  TETRA_ASSIGN_OR_RETURN(auto writer, GgufWriter::Create(path, content.metadata, content.tensors));
  for (const auto& bytes : content.data) {
    const size_t half = bytes.size() / 2;
    TETRA_RETURN_IF_ERROR(writer->Write(bytes.data(), half));
    TETRA_RETURN_IF_ERROR(writer->Write(bytes.data() + half, bytes.size() - half));
  }
  return writer->Commit();
}

TEST(GgufWriterTest, SameBytesAsGgufPackageWriter) {
  TempDir dir;
  const std::string path = dir.File("out.gguf");
  const Status s = WriteContent(path, ReferenceContent());
  ASSERT_TRUE(s.ok()) << s.message();
  const std::vector<uint8_t> expected = ReadBytes(FixturePath("quant/writer_reference.gguf"));
  const std::vector<uint8_t> actual = ReadBytes(path);
  ASSERT_EQ(actual.size(), expected.size());
  size_t first_difference = 0;
  while (first_difference < actual.size() && actual[first_difference] == expected[first_difference]) {
    ++first_difference;
  }
  EXPECT_EQ(first_difference, actual.size()) << "first differing byte";
  EXPECT_EQ(dir.Listing(), std::vector<std::string>{"out.gguf"});  // no temporary left
}

TEST(GgufWriterTest, ReadsBackWithParseGguf) {
  TempDir dir;
  const std::string path = dir.File("out.gguf");
  const Content content = ReferenceContent();
  ASSERT_TRUE(WriteContent(path, content).ok());
  const std::vector<uint8_t> bytes = ReadBytes(path);
  auto parsed = ParseGguf(bytes.data(), bytes.size(), path);
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->version, 3u);
  EXPECT_EQ(parsed->metadata.size(), content.metadata.values().size());
  for (auto it = content.metadata.values().begin(); it != content.metadata.values().end(); ++it) {
    SCOPED_TRACE(it.key());
    ASSERT_TRUE(parsed->metadata.contains(it.key()));
    const auto& read = parsed->metadata.at(it.key());
    if (it.value().is_number_float()) {
      EXPECT_EQ(read.get<double>(), it.value().get<double>());
    } else if (it.value().is_array() && !it.value().empty() && it.value()[0].is_number_float()) {
      EXPECT_EQ(read.get<std::vector<double>>(), it.value().get<std::vector<double>>());
    } else {
      EXPECT_EQ(read, it.value());
    }
    EXPECT_EQ(parsed->metadata_types.at(it.key()).type, content.metadata.type(it.key()).type);
  }
  ASSERT_EQ(parsed->tensors.size(), content.tensors.size());
  for (size_t i = 0; i < content.tensors.size(); ++i) {
    const WeightTensor& t = parsed->tensors[i];
    EXPECT_EQ(t.name, content.tensors[i].name);
    EXPECT_EQ(t.dtype, content.tensors[i].dtype);
    EXPECT_EQ(t.shape, content.tensors[i].shape);
    ASSERT_EQ(t.num_bytes, content.data[i].size());
    EXPECT_EQ(std::vector<uint8_t>(t.data, t.data + t.num_bytes), content.data[i]) << t.name;
    EXPECT_EQ((t.data - bytes.data()) % 32, 0) << t.name;
  }
}

TEST(GgufWriterTest, HonoursGeneralAlignment) {
  TempDir dir;
  Content content = ReferenceContent();
  content.metadata.SetUint32("general.alignment", 64);
  const std::string path = dir.File("aligned.gguf");
  ASSERT_TRUE(WriteContent(path, content).ok());
  const std::vector<uint8_t> bytes = ReadBytes(path);
  auto parsed = ParseGguf(bytes.data(), bytes.size(), path);
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_EQ(parsed->alignment, 64u);
  for (const WeightTensor& t : parsed->tensors) EXPECT_EQ((t.data - bytes.data()) % 64, 0) << t.name;

  content.metadata.SetUint32("general.alignment", 48);
  const Status s = WriteContent(dir.File("bad.gguf"), content);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("general.alignment"), std::string::npos) << s.message();
}

TEST(GgufWriterTest, ReplacingAKeyKeepsItsPlace) {
  GgufMetadata metadata;
  metadata.SetString("a", "x");
  metadata.SetUint32("b", 1);
  metadata.SetUint32("a", 7);
  ASSERT_EQ(metadata.values().size(), 2u);
  EXPECT_EQ(metadata.values().begin().key(), "a");
  EXPECT_EQ(metadata.values().at("a"), 7);
  EXPECT_EQ(metadata.type("a").type, GgufValueType::kUint32);
  metadata.Erase("a");
  EXPECT_FALSE(metadata.Has("a"));
}

TEST(GgufWriterTest, MissingBytesLeaveNoFile) {
  TempDir dir;
  const std::string path = dir.File("short.gguf");
  const Content content = ReferenceContent();
  auto writer = GgufWriter::Create(path, content.metadata, content.tensors);
  ASSERT_TRUE(writer.ok()) << writer.status().message();
  ASSERT_TRUE((*writer)->Write(content.data[0].data(), content.data[0].size()).ok());
  const Status s = (*writer)->Commit();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("blk.0.attn_norm.weight"), std::string::npos) << s.message();
  EXPECT_TRUE(dir.Listing().empty());
}

TEST(GgufWriterTest, ExtraBytesAreAnError) {
  TempDir dir;
  const std::string path = dir.File("long.gguf");
  Content content = ReferenceContent();
  content.tensors.resize(1);
  content.data.resize(1);
  auto writer = GgufWriter::Create(path, content.metadata, content.tensors);
  ASSERT_TRUE(writer.ok());
  std::vector<uint8_t> too_many = content.data[0];
  too_many.push_back(1);
  const Status s = (*writer)->Write(too_many.data(), too_many.size());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("beyond the last tensor"), std::string::npos) << s.message();
  EXPECT_FALSE((*writer)->Commit().ok());
  writer->reset();
  EXPECT_TRUE(dir.Listing().empty());
}

TEST(GgufWriterTest, AbandonedWriteLeavesOldFileIntact) {
  TempDir dir;
  const std::string path = dir.File("model.gguf");
  { std::ofstream(path) << "old contents"; }
  const Content content = ReferenceContent();
  {
    auto writer = GgufWriter::Create(path, content.metadata, content.tensors);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Write(content.data[0].data(), 10).ok());
  }  // destroyed without Commit
  const std::vector<uint8_t> bytes = ReadBytes(path);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), "old contents");
  EXPECT_EQ(dir.Listing(), std::vector<std::string>{"model.gguf"});
}

TEST(GgufWriterTest, UnwritableDirectoryIsAClearError) {
  const Content content = ReferenceContent();
  auto writer = GgufWriter::Create("/nonexistent_dir_for_tetra/out.gguf", content.metadata, content.tensors);
  ASSERT_FALSE(writer.ok());
  EXPECT_NE(writer.status().message().find("/nonexistent_dir_for_tetra/out.gguf"), std::string::npos);
  EXPECT_NE(writer.status().message().find("No such file or directory"), std::string::npos)
      << writer.status().message();

  TempDir dir;
  auto onto_directory = GgufWriter::Create(dir.File(""), content.metadata, content.tensors);
  ASSERT_FALSE(onto_directory.ok());
  EXPECT_NE(onto_directory.status().message().find("is a directory"), std::string::npos);
}

struct BadInput {
  std::string what;
  std::function<void(Content&)> mutate;
  std::string expected_message;
};

TEST(GgufWriterTest, BadInputIsRefusedWithTheNameOfTheThing) {
  const std::vector<BadInput> cases = {
      {"string for uint32", [](Content& c) { c.metadata.Set("general.file_type", {GgufValueType::kUint32}, "seven"); },
       "key 'general.file_type': expected an integer"},
      {"uint8 out of range", [](Content& c) { c.metadata.Set("test.uint8", {GgufValueType::kUint8}, 256); },
       "key 'test.uint8': value 256 does not fit"},
      {"negative for uint64", [](Content& c) { c.metadata.Set("test.uint64", {GgufValueType::kUint64}, -1); },
       "key 'test.uint64': value -1 does not fit"},
      {"array element of the wrong type",
       [](Content& c) {
         c.metadata.SetArray("test.array_int32", GgufValueType::kInt32, nlohmann::ordered_json::array({1, "x"}));
       },
       "key 'test.array_int32': expected an integer"},
      {"nested array",
       [](Content& c) {
         c.metadata.SetArray("test.nested", GgufValueType::kArray, nlohmann::ordered_json::array({{1}}));
       },
       "key 'test.nested': arrays of arrays"},
      {"long tensor name", [](Content& c) { c.tensors[0].name = std::string(64, 'x'); }, "longer than GGUF's 63"},
      {"row not whole blocks", [](Content& c) { c.tensors[0].shape = {3, 48}; },
       "tensor 'token_embd.weight': row length 48 is not a multiple of Q8_0's block size 32"},
      {"duplicate name", [](Content& c) { c.tensors[1].name = c.tensors[0].name; },
       "tensor 'token_embd.weight' appears twice"},
      {"five dimensions", [](Content& c) { c.tensors[1].shape = {1, 1, 1, 1, 5}; }, "5 dimensions"},
      {"zero dimension", [](Content& c) { c.tensors[1].shape = {0}; }, "dimension 0 is not positive"},
  };
  TempDir dir;
  for (const BadInput& bad : cases) {
    SCOPED_TRACE(bad.what);
    Content content = ReferenceContent();
    bad.mutate(content);
    auto writer = GgufWriter::Create(dir.File("bad.gguf"), content.metadata, content.tensors);
    ASSERT_FALSE(writer.ok());
    EXPECT_NE(writer.status().message().find(bad.expected_message), std::string::npos) << writer.status().message();
    EXPECT_NE(writer.status().message().find("bad.gguf"), std::string::npos) << writer.status().message();
  }
  EXPECT_TRUE(dir.Listing().empty());
}

}  // namespace
}  // namespace tetra
