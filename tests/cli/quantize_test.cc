// `tetra quantize` end to end, against outside oracles:
//  - the quantizers are bit-exact with gguf.quants.quantize (fixture recorded by
//    tools/fixtures/make_quantize_fixture.py);
//  - HF -> Q8_0 gives tensors byte-identical to the fixtures' model-q8_0.gguf, which
//    the gguf package wrote following llama.cpp's converter (names, Q/K permutation,
//    stacked experts, rope_freqs), and the same vocabulary;
//  - quantized models (HF and GGUF input, q8_0 and q4_0) reproduce the transformers
//    logits of tests/fixtures/models/*/reference.json within quantization error;
//  - bad flags and inputs exit non-zero with a message and leave no file.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "base/mapped_file.h"
#include "engine/generator.h"
#include "format/gguf.h"
#include "kernels/reference/quantize.h"
#include "model/model.h"
#include "run_tetra.h"

namespace tetra {
namespace {

using testing::RunTetra;

std::string Fixture(const std::string& relative) { return std::string(TETRA_FIXTURES_DIR) + "/" + relative; }

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    for (char& ch : name) {
      if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    }
    path_ = std::filesystem::temp_directory_path() / ("tetra_quantize_" + std::to_string(getpid()) + "_" + name);
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const { return (path_ / name).string(); }
  size_t NumFiles() const {
    return static_cast<size_t>(std::distance(std::filesystem::directory_iterator(path_), {}));
  }

 private:
  std::filesystem::path path_;
};

// ---------------------------------------------------------------------------
// Quantizers vs gguf.quants.quantize.

TEST(QuantizeRowTest, BitExactWithGgufPackage) {
  const nlohmann::json manifest = ReadJson(Fixture("quant/quantize_manifest.json"));
  const int64_t num_rows = manifest["num_rows"], row_length = manifest["row_length"];
  const std::vector<uint8_t> input_bytes = ReadBytes(Fixture("quant/quantize_input.f32"));
  ASSERT_EQ(input_bytes.size(), static_cast<size_t>(num_rows * row_length * 4));
  std::vector<float> input(static_cast<size_t>(num_rows * row_length));
  std::memcpy(input.data(), input_bytes.data(), input_bytes.size());
  const std::map<std::string, DType> types = {
      {"Q8_0", DType::kQ8_0}, {"Q4_0", DType::kQ4_0}, {"F16", DType::kF16}, {"BF16", DType::kBF16}};
  for (const auto& type_name : manifest["types"]) {
    const DType dtype = types.at(type_name.get<std::string>());
    SCOPED_TRACE(type_name.get<std::string>());
    const std::vector<uint8_t> expected = ReadBytes(Fixture("quant/quantize_expected." + type_name.get<std::string>()));
    const size_t row_bytes = RowBytes(dtype, row_length);
    ASSERT_EQ(expected.size(), row_bytes * num_rows);
    for (int64_t r = 0; r < num_rows; ++r) {
      std::vector<uint8_t> actual(row_bytes);
      QuantizeRow(dtype, &input[r * row_length], actual.data(), row_length);
      EXPECT_EQ(actual, std::vector<uint8_t>(expected.begin() + r * row_bytes, expected.begin() + (r + 1) * row_bytes))
          << "row " << r << ": " << manifest["cases"][r].get<std::string>();
    }
  }
}

TEST(QuantizeRowTest, FloatToHalfRoundsToNearestEven) {
  // Independent of numpy: values whose f16 rounding is known by construction.
  EXPECT_EQ(FloatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7C00);            // ties to even: overflow
  EXPECT_EQ(FloatToHalf(1.0f + 1.0f / 2048), 0x3C00);  // tie between 1 and 1+2^-10: even
  EXPECT_EQ(FloatToHalf(1.0f + 3.0f / 2048), 0x3C02);  // tie: up to even
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie with zero: even
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(INFINITY), 0x7C00);
  EXPECT_EQ(FloatToHalf(NAN) & 0x7C00, 0x7C00);
  EXPECT_NE(FloatToHalf(NAN) & 0x03FF, 0);
}

// ---------------------------------------------------------------------------
// HF -> Q8_0 against the converter-convention file the gguf package wrote.

struct ParsedFile {
  MappedFile file;
  ParsedGguf gguf;
};

std::unique_ptr<ParsedFile> Parse(const std::string& path) {
  auto parsed = std::make_unique<ParsedFile>();
  auto file = MappedFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status().message();
  if (!file.ok()) return nullptr;
  parsed->file = std::move(file).value();
  auto gguf = ParseGguf(parsed->file.data(), parsed->file.size(), path);
  EXPECT_TRUE(gguf.ok()) << gguf.status().message();
  if (!gguf.ok()) return nullptr;
  parsed->gguf = std::move(gguf).value();
  return parsed;
}

