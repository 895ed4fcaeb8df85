// Models whose files are readable but do not make a model we can run: each
// gets an error naming the file, the tensor or key, and the problem.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "model/model.h"
#include "test_paths.h"

namespace tetra {
namespace {

namespace fs = std::filesystem;
using testing::FixturePath;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteAll(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}

// Replaces the first occurrence of `from` with `to` (same length, so binary
// offsets stay valid).
void PatchFile(const fs::path& p, const std::string& from, const std::string& to) {
  ASSERT_EQ(from.size(), to.size());
  std::string data = ReadAll(p);
  const size_t at = data.find(from);
  ASSERT_NE(at, std::string::npos) << from << " not in " << p;
  data.replace(at, from.size(), to);
  WriteAll(p, data);
}

class LoadErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tetra_load_errors_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path CopyHf(const std::string& model) {
    fs::path dst = dir_ / model;
    fs::copy(FixturePath("models/" + model + "/hf"), dst, fs::copy_options::recursive);
    return dst;
  }

  std::string LoadError(const fs::path& path) {
    auto model = LoadModel(path.string());
    EXPECT_FALSE(model.ok()) << path;
    return model.ok() ? "" : model.status().message();
  }

  fs::path dir_;
};

TEST_F(LoadErrorsTest, MissingTensorIsNamed) {
  fs::path hf = CopyHf("qwen2");
  PatchFile(hf / "model.safetensors", "model.layers.1.mlp.down_proj.weight",
            "model.layers.1.mlp.down_prox.weight");
  const std::string error = LoadError(hf);
  EXPECT_NE(error.find("missing tensor 'blk.1.ffn_down.weight'"), std::string::npos) << error;
}

TEST_F(LoadErrorsTest, ShapeThatDoesNotFitTheConfigIsNamed) {
  fs::path hf = CopyHf("qwen2");
  PatchFile(hf / "config.json", "\"intermediate_size\": 128", "\"intermediate_size\": 256");
  const std::string error = LoadError(hf);
  EXPECT_NE(error.find("model.layers.0.mlp.gate_proj.weight"), std::string::npos) << error;
  EXPECT_NE(error.find("expected [256, 64]"), std::string::npos) << error;
}

TEST_F(LoadErrorsTest, UnsupportedArchitectureIsNamed) {
  fs::path hf = CopyHf("llama");
  PatchFile(hf / "config.json", "\"model_type\": \"llama\"", "\"model_type\": \"gpt_j\"");
  const std::string error = LoadError(hf);
  EXPECT_NE(error.find("model_type 'gpt_j' is not supported"), std::string::npos) << error;

  fs::path gguf = dir_ / "model.gguf";
  fs::copy_file(FixturePath("models/qwen3/model-f32.gguf"), gguf);
  PatchFile(gguf, "qwen3", "qwenX");  // general.architecture's value comes first
  const std::string gguf_error = LoadError(gguf);
  EXPECT_NE(gguf_error.find("not supported"), std::string::npos) << gguf_error;
}

TEST_F(LoadErrorsTest, BadHyperParametersAreNamed) {
  fs::path hf = CopyHf("llama");
  PatchFile(hf / "config.json", "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3");
  const std::string error = LoadError(hf);
  EXPECT_NE(error.find("not a multiple of 3 KV heads"), std::string::npos) << error;
}

// More query heads per KV head than the attention kernels hold: an error at
// load, not a crash at the first forward step.
TEST_F(LoadErrorsTest, OversizedGqaGroupIsNamed) {
  fs::path gguf = dir_ / "model.gguf";
  fs::copy_file(FixturePath("models/llama/model-f32.gguf"), gguf);
  // llama.attention.head_count, type uint32, 4 -> 1024 (over 2 KV heads: 512 per KV head).
  const std::string key = "llama.attention.head_count";
  PatchFile(gguf, key + std::string("\x04\0\0\0\x04\0\0\0", 8), key + std::string("\x04\0\0\0\0\x04\0\0", 8));
  const std::string error = LoadError(gguf);
  EXPECT_NE(error.find("512 query heads per KV head is more than the 256"), std::string::npos) << error;
}

TEST_F(LoadErrorsTest, MissingConfigIsNamed) {
  fs::path hf = CopyHf("llama");
  fs::remove(hf / "config.json");
  const std::string error = LoadError(hf);
  EXPECT_NE(error.find("config.json"), std::string::npos) << error;
}

TEST_F(LoadErrorsTest, MissingFileIsNamed) {
  const std::string error = LoadError(dir_ / "nope.gguf");
  EXPECT_NE(error.find("nope.gguf"), std::string::npos) << error;
}

}  // namespace
}  // namespace tetra
