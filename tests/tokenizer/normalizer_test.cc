// tokenizer.json normalizers against the HF `tokenizers` library, recorded by
// tools/fixtures/make_tokenizer_fixtures.py:
//  - normalizers.expected.json: for NFC/NFD/NFKC/NFKD/Lowercase/StripAccents
//    every code point the library changes (with its output; every other code
//    point must stay as it is), and whole strings through every normalizer
//    kind and Sequences of them;
//  - qwen2-nfc: a byte-level BPE in Qwen2's tokenizer.json layout (NFC, the
//    Qwen2 split regex, chatml tokens, a "normalized" added token) through
//    FromHfJson; qwen2-nfkc and llama-spm-legacy: the same base files with the
//    normalizer the expected file names ("hf_patch").
#include <gtest/gtest.h>

#include <filesystem>

#include "test_support.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/unicode_text.h"

namespace tetra {
namespace {

using tokenizer_internal::Normalizer;

const nlohmann::json& NormalizerFixture() {
  static const nlohmann::json* fixture = new nlohmann::json(
      nlohmann::json::parse(testing::ReadFileBytes(testing::FixtureDir() + "/normalizers.expected.json")));
  return *fixture;
}

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    lines.push_back(text.substr(start, end - start));
  }
  lines.push_back(text.substr(start));
  return lines;
}

std::string Utf8(uint32_t codepoint) {
  std::string out;
  tokenizer_internal::AppendUtf8(codepoint, &out);
  return out;
}

class SingleCharTableTest : public ::testing::TestWithParam<std::string> {};

// Every code point (but surrogates, Hangul syllables and '\n', the separator).
// The library's tables come from several Unicode versions (normalization and
// categories ~Unicode 11, case mapping from Rust's std, Unicode 16) and
// utf8proc has its own (15.0), so characters assigned in between differ: one
// side knows the character and changes it, the other leaves it as it is. Those
// version gaps are counted and bounded; any other difference fails.
constexpr int kMaxVersionGapsPerForm = 400;