std::map<std::string, const WeightTensor*> ByName(const ParsedGguf& gguf) {
  std::map<std::string, const WeightTensor*> tensors;
  for (const WeightTensor& t : gguf.tensors) tensors[t.name] = &t;
  return tensors;
}

class HfToQ8Test : public ::testing::TestWithParam<std::string> {};

TEST_P(HfToQ8Test, TensorsAndVocabularyMatchTheConverterFile) {
  TempDir dir;
  const std::string out = dir.File("out.gguf");
  const auto run = RunTetra("quantize -m " + Fixture("models/" + GetParam() + "/hf") + " -o " + out + " --type q8_0");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto ours = Parse(out);
  auto reference = Parse(Fixture("models/" + GetParam() + "/model-q8_0.gguf"));
  ASSERT_TRUE(ours && reference);
  const auto our_tensors = ByName(ours->gguf), reference_tensors = ByName(reference->gguf);
  ASSERT_EQ(our_tensors.size(), reference_tensors.size());
  int num_identical = 0;
  for (const auto& [name, expected] : reference_tensors) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(our_tensors.count(name));
    const WeightTensor& t = *our_tensors.at(name);
    EXPECT_EQ(t.shape, expected->shape);
    if (expected->dtype == DType::kF16) {
      // The converter's fallback for rows not a multiple of 32; tetra keeps F32.
      EXPECT_NE(t.shape.back() % 32, 0);
      EXPECT_EQ(t.dtype, DType::kF32);
      continue;
    }
    ASSERT_EQ(t.dtype, expected->dtype);
    ASSERT_EQ(t.num_bytes, expected->num_bytes);
    EXPECT_EQ(std::memcmp(t.data, expected->data, t.num_bytes), 0) << "bytes differ";
    ++num_identical;
  }
  EXPECT_GT(num_identical, 0);
  for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                          "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.chat_template",
                          "general.architecture", "general.file_type"}) {
    EXPECT_EQ(ours->gguf.metadata.value(key, nlohmann::ordered_json()),
              reference->gguf.metadata.value(key, nlohmann::ordered_json()))
        << key;
  }
  // Every architecture key the converter wrote, with the same value.
  const std::string arch = reference->gguf.metadata["general.architecture"];
  for (auto it = reference->gguf.metadata.begin(); it != reference->gguf.metadata.end(); ++it) {
    if (it.key().rfind(arch + ".", 0) != 0) continue;
    ASSERT_TRUE(ours->gguf.metadata.contains(it.key())) << it.key();
    EXPECT_EQ(ours->gguf.metadata[it.key()], it.value()) << it.key();
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfToQ8Test,
                         ::testing::Values("llama", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe"));

// ---------------------------------------------------------------------------
// Logits of quantized models vs transformers run on the same quantized weights.

enum class Oracle {
  kQ8_0,  // reference.json "cases_q8_0": transformers on the weights of model-q8_0.gguf
  kQ4_0,  // quant/logits_q4_0_<model>.f32: transformers on gguf's Q4_0 round trip of the weights
  kF32,   // reference.json "cases": transformers at f32 (for re-quantized inputs, no exact oracle)
};

struct LogitsCase {
  std::string model;  // fixture folder
  std::string input;  // "hf" or a GGUF file name
  std::string type;   // q8_0 | q4_0
  Oracle oracle;
  double max_abs_diff;  // largest |logit - oracle| (kQ8_0, kQ4_0)
  double max_relative_error;  // ||logits - oracle|| / ||oracle|| (kF32)
};

void PrintTo(const LogitsCase& c, std::ostream* os) { *os << c.model << "/" << c.input << " " << c.type; }

class QuantizedLogitsTest : public ::testing::TestWithParam<LogitsCase> {};

TEST_P(QuantizedLogitsTest, MatchTransformersOnTheSameWeights) {
  const LogitsCase& c = GetParam();
  TempDir dir;
  const std::string out = dir.File("model.gguf");
  const auto run = RunTetra("quantize -m " + Fixture("models/" + c.model + "/" + c.input) + " -o " + out +
                            " --type " + c.type + " -t 2");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto loaded = LoadModel(out);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  Model& model = **loaded;
  const nlohmann::json reference = ReadJson(Fixture("models/" + c.model + "/reference.json"));
  const int64_t vocab = model.config().vocab_size;
  std::vector<float> q4_0_logits;
  if (c.oracle == Oracle::kQ4_0) {
    const std::vector<uint8_t> bytes = ReadBytes(Fixture("quant/logits_q4_0_" + c.model + ".f32"));
    q4_0_logits.resize(bytes.size() / 4);
    std::memcpy(q4_0_logits.data(), bytes.data(), bytes.size());
  }
  ThreadPool pool(2);
  double error_sq = 0, norm_sq = 0, max_abs_diff = 0;
  size_t oracle_row = 0;
  for (const auto& ref : reference[c.oracle == Oracle::kQ8_0 ? "cases_q8_0" : "cases"]) {
    const std::vector<int32_t> prompt = ref["prompt_ids"].get<std::vector<int32_t>>();
    const std::vector<float> logits = ForwardAllLogits(model, prompt, pool);
    for (size_t t = 0; t < prompt.size(); ++t, ++oracle_row) {
      std::vector<float> expected;
      if (c.oracle == Oracle::kQ4_0) {
        ASSERT_LE((oracle_row + 1) * vocab, q4_0_logits.size());
        expected.assign(q4_0_logits.begin() + oracle_row * vocab, q4_0_logits.begin() + (oracle_row + 1) * vocab);
      } else {
        expected = ref["logits"][t].get<std::vector<float>>();
      }
      for (int64_t i = 0; i < vocab; ++i) {
        const double d = logits[t * vocab + i] - expected[i];
        error_sq += d * d;
        norm_sq += static_cast<double>(expected[i]) * expected[i];
        max_abs_diff = std::max(max_abs_diff, std::abs(d));
      }
    }
  }
  const double relative_error = std::sqrt(error_sq / norm_sq);
  std::printf("[ quant ] %s/%s %s: max |logit diff| %.3g, relative error %.3g\n", c.model.c_str(),
              c.input.c_str(), c.type.c_str(), max_abs_diff, relative_error);
  if (c.oracle == Oracle::kF32) {
    EXPECT_LE(relative_error, c.max_relative_error);
  } else {
    EXPECT_LE(max_abs_diff, c.max_abs_diff);
  }
}

// Same-weights oracles: bounds as tests/model/reference_test.cc's 1e-4 (float
// summation order differs). qwen2_moe's ffn_down_exps rows (48) are not a
// multiple of 32: the converter stored them F16, tetra keeps F32, so its q8_0
// bound covers that rounding. The re-quantized q8_0 -> q4_0 bound is the
// measured 0.24 with margin.
INSTANTIATE_TEST_SUITE_P(
    Fixtures, QuantizedLogitsTest,
    ::testing::Values(LogitsCase{"llama", "hf", "q8_0", Oracle::kQ8_0, 1e-4, 0},
                      LogitsCase{"llama", "hf", "q4_0", Oracle::kQ4_0, 1e-4, 0},
                      LogitsCase{"mixtral", "hf", "q8_0", Oracle::kQ8_0, 1e-4, 0},
                      LogitsCase{"mixtral", "hf", "q4_0", Oracle::kQ4_0, 1e-4, 0},
                      LogitsCase{"qwen2_moe", "hf", "q8_0", Oracle::kQ8_0, 2e-3, 0},
                      LogitsCase{"qwen2_moe", "hf", "q4_0", Oracle::kQ4_0, 1e-4, 0},
                      LogitsCase{"qwen3_moe", "hf", "q4_0", Oracle::kQ4_0, 1e-4, 0},
                      LogitsCase{"qwen3_moe", "hf", "q8_0", Oracle::kQ8_0, 1e-4, 0},
                      LogitsCase{"llama", "model-f32.gguf", "q8_0", Oracle::kQ8_0, 1e-4, 0},
                      LogitsCase{"llama", "model-f32.gguf", "q4_0", Oracle::kQ4_0, 1e-4, 0},
                      LogitsCase{"qwen3", "model-f32.gguf", "q4_0", Oracle::kQ4_0, 1e-4, 0},
                      LogitsCase{"qwen2", "model-q8_0.gguf", "q4_0", Oracle::kF32, 0, 0.5}),
    [](const ::testing::TestParamInfo<LogitsCase>& info) {
      std::string name = info.param.model + "_" + info.param.input + "_" + info.param.type;
      for (char& ch : name) {
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return name;
    });

// ---------------------------------------------------------------------------
// GGUF input: metadata and already-quantized tensors copied as they are.

TEST(QuantizeGgufTest, CopiesMetadataAndTargetTypedTensors) {
  TempDir dir;
  const std::string in = Fixture("models/qwen2_moe/model-q8_0.gguf");
  const std::string out = dir.File("out.gguf");
  const auto run = RunTetra("quantize -m " + in + " -o " + out + " --type q8_0");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto ours = Parse(out);
  auto input = Parse(in);
  ASSERT_TRUE(ours && input);
  EXPECT_EQ(ours->gguf.metadata, input->gguf.metadata);  // file_type already MOSTLY_Q8_0
  for (auto it = input->gguf.metadata.begin(); it != input->gguf.metadata.end(); ++it) {
    EXPECT_EQ(ours->gguf.metadata_types.at(it.key()).type, input->gguf.metadata_types.at(it.key()).type) << it.key();
  }
  ASSERT_EQ(ours->gguf.tensors.size(), input->gguf.tensors.size());
  for (size_t i = 0; i < input->gguf.tensors.size(); ++i) {
    const WeightTensor& a = ours->gguf.tensors[i];
    const WeightTensor& b = input->gguf.tensors[i];
    EXPECT_EQ(a.name, b.name);  // file order kept
    if (b.dtype == DType::kF16) {  // 1-D never; rows not a multiple of 32 stay F16
      EXPECT_EQ(a.dtype, DType::kF16) << a.name;
    }
    if (b.dtype == a.dtype) {
      ASSERT_EQ(a.num_bytes, b.num_bytes);
      EXPECT_EQ(std::memcmp(a.data, b.data, a.num_bytes), 0) << a.name;
    }
  }
}

TEST(QuantizeGgufTest, Q4_0KeepsEmbeddingsInQ8_0AndSetsFileType) {
  TempDir dir;
  const std::string out = dir.File("out.gguf");
  const auto run = RunTetra("quantize -m " + Fixture("models/llama/model-f32.gguf") + " -o " + out);  // default q4_0
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto ours = Parse(out);
  ASSERT_TRUE(ours);
  EXPECT_EQ(ours->gguf.metadata["general.file_type"], 2);  // LLAMA_FTYPE_MOSTLY_Q4_0
  for (const WeightTensor& t : ours->gguf.tensors) {
    if (t.name == "token_embd.weight" || t.name == "output.weight") {
      EXPECT_EQ(t.dtype, DType::kQ8_0) << t.name;
    } else if (t.shape.size() == 1) {
      EXPECT_EQ(t.dtype, DType::kF32) << t.name;
    } else {
      EXPECT_EQ(t.dtype, DType::kQ4_0) << t.name;
    }
  }
  const auto info = RunTetra("info -m " + out);
  ASSERT_EQ(info.exit_code, 0) << info.output;
  EXPECT_NE(info.output.find("format:          GGUF v3"), std::string::npos) << info.output;
  EXPECT_NE(info.output.find("architecture:    llama"), std::string::npos) << info.output;
  EXPECT_NE(info.output.find("Q4_0 x21"), std::string::npos) << info.output;
  EXPECT_NE(info.output.find("chat template:   yes"), std::string::npos) << info.output;
}

TEST(QuantizeGgufTest, HfTokenizerSurvivesTheConversion) {
  TempDir dir;
  const std::string out = dir.File("out.gguf");
  const std::string hf = Fixture("models/qwen3/hf");
  ASSERT_EQ(RunTetra("quantize -m " + hf + " -o " + out).exit_code, 0);
  const std::string prompt = "'<|im_start|>user\nHello, wörld 123!<|im_end|>'";
  const auto from_hf = RunTetra("tokenize --ids -m " + hf + " -p " + prompt);
  const auto from_gguf = RunTetra("tokenize --ids -m " + out + " -p " + prompt);
  ASSERT_EQ(from_hf.exit_code, 0) << from_hf.output;
  EXPECT_EQ(from_gguf.output, from_hf.output);
}

// ---------------------------------------------------------------------------
// Errors.

TEST(QuantizeErrorsTest, BadFlagsAndInputsExitNonZeroWithAMessage) {
  TempDir dir;
  const std::string out = dir.File("out.gguf");
  const std::string model = Fixture("models/llama/model-f32.gguf");
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"quantize -m " + model + " -o " + out + " --type q5_k", "--type 'q5_k' is not supported (q4_0 or q8_0)"},
      {"quantize -m /nonexistent/model.gguf -o " + out, "/nonexistent/model.gguf"},
      {"quantize -m " + model + " -o /nonexistent_dir_for_tetra/out.gguf", "cannot create temporary file"},
      {"quantize -m " + model + " -o " + dir.File(""), "is a directory"},
      {"quantize -m " + Fixture("quant/writer_reference.gguf") + " -o " + out, "architecture 'tetra-test'"},
      {"quantize -o " + out, "--model is required"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.args);
    const auto run = RunTetra(c.args);
    EXPECT_NE(run.exit_code, 0) << run.output;
    EXPECT_NE(run.output.find(c.message), std::string::npos) << run.output;
  }
  EXPECT_EQ(dir.NumFiles(), 0u);  // nothing half-written
}

}  // namespace
}  // namespace tetra
