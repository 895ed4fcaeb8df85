// `tetra bench` as a user runs it: the JSON it prints has the documented
// fields with positive figures, the table prints, and bad values fail with one
// line. Never asserts on speed.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "../model/test_paths.h"
#include "run_tetra.h"

namespace tetra {
namespace {

using testing::CountLines;
using testing::RunResult;
using testing::RunTetra;

std::string MoeFixture() { return testing::FixturePath("models/qwen3_moe/model-f32.gguf"); }

TEST(BenchTest, JsonHasPositiveFiguresAndTheFlagsItRan) {
  RunResult r = RunTetra("bench -m " + MoeFixture() + " -p 7 -n 5 -t 1 --batch 3 -r 2 --json", false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(CountLines(r.output), 1) << r.output;  // one JSON object, nothing else on stdout
  const nlohmann::json j = nlohmann::json::parse(r.output, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(j.is_object()) << r.output;
  for (const char* key : {"prefill_tok_s", "decode_tok_s"}) {
    ASSERT_TRUE(j.contains(key) && j[key].is_number()) << key << " in " << r.output;
    EXPECT_GT(j[key].get<double>(), 0.0) << key;
    EXPECT_TRUE(std::isfinite(j[key].get<double>())) << key;
  }
  for (const char* key : {"prefill_tok_s_stddev", "decode_tok_s_stddev"}) {
    ASSERT_TRUE(j.contains(key) && j[key].is_number()) << key;
    EXPECT_GE(j[key].get<double>(), 0.0) << key;
  }
  // The summary is the mean and sample standard deviation of the samples.
  for (const std::string key : {"prefill_tok_s", "decode_tok_s"}) {
    const nlohmann::json& samples = j[key + "_samples"];
    ASSERT_TRUE(samples.is_array()) << key;
    ASSERT_EQ(samples.size(), 2u) << key;
    const double x0 = samples[0].get<double>(), x1 = samples[1].get<double>();
    EXPECT_GT(x0, 0.0);
    EXPECT_GT(x1, 0.0);
    EXPECT_NEAR(j[key].get<double>(), (x0 + x1) / 2, 1e-9 * (x0 + x1)) << key;
    EXPECT_NEAR(j[key + "_stddev"].get<double>(), std::abs(x0 - x1) / std::sqrt(2.0), 1e-9 * (x0 + x1)) << key;
  }
  EXPECT_EQ(j["model"], MoeFixture());
  EXPECT_EQ(j["arch"], "qwen3_moe");  // the fixture's GGUF says qwen3moe, with experts
  EXPECT_EQ(j["threads"], 1);
  EXPECT_EQ(j["p"], 7);
  EXPECT_EQ(j["n"], 5);
  EXPECT_EQ(j["batch"], 3);
  EXPECT_EQ(j["repetitions"], 2);
  ASSERT_TRUE(j["cpu_features"].is_string());
  // Tensor bytes: most of the file, never more than it.
  const auto file_size = static_cast<int64_t>(std::filesystem::file_size(MoeFixture()));
  EXPECT_GT(j["weight_bytes"].get<int64_t>(), file_size / 2);
  EXPECT_LE(j["weight_bytes"].get<int64_t>(), file_size);
  EXPECT_TRUE(j["load_average_1m"].is_number());
}

TEST(BenchTest, TablePrintsBothTests) {
  RunResult r = RunTetra("bench -m " + MoeFixture() + " -p 4 -n 3 -r 1", true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("pp4"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tg3 batch 1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("qwen3_moe"), std::string::npos) << r.output;
}

TEST(BenchTest, DepthRunsWithinTheContext) {
  RunResult r = RunTetra("bench -m " + MoeFixture() + " -p 2 -n 2 -d 500 -r 1 --json", false);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(r.output, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j["depth"], 500);
  EXPECT_GT(j["decode_tok_s"].get<double>(), 0.0);
}

// Each bad value fails with exactly one line naming the flag.
TEST(BenchTest, BadValuesFailWithOneLine) {
  const std::string model = " -m " + MoeFixture();
  const std::pair<std::string, std::string> cases[] = {
      {"bench" + model + " -p 0", "-p"},
      {"bench" + model + " -n 0", "-n"},
      {"bench" + model + " --batch 0", "--batch"},
      {"bench" + model + " -r 0", "-r"},
      {"bench" + model + " -d -1", "-d"},
      {"bench" + model + " -t -2", "-t"},
      {"bench" + model + " -p abc", "-p"},
      // The fixture's context is 512 tokens (qwen3moe.context_length).
      {"bench" + model + " -p 513 -n 1", "context"},
      {"bench" + model + " -p 1 -n 400 -d 200", "context"},
      {"bench -m /nonexistent/model.gguf -p 1 -n 1", "/nonexistent/model.gguf"},
      {"bench" + model + " --no-such-flag", "--no-such-flag"},
  };
  for (const auto& [args, needle] : cases) {
    RunResult r = RunTetra(args, true);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_EQ(CountLines(r.output), 1) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace tetra