TEST_P(SingleCharTableTest, EveryCodePointMatchesTheLibrary) {
  const nlohmann::json& table = NormalizerFixture()["tables"][GetParam()];
  ASSERT_TRUE(table.is_object()) << GetParam();
  auto normalizer = Normalizer::FromJson(table["spec"]);
  ASSERT_TRUE(normalizer.ok()) << normalizer.status().message();
  std::vector<std::string> inputs = SplitLines(table["inputs"]), outputs = SplitLines(table["outputs"]);
  ASSERT_EQ(inputs.size(), outputs.size());
  ASSERT_GT(inputs.size(), 500u);
  std::unordered_map<std::string, std::string> changed;
  for (size_t i = 0; i < inputs.size(); ++i) changed.emplace(inputs[i], outputs[i]);
  int mismatches = 0, version_gaps = 0, checked = 0;
  for (uint32_t c = 0; c < 0x110000; ++c) {
    if ((c >= 0xD800 && c <= 0xDFFF) || (c >= 0xAC00 && c <= 0xD7A3) || c == '\n') continue;
    const std::string input = Utf8(c);
    auto it = changed.find(input);
    const std::string& expected = it != changed.end() ? it->second : input;
    std::string got = (*normalizer)->Normalize(input);
    ++checked;
    if (got == expected) continue;
    if (expected == input || got == input) {
      ++version_gaps;
      continue;
    }
    if (++mismatches <= 10) {
      ADD_FAILURE() << GetParam() << fmt::format(" U+{:04X}", c) << ": expected '" << expected << "' got '" << got
                    << "'";
    }
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_LE(version_gaps, kMaxVersionGapsPerForm);
  std::printf("[ normalizer ] %-12s %7d code points, %5zu changed by the library, %d mismatches, %d version gaps\n",
              GetParam().c_str(), checked, changed.size(), mismatches, version_gaps);
}

INSTANTIATE_TEST_SUITE_P(Forms, SingleCharTableTest,
                         ::testing::Values("NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents"));

TEST(NormalizerTest, StringsMatchTheLibrary) {
  int passed = 0, total = 0;
  for (const auto& group : NormalizerFixture()["strings"]) {
    auto normalizer = Normalizer::FromJson(group["spec"]);
    ASSERT_TRUE(normalizer.ok()) << group["spec"].dump() << ": " << normalizer.status().message();
    for (const auto& item : group["cases"]) {
      const std::string text = item[0], expected = item[1];
      std::string got = (*normalizer)->Normalize(text);
      ++total;
      passed += got == expected;
      EXPECT_EQ(got, expected) << group["spec"].dump() << " on '" << text << "'";
    }
  }
  EXPECT_GT(total, 300);
  std::printf("[ normalizer ] strings: %d / %d match\n", passed, total);
}

TEST(NormalizerTest, NullAndEmptySequenceChangeNothing) {
  for (const char* spec : {"null", R"({"type": "Sequence", "normalizers": []})"}) {
    auto normalizer = Normalizer::FromJson(nlohmann::json::parse(spec));
    ASSERT_TRUE(normalizer.ok()) << normalizer.status().message();
    EXPECT_TRUE((*normalizer)->is_identity());
    EXPECT_EQ((*normalizer)->Normalize("Cafe\xCC\x81  X"), "Cafe\xCC\x81  X");
  }
}

// Invalid UTF-8 cannot reach the library (Rust strings); ours keeps the bytes
// and normalizes the valid text around them, so byte-level BPE still round-trips.
TEST(NormalizerTest, InvalidUtf8BytesPassThrough) {
  auto nfc = Normalizer::FromJson({{"type", "NFC"}});
  ASSERT_TRUE(nfc.ok());
  auto nfc_of = [&](std::string_view s) { return (*nfc)->Normalize(s); };
  const std::string valid_a = "Cafe\xCC\x81", valid_b = "\xE1\x84\x80\xE1\x85\xA1";  // é decomposed; jamo
  const std::string text = valid_a + "\xFF" + valid_b + "\xE2\x82";                 // ends in a cut character
  EXPECT_EQ(nfc_of(text), nfc_of(valid_a) + "\xFF" + nfc_of(valid_b) + "\xE2\x82");
  EXPECT_NE(nfc_of(valid_a), valid_a);
  auto lower = Normalizer::FromJson({{"type", "Lowercase"}});
  ASSERT_TRUE(lower.ok());
  EXPECT_EQ((*lower)->Normalize("AB\xC0Z\x80"), "ab\xC0z\x80");
  auto strip = Normalizer::FromJson({{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}});
  ASSERT_TRUE(strip.ok());
  EXPECT_EQ((*strip)->Normalize("  \xFF x \xFF  "), "\xFF x \xFF");
  auto regex =
      Normalizer::FromJson(nlohmann::json::parse(R"({"type":"Replace","pattern":{"Regex":"\\s+"},"content":"_"})"));
  ASSERT_TRUE(regex.ok());
  EXPECT_EQ((*regex)->Normalize("a \xFF  b"), "a_\xFF_b");
}

TEST(NormalizerTest, BadSpecsGiveErrorsNamingTheProblem) {
  struct BadSpec {
    const char* json;
    const char* message_part;
  };
  for (const BadSpec& bad : {
           BadSpec{R"({"type": "Precompiled", "precompiled_charsmap": ""})", "'Precompiled' is not supported"},
           BadSpec{R"({"type": "BertNormalizer"})", "'BertNormalizer' is not supported"},
           BadSpec{R"({"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Nmt"}]})", "'Nmt'"},
           BadSpec{R"({"type": "Sequence"})", "\"normalizers\" must be an array"},
           BadSpec{R"({"normalizers": []})", "has no \"type\""},
           BadSpec{R"([1, 2])", "has no \"type\""},
           BadSpec{R"({"type": "Replace", "pattern": {"Regex": "(a"}, "content": ""})", "regex '(a' does not compile"},
           BadSpec{R"({"type": "Replace", "pattern": {"String": ""}, "content": "x"})", "String pattern is empty"},
           BadSpec{R"({"type": "Replace", "pattern": "a", "content": "x"})", "\"pattern\" must be"},
           BadSpec{R"({"type": "Replace", "pattern": {"String": "a"}})", "\"content\" must be a string"},
           BadSpec{R"({"type": "Prepend", "prepend": 3})", "\"prepend\" must be a string"},
           BadSpec{R"({"type": "Strip", "strip_left": true})", "\"strip_right\" must be a boolean"},
       }) {
    auto normalizer = Normalizer::FromJson(nlohmann::json::parse(bad.json));
    ASSERT_FALSE(normalizer.ok()) << bad.json;
    EXPECT_NE(normalizer.status().message().find(bad.message_part), std::string::npos)
        << bad.json << " -> " << normalizer.status().message();
  }
}

// A tokenizer.json: the committed one, or a base one with the keys of the
// expected file's "hf_patch" replaced, written to a temporary file.
std::string TokenizerJsonFor(const std::string& family, const nlohmann::json& expected) {
  if (!expected.contains("hf_patch")) return testing::FixtureDir() + "/" + family + "/tokenizer.json";
  const nlohmann::json& patch = expected["hf_patch"];
  nlohmann::json root = nlohmann::json::parse(
      testing::ReadFileBytes(testing::FixtureDir() + "/" + patch["base"].get<std::string>() + "/tokenizer.json"));
  for (const auto& [key, value] : patch.items()) {
    if (key != "base") root[key] = value;
  }
  const std::string path = ::testing::TempDir() + "/normalizer_test_" + family + ".tokenizer.json";
  std::ofstream(path, std::ios::binary) << root.dump();
  return path;
}

class HfNormalizedTokenizerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfNormalizedTokenizerTest, MatchesHfTokenizers) {
  const std::string& family = GetParam();
  nlohmann::json expected =
      nlohmann::json::parse(testing::ReadFileBytes(testing::FixtureDir() + "/" + family + ".expected.json"));
  const std::string config_dir =
      testing::FixtureDir() + "/" + (expected.contains("hf_patch") ? expected["hf_patch"]["base"].get<std::string>()
                                                                   : family);
  nlohmann::json config = nlohmann::json::parse(testing::ReadFileBytes(config_dir + "/tokenizer_config.json"));
  auto tokenizer = Tokenizer::FromHfJson(TokenizerJsonFor(family, expected), config);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().message();
  const Tokenizer& tok = **tokenizer;
  int passed = 0, total = 0;
  auto check = [&](bool ok) { ++total; passed += ok; return ok; };
  for (const auto& item : expected["cases"]) {
    testing::CheckRecordedCase(tok, item, check);
  }
  EXPECT_GT(total, 100);
  std::printf("[ normalizer ] %-16s hf   %4d / %4d checks pass\n", family.c_str(), passed, total);
}

INSTANTIATE_TEST_SUITE_P(Families, HfNormalizedTokenizerTest,
                         ::testing::Values("qwen2-nfc", "qwen2-nfkc", "llama-spm-legacy"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& ch : name) {
                             if (ch == '-') ch = '_';
                           }
                           return name;
                         });

