// Every family's vocab-only GGUF against the reference HF tokenizer's ids
// (tests/fixtures/vocab/*.inp/.out: no BOS/EOS, special text as plain text).
#include <gtest/gtest.h>

#include <filesystem>

#include "test_support.h"

namespace tetra {
namespace {

struct VocabCase {
  std::string gguf;     // ggml-vocab-<gguf>.gguf
  std::string vectors;  // ggml-vocab-<vectors>.gguf.inp/.out
  friend void PrintTo(const VocabCase& c, std::ostream* os) { *os << c.gguf; }
};

std::vector<std::string> SplitCases(const std::string& text) {
  const std::string separator = "\n__ggml_vocab_test__\n";
  std::vector<std::string> cases;
  size_t start = 0;
  while (true) {
    size_t end = text.find(separator, start);
    if (end == std::string::npos) break;
    cases.push_back(text.substr(start, end - start));
    start = end + separator.size();
  }
  return cases;
}

class VocabVectorsTest : public ::testing::TestWithParam<VocabCase> {};

TEST_P(VocabVectorsTest, ReproducesReferenceIds) {
  const VocabCase& c = GetParam();
  const std::string dir = testing::VocabDir();
  const std::string gguf_path = dir + "/ggml-vocab-" + c.gguf + ".gguf";
  const std::string inp_path = dir + "/ggml-vocab-" + c.vectors + ".gguf.inp";
  ASSERT_TRUE(std::filesystem::exists(gguf_path)) << "missing " << gguf_path;
  ASSERT_TRUE(std::filesystem::exists(inp_path)) << "missing " << inp_path;
  auto tokenizer = testing::LoadGgufTokenizer(gguf_path);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().message();
  std::vector<std::string> inputs = SplitCases(testing::ReadFileBytes(inp_path));
  std::istringstream outputs(testing::ReadFileBytes(dir + "/ggml-vocab-" + c.vectors + ".gguf.out"));
  ASSERT_FALSE(inputs.empty());
  int passed = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::string line;
    ASSERT_TRUE(std::getline(outputs, line)) << "missing expected ids for case " << i;
    std::vector<int32_t> expected = testing::ParseIds(line);
    std::vector<int32_t> got = (*tokenizer)->Encode(inputs[i], /*add_special=*/false, /*parse_special=*/false);
    if (got == expected) {
      ++passed;
    } else {
      ADD_FAILURE() << c.gguf << " case " << i << " '" << inputs[i] << "'\n expected: " << line
                    << "\n got:      " << ::testing::PrintToString(got);
    }
  }
  std::printf("[ vocab ] %-16s %3d / %3zu cases pass (%s)\n", c.gguf.c_str(), passed, inputs.size(),
              std::string((*tokenizer)->model_name()).c_str());
}

// Not baichuan: llama.cpp ships no .inp/.out for it (its GGUF is parsed by
// gguf_test and loaded by bad_input_test). Not bert-bge: WordPiece.
INSTANTIATE_TEST_SUITE_P(
    Families, VocabVectorsTest,
    ::testing::Values(VocabCase{"gpt-2", "gpt-2"}, VocabCase{"llama-spm", "llama-spm"},
                      VocabCase{"phi-3", "phi-3"}, VocabCase{"deepseek-llm", "deepseek-llm"},
                      VocabCase{"deepseek-coder", "deepseek-coder"}, VocabCase{"falcon", "falcon"},
                      VocabCase{"mpt", "mpt"}, VocabCase{"gpt-neox", "mpt"},  // same vocabulary as mpt
                      VocabCase{"starcoder", "starcoder"}, VocabCase{"refact", "refact"}),
    [](const ::testing::TestParamInfo<VocabCase>& info) {
      std::string name = info.param.gguf;
      for (char& ch : name) {
        if (ch == '-') ch = '_';
      }
      return name;
    });

}  // namespace
}  // namespace tetra
