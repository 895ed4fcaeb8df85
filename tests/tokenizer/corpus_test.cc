// Our own corpus (English, code, CJK, emoji, combining marks, whitespace runs,
// special tokens, long runs) against ids and decodes recorded from the HF
// `tokenizers` library by tools/fixtures/make_tokenizer_fixtures.py. Each
// family is checked through every loader that can read it (FromHfJson of the
// committed tokenizer.json, FromGguf of the vocab GGUF in tests/fixtures/vocab),
// and every decode is also streamed token by token. llama-spm is checked twice: the
// tokenizer.json transformers 5 writes (Metaspace, prefix only on the first
// fragment and only when missing) through FromHfJson, and the original legacy
// layout (Prepend normalizer: SentencePiece's behaviour) through FromGguf.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_support.h"
#include "tokenizer/unicode_text.h"

namespace tetra {
namespace {

struct CorpusCase {
  std::string family;  // tests/fixtures/tokenizer/<family>.expected.json
  std::string loader;  // "gguf" (tests/fixtures/vocab GGUF) or "hf" (committed tokenizer.json)
  friend void PrintTo(const CorpusCase& c, std::ostream* os) { *os << c.family << "/" << c.loader; }
};

StatusOr<std::unique_ptr<Tokenizer>> Load(const CorpusCase& c) {
  if (c.loader == "gguf") {
    std::string gguf = c.family == "llama-spm-legacy" ? "llama-spm" : c.family;
    return testing::LoadGgufTokenizer(testing::VocabDir() + "/ggml-vocab-" + gguf + ".gguf");
  }
  const std::string dir = testing::FixtureDir() + "/" + c.family;
  nlohmann::json config = nlohmann::json::parse(testing::ReadFileBytes(dir + "/tokenizer_config.json"));
  return Tokenizer::FromHfJson(dir + "/tokenizer.json", config);
}

bool IsValidUtf8(const std::string& text) {
  return tokenizer_internal::ToValidUtf8(text) == text;
}

class CorpusTest : public ::testing::TestWithParam<CorpusCase> {};

TEST_P(CorpusTest, MatchesHfTokenizers) {
  const CorpusCase& c = GetParam();
  auto tokenizer = Load(c);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().message();
  const Tokenizer& tok = **tokenizer;
  nlohmann::json expected =
      nlohmann::json::parse(testing::ReadFileBytes(testing::FixtureDir() + "/" + c.family + ".expected.json"));
  int passed = 0, total = 0;
  auto check = [&](bool ok) { ++total; passed += ok; return ok; };
  for (const auto& item : expected["cases"]) {
    const std::string text = item["text"];
    testing::CheckRecordedCase(tok, item, check);
    const auto plain = item["ids_plain"].get<std::vector<int32_t>>();
    const auto special = item["ids_special"].get<std::vector<int32_t>>();
    // Streaming: the chunks are valid UTF-8 and add up to the full decode.
    for (bool skip : {false, true}) {
      StreamingDecoder stream(tok, skip);
      std::string joined;
      bool chunks_valid = true;
      for (int32_t id : plain) {
        std::string chunk = stream.Push(id);
        chunks_valid = chunks_valid && IsValidUtf8(chunk);
        joined += chunk;
      }
      std::string rest = stream.Flush();
      chunks_valid = chunks_valid && IsValidUtf8(rest);
      joined += rest;
      EXPECT_TRUE(check(chunks_valid)) << "a streamed chunk is not valid UTF-8 for '" << text << "'";
      EXPECT_TRUE(check(joined == tok.Decode(plain, skip))) << "stream != decode for '" << text << "'";
    }
  }
  std::printf("[ corpus ] %-16s %-4s %4d / %4d checks pass\n", c.family.c_str(), c.loader.c_str(), passed,
              total);
}

INSTANTIATE_TEST_SUITE_P(Families, CorpusTest,
                         ::testing::Values(CorpusCase{"llama-spm", "hf"}, CorpusCase{"llama-spm-legacy", "gguf"},
                                           CorpusCase{"gpt-2", "gguf"}, CorpusCase{"deepseek-coder", "gguf"},
                                           CorpusCase{"falcon", "gguf"}, CorpusCase{"smollm2", "hf"}),
                         [](const ::testing::TestParamInfo<CorpusCase>& info) {
                           std::string name = info.param.family + "_" + info.param.loader;
                           for (char& ch : name) {
                             if (ch == '-') ch = '_';
                           }
                           return name;
                         });

// Characters split across byte tokens: every chunk must still be whole characters.
TEST(StreamingDecoderTest, HoldsBackPartialCharacters) {
  auto tokenizer = testing::LoadGgufTokenizer(testing::VocabDir() + "/ggml-vocab-gpt-2.gguf");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().message();
  const std::string text = "🦙🚀 你好世界 👨‍👩‍👧‍👦 é";
  std::vector<int32_t> ids = (*tokenizer)->Encode(text, false, false);
  ASSERT_GT(ids.size(), 10u);  // the emoji take several byte tokens each
  StreamingDecoder stream(**tokenizer, true);
  std::string joined;
  int held_back = 0;
  for (int32_t id : ids) {
    std::string chunk = stream.Push(id);
    EXPECT_TRUE(IsValidUtf8(chunk));
    held_back += chunk.empty();
    joined += chunk;
  }
  joined += stream.Flush();
  EXPECT_EQ(joined, text);
  EXPECT_GT(held_back, 0);
}

}  // namespace
}  // namespace tetra
