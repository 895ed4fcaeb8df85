// The tetra binary as a user runs it: exit codes, one-line errors, and the
// default model's answer.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <string>

#include "../model/test_paths.h"
#include "run_tetra.h"

namespace tetra {
namespace {

using testing::CountLines;
using testing::RunResult;
using testing::RunTetra;

TEST(CliTest, UnknownFlagFailsWithOneLine) {
  RunResult r = RunTetra("generate -p hi --no-such-flag");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(CountLines(r.output), 1) << r.output;
  EXPECT_NE(r.output.find("--no-such-flag"), std::string::npos) << r.output;
}

TEST(CliTest, UnknownSubcommandFails) {
  RunResult r = RunTetra("frobnicate");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(r.output.empty());
}

TEST(CliTest, MissingModelFileFailsNamingIt) {
  RunResult r = RunTetra("generate -m /nonexistent/model.gguf -p hi -n 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(CountLines(r.output), 1) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/model.gguf"), std::string::npos) << r.output;
}

TEST(CliTest, BadValueFails) {
  RunResult r = RunTetra("generate -p hi -n -5");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(CountLines(r.output), 1) << r.output;
  r = RunTetra("generate -p hi --temperature abc");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(CountLines(r.output), 1) << r.output;
  for (const char* flags : {"--kv-cache int4", "--kv-block 0", "--attention-math int4"}) {
    r = RunTetra(std::string("generate -p hi ") + flags);
    EXPECT_NE(r.exit_code, 0) << flags;
    EXPECT_EQ(CountLines(r.output), 1) << r.output;
    EXPECT_NE(r.output.find(std::string(flags).substr(0, 10)), std::string::npos) << r.output;
  }
}

// Every KV cache type runs a fixture end to end; blocks of 4 tokens so the
// prompt and the generated tokens fill (and quantize) several blocks.
TEST(CliTest, EveryKvCacheTypeGenerates) {
  const std::string model = testing::FixturePath("models/qwen3_moe/model-f32.gguf");
  for (const char* kv : {"fp8", "bf16", "f32"}) {
    RunResult r = RunTetra("generate -m " + model + " -p 'one two three four five six' -n 12 --temperature 0 --kv-block 4 " +
                           "--weights w4a8 --kv-cache " + kv);
    EXPECT_EQ(r.exit_code, 0) << kv << ": " << r.output;
    EXPECT_NE(r.output.find("generation: "), std::string::npos) << kv << ": " << r.output;
  }
  // Both attention maths over full FP8 blocks.
  for (const char* math : {"int8", "f32"}) {
    RunResult r = RunTetra("generate -m " + model + " -p 'one two three four five six' -n 12 --temperature 0 --kv-block 4 " +
                           "--weights w4a8 --kv-cache fp8 --attention-math " + math);
    EXPECT_EQ(r.exit_code, 0) << math << ": " << r.output;
    EXPECT_NE(r.output.find("generation: "), std::string::npos) << math << ": " << r.output;
  }
}

// Every sampling flag on a fixture model: runs, and the same seed gives the same text.
TEST(CliTest, SamplingFlagsGenerateReproducibly) {
  const std::string model = testing::FixturePath("models/qwen3_moe/model-f32.gguf");
  const std::string args = "generate -m " + model +
                           " -p 'one two three' -n 10 --temperature 0.9 --top-k 0 --top-p 0.9 --min-p 0.05 "
                           "--repetition-penalty 1.2 --presence-penalty 0.5 --frequency-penalty -0.5 --seed 11";
  RunResult a = RunTetra(args);
  RunResult b = RunTetra(args);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  auto text = [](const std::string& out) { return out.substr(0, out.find("\nprompt: ")); };
  EXPECT_EQ(text(a.output), text(b.output));
  // Values out of range: one line naming the option or the field.
  for (const char* flags : {"--top-p 0", "--top-p 1.5", "--min-p 2", "--repetition-penalty 0",
                            "--repetition-penalty 11", "--presence-penalty 3", "--frequency-penalty -2.5"}) {
    RunResult r = RunTetra("generate -m " + model + " -p hi -n 2 " + flags);
    EXPECT_NE(r.exit_code, 0) << flags;
    EXPECT_EQ(CountLines(r.output), 1) << flags << ": " << r.output;
    const std::string flag = std::string(flags).substr(2, std::string(flags).find(' ') - 2);  // "top-p"
    std::string field = flag;
    std::replace(field.begin(), field.end(), '-', '_');  // "top_p"
    EXPECT_TRUE(r.output.find(flag) != std::string::npos || r.output.find(field) != std::string::npos)
        << flags << ": " << r.output;
  }
}

TEST(CliTest, TokenizeVocabOnlyGgufPrintsIds) {
  const std::string vocab = testing::FixturePath("vocab/ggml-vocab-gpt-2.gguf");
  RunResult r = RunTetra("tokenize -m " + vocab + " -p 'Hello world' --ids --no-special");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // GPT-2's ids for "Hello" and " world", as the HF tokenizer gives them.
  EXPECT_EQ(r.output, "15496 995\n");
}

TEST(CliTest, DefaultModelKnowsTheCapitalOfFrance) {
  TETRA_REQUIRE_DEFAULT_MODEL_OR_SKIP(testing::DefaultModelPathForTests());
  RunResult r = RunTetra("generate -p 'The capital of France is' -n 8 --temperature 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Paris"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tokens/s"), std::string::npos) << r.output;
}

TEST(CliTest, OversizedRequestFailsWithOneLine) {
  TETRA_REQUIRE_DEFAULT_MODEL_OR_SKIP(testing::DefaultModelPathForTests());
  RunResult r = RunTetra("generate -p 'Hello' -n 1000000");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(CountLines(r.output), 1) << r.output;
  EXPECT_NE(r.output.find("exceeds the model's context of 8192"), std::string::npos) << r.output;
}

TEST(CliTest, PerplexityRunsAndRejectsBadInput) {
  const std::string model = testing::FixturePath("models/qwen3_moe/model-f32.gguf");
  const std::string text = testing::FixturePath("models/qwen3_moe/hf/config.json");  // any text file
  RunResult r = RunTetra("perplexity -m " + model + " -f " + text + " -c 64 --weights w4a8 --kl-vs-reference");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("KL(reference || w4a8+fp8-kv)"), std::string::npos) << r.output;
  r = RunTetra("perplexity -m " + model + " -f /nonexistent/text.txt");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(CountLines(r.output), 1) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/text.txt"), std::string::npos) << r.output;
  r = RunTetra("perplexity -m " + model + " -f " + text + " -c 100000");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(CountLines(r.output), 1) << r.output;
}

TEST(CliTest, ChatAppliesTheTemplate) {
  TETRA_REQUIRE_DEFAULT_MODEL_OR_SKIP(testing::DefaultModelPathForTests());
  // Exact path: the 135M model's W4A8 logits flip this near tie (doc/kernels.md).
  RunResult r = RunTetra("generate --chat -p 'What is the capital of France?' -n 12 --temperature 0 --weights reference");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Paris"), std::string::npos) << r.output;
  // The template's markup is consumed, not echoed.
  EXPECT_EQ(r.output.find("<|im_start|>"), std::string::npos) << r.output;
}

TEST(CliTest, SamplingIsReproducibleWithASeed) {
  TETRA_REQUIRE_DEFAULT_MODEL_OR_SKIP(testing::DefaultModelPathForTests());
  const std::string args = "generate -p 'Once upon a time' -n 12 --temperature 0.9 --top-k 50 --top-p 0.9 --seed 7";
  RunResult a = RunTetra(args);
  RunResult b = RunTetra(args);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  // Compare the text, not the timing line that follows it.
  auto text = [](const std::string& out) { return out.substr(0, out.find("\nprompt: ")); };
  EXPECT_FALSE(text(a.output).empty());
  EXPECT_EQ(text(a.output), text(b.output));
}

TEST(CliTest, InfoDescribesTheDefaultModel) {
  TETRA_REQUIRE_DEFAULT_MODEL_OR_SKIP(testing::DefaultModelPathForTests());
  RunResult r = RunTetra("info");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("architecture:    llama"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Q4_1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("chat template:   yes"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace tetra
