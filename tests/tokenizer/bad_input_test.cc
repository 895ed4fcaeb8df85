// Bad tokenizer metadata and files give a Status naming the key/file and the
// problem; odd text (invalid UTF-8, huge runs) encodes without crashing.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_support.h"
#include "tokenizer/pre_tokenizer.h"

namespace tetra {
namespace {

using Json = nlohmann::ordered_json;

Json SmallByteLevel() {
  Json m;
  m["tokenizer.ggml.model"] = "gpt2";
  m["tokenizer.ggml.pre"] = "gpt-2";
  Json tokens = Json::array();
  for (char c = 'a'; c <= 'c'; ++c) tokens.push_back(std::string(1, c));
  tokens.push_back("ab");
  m["tokenizer.ggml.tokens"] = tokens;
  m["tokenizer.ggml.merges"] = Json::array({"a b"});
  return m;
}

void ExpectError(const Json& metadata, const std::string& fragment) {
  auto result = Tokenizer::FromGguf(metadata);
  ASSERT_FALSE(result.ok()) << "expected an error containing '" << fragment << "'";
  EXPECT_NE(result.status().message().find(fragment), std::string::npos) << result.status().message();
}

TEST(TokenizerBadInputTest, SmallByteLevelModelWorks) {
  auto tokenizer = Tokenizer::FromGguf(SmallByteLevel());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().message();
  EXPECT_EQ((*tokenizer)->Encode("abc", false, false), (std::vector<int32_t>{3, 2}));
}

TEST(TokenizerBadInputTest, GgufMetadataErrorsNameTheKey) {
  Json m = SmallByteLevel();
  m.erase("tokenizer.ggml.model");
  ExpectError(m, "tokenizer.ggml.model: missing");
  m = SmallByteLevel();
  m["tokenizer.ggml.model"] = "rwkv";
  ExpectError(m, "unsupported tokenizer model 'rwkv'");
  m = SmallByteLevel();
  m["tokenizer.ggml.tokens"] = 5;
  ExpectError(m, "tokenizer.ggml.tokens: expected an array");
  m = SmallByteLevel();
  m["tokenizer.ggml.tokens"][1] = 7;
  ExpectError(m, "tokenizer.ggml.tokens[1]");
  m = SmallByteLevel();
  m["tokenizer.ggml.merges"].push_back("a z");
  ExpectError(m, "tokenizer.ggml.merges[1]");
  m = SmallByteLevel();
  m["tokenizer.ggml.merges"].push_back("nospace");
  ExpectError(m, "tokenizer.ggml.merges[1]");
  m = SmallByteLevel();
  m["tokenizer.ggml.token_type"] = Json::array({1, 1});
  ExpectError(m, "tokenizer.ggml.token_type: 2 entries for 4 tokens");
  m = SmallByteLevel();
  m["tokenizer.ggml.token_type"] = Json::array({1, 1, 9, 1});
  ExpectError(m, "tokenizer.ggml.token_type[2]");
  m = SmallByteLevel();
  m["tokenizer.ggml.eos_token_id"] = 99;
  ExpectError(m, "eos token id 99 outside the vocabulary");
  m = SmallByteLevel();
  m["tokenizer.ggml.bos_token_id"] = -1;
  ExpectError(m, "tokenizer.ggml.bos_token_id");
  m = SmallByteLevel();
  m["tokenizer.ggml.pre"] = "no-such-family";
  ExpectError(m, "unknown pre-tokenizer family 'no-such-family'");
  m = SmallByteLevel();
  m["tokenizer.ggml.model"] = "llama";
  ExpectError(m, "tokenizer.ggml.scores: missing");
  m["tokenizer.ggml.scores"] = Json::array({0.0, 1.0});
  ExpectError(m, "tokenizer.ggml.scores: 2 entries for 4 tokens");
}

TEST(TokenizerBadInputTest, HfJsonErrorsNameTheFile) {
  const std::string dir = ::testing::TempDir();
  auto write = [&](const std::string& name, const std::string& text) {
    std::string path = dir + "/" + name;
    std::ofstream(path) << text;
    return path;
  };
  auto expect_error = [](const std::string& path, const std::string& fragment) {
    auto result = Tokenizer::FromHfJson(path, nullptr);
    ASSERT_FALSE(result.ok());
    EXPECT_NE(result.status().message().find(fragment), std::string::npos) << result.status().message();
    EXPECT_NE(result.status().message().find(path), std::string::npos) << result.status().message();
  };
  expect_error(dir + "/does-not-exist.json", "cannot open");
  expect_error(write("truncated.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {"), "not valid JSON");
  expect_error(write("wordpiece.json", R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})"),
               "model type 'WordPiece' is not supported");
  expect_error(write("bad_merge.json",
                     R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]},
                         "pre_tokenizer": {"type": "ByteLevel"}})"),
               "model.merges[0]");
  expect_error(write("bad_regex.json",
                     R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                         "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                           {"type": "Split", "pattern": {"Regex": "[z-a]"}, "behavior": "Isolated"},
                           {"type": "ByteLevel"}]}})"),
               "range out of order");
  expect_error(write("bad_added.json",
                     R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                         "added_tokens": [{"id": -4, "content": "x"}]})"),
               "added_tokens entry");
}

TEST(TokenizerBadInputTest, OddTextEncodesAndRoundTrips) {
  for (const char* family : {"gpt-2", "llama-spm", "deepseek-llm", "baichuan"}) {
    auto tokenizer = testing::LoadGgufTokenizer(testing::VocabDir() + "/ggml-vocab-" + family + ".gguf");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().message();
    const Tokenizer& tok = **tokenizer;
    // Invalid UTF-8 goes through byte tokens and comes back as U+FFFD.
    std::string invalid = "ok \xFF\xC3 \xE2\x82 end";
    std::vector<int32_t> ids = tok.Encode(invalid, false, true);
    EXPECT_FALSE(ids.empty()) << family;
    EXPECT_NE(tok.Decode(ids, false).find("\xEF\xBF\xBD"), std::string::npos) << family;
    // Long runs (one regex piece, one SentencePiece word) finish and round-trip.
    std::string runs = std::string(20000, ' ') + std::string(20000, '7') + std::string(5000, 'x') + "\n\n\n";
    ids = tok.Encode(runs, false, false);
    std::string decoded = tok.Decode(ids, false);
    EXPECT_EQ(decoded, runs) << family;
    // Out-of-range ids decode to nothing rather than reading out of bounds.
    std::vector<int32_t> bad = {-5, tok.vocab_size(), 1 << 30};
    EXPECT_EQ(tok.Decode(bad, false), "");
  }
}

}  // namespace
}  // namespace tetra