// The decomposed "cafe\u0301" added token is "normalized": it is matched by its
// NFC form in normalized text, whichever form the input uses.
TEST(HfNormalizedTokenizerTest, NormalizedAddedTokenMatchesEitherForm) {
  nlohmann::json config = nlohmann::json::parse(
      testing::ReadFileBytes(testing::FixtureDir() + "/qwen2-nfc/tokenizer_config.json"));
  auto tokenizer = Tokenizer::FromHfJson(testing::FixtureDir() + "/qwen2-nfc/tokenizer.json", config);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().message();
  std::optional<int32_t> cafe = (*tokenizer)->TokenId("cafe\xCC\x81");
  ASSERT_TRUE(cafe.has_value());
  EXPECT_EQ((*tokenizer)->Encode("cafe\xCC\x81", false, false), std::vector<int32_t>{*cafe});
  EXPECT_EQ((*tokenizer)->Encode("caf\xC3\xA9", false, false), std::vector<int32_t>{*cafe});
}

TEST(HfNormalizedTokenizerTest, UnsupportedNormalizerNamesFileAndType) {
  nlohmann::json root =
      nlohmann::json::parse(testing::ReadFileBytes(testing::FixtureDir() + "/qwen2-nfc/tokenizer.json"));
  root["normalizer"] = {{"type", "Sequence"},
                        {"normalizers", {{{"type", "NFC"}}, {{"type", "Precompiled"}, {"precompiled_charsmap", ""}}}}};
  const std::string path = ::testing::TempDir() + "/normalizer_test_bad.tokenizer.json";
  std::ofstream(path, std::ios::binary) << root.dump();
  auto tokenizer = Tokenizer::FromHfJson(path, nlohmann::json());
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_NE(tokenizer.status().message().find(path), std::string::npos) << tokenizer.status().message();
  EXPECT_NE(tokenizer.status().message().find("'Precompiled' is not supported"), std::string::npos)
      << tokenizer.status().message();
}

}  // namespace
}  // namespace tetra
