// ChatTemplate against Python jinja2 in transformers' environment. Expected
// strings come from tools/fixtures/make_chat_template_fixtures.py
// (tests/fixtures/chat_templates/expected.json); the real templates are read
// from tests/fixtures/chat_templates/templates/ at run time.
#include "tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

namespace tetra {
namespace {

using Json = nlohmann::ordered_json;

const char* const kTemplatesDir = TETRA_FIXTURES_DIR "/chat_templates/templates";
const char* const kExpectedPath = TETRA_FIXTURES_DIR "/chat_templates/expected.json";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

const Json& Expected() {
  static const Json* expected = [] {
    setenv("TZ", "UTC", 1);  // strftime_now is pinned to a UTC instant in the fixtures
    tzset();
    std::string text = ReadFile(kExpectedPath);
    return new Json(text.empty() ? Json::object() : Json::parse(text));
  }();
  return *expected;
}

ChatTemplateOptions PinnedClock() {
  ChatTemplateOptions options;
  options.now = std::chrono::system_clock::time_point(
      std::chrono::seconds(Expected()["now_epoch_seconds"].get<int64_t>()));
  return options;
}

// Names the first difference so a failure is readable in a long prompt.
std::string DescribeDifference(const std::string& expected, const std::string& actual) {
  size_t i = 0;
  while (i < expected.size() && i < actual.size() && expected[i] == actual[i]) ++i;
  const size_t from = i > 60 ? i - 60 : 0;
  return "first difference at byte " + std::to_string(i) + "\n  expected: ..." +
         Json(expected.substr(from, 160)).dump() + "\n  actual:   ..." + Json(actual.substr(from, 160)).dump();
}

// Checks one render against one recorded jinja2 result; returns "" on a match.
std::string Check(const std::string& source, const Json& context, const Json& result) {
  auto parsed = ChatTemplate::Parse(source);
  const bool expects_error = !result["error"].is_null();
  if (!parsed.ok()) {
    if (expects_error && result.value("phase", "") == "parse") return "";
    return "parse failed: " + parsed.status().message() +
           (expects_error ? " (jinja2: " + result["error"].get<std::string>() + ")" : "");
  }
  auto rendered = parsed->Render(context, PinnedClock());
  if (expects_error) {
    if (rendered.ok()) return "jinja2 raised " + result["error"].get<std::string>() + " but tetra rendered";
    if (result.value("raised", false) && rendered.status().message() != result["message"].get<std::string>()) {
      return "raise_exception message differs: tetra '" + rendered.status().message() + "' vs jinja2 '" +
             result["message"].get<std::string>() + "'";
    }
    return "";
  }
  if (!rendered.ok()) return "tetra failed: " + rendered.status().message();
  const std::string expected = result["output"].get<std::string>();
  if (*rendered != expected) return DescribeDifference(expected, *rendered);
  return "";
}

std::vector<std::string> TemplateNames() {
  std::vector<std::string> names;
  for (const auto& [name, entry] : Expected()["templates"].items()) names.push_back(name);
  return names;
}

std::vector<std::string> EngineCaseNames() {
  std::vector<std::string> names;
  for (const auto& entry : Expected()["engine_cases"]) names.push_back(entry["name"].get<std::string>());
  return names;
}

std::string TestName(const testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

TEST(ChatTemplateFixtures, Present) {
  ASSERT_TRUE(Expected().contains("templates")) << "missing " << kExpectedPath;
  EXPECT_GE(Expected()["templates"].size(), 10u);
  EXPECT_GE(Expected()["engine_cases"].size(), 40u);
}

class RealTemplateTest : public testing::TestWithParam<std::string> {};

TEST_P(RealTemplateTest, MatchesJinja2) {
  const Json& entry = Expected()["templates"][GetParam()];
  const std::string source = ReadFile(std::string(kTemplatesDir) + "/" + GetParam());
  ASSERT_FALSE(source.empty()) << GetParam() << " not found in " << kTemplatesDir;
  for (const auto& [conversation, result] : entry["results"].items()) {
    const std::string problem = Check(source, Expected()["conversations"][conversation], result);
    EXPECT_EQ(problem, "") << GetParam() << " / " << conversation;
  }
}

// Cut and damaged real templates must parse or fail cleanly, never crash or hang.
TEST_P(RealTemplateTest, DamagedCopiesFailCleanly) {
  const std::string source = ReadFile(std::string(kTemplatesDir) + "/" + GetParam());
  ASSERT_FALSE(source.empty()) << GetParam() << " not found in " << kTemplatesDir;
  const Json& context = Expected()["conversations"]["tool_calls"];
  ChatTemplateOptions options = PinnedClock();
  options.max_loop_iterations = 100000;
  for (size_t i = 1; i < 40; ++i) {
    const size_t cut = source.size() * i / 40;
    std::string damaged = source.substr(0, cut);
    std::string swapped = source;
    swapped[cut] = "{}%#|()'\"\n-"[i % 12];
    for (const std::string* variant : {&damaged, &swapped}) {
      auto parsed = ChatTemplate::Parse(*variant);
      if (!parsed.ok()) {
        EXPECT_NE(parsed.status().message().find("line "), std::string::npos) << parsed.status().message();
        continue;
      }
      (void)parsed->Render(context, options);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RealTemplateTest, testing::ValuesIn(TemplateNames()), TestName);

class EngineCaseTest : public testing::TestWithParam<std::string> {};

TEST_P(EngineCaseTest, MatchesJinja2) {
  for (const auto& entry : Expected()["engine_cases"]) {
    if (entry["name"] != GetParam()) continue;
    const std::string problem = Check(entry["template"].get<std::string>(), entry["context"], entry);
    EXPECT_EQ(problem, "") << entry["template"].get<std::string>();
  }
}

INSTANTIATE_TEST_SUITE_P(Inline, EngineCaseTest, testing::ValuesIn(EngineCaseNames()), TestName);

// ---- errors and hostile templates (no oracle needed: each must fail cleanly) ----

TEST(ChatTemplateErrors, SyntaxErrorNamesLineAndColumn) {
  auto parsed = ChatTemplate::Parse("line one\n{% if x %}\n  {{ 1 + }}\n{% endif %}");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("line 3 column"), std::string::npos) << parsed.status().message();
}

TEST(ChatTemplateErrors, UnclosedBlockNamesExpectedTag) {
  auto parsed = ChatTemplate::Parse("{% for m in messages %}{{ m }}");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("endfor"), std::string::npos) << parsed.status().message();
}

TEST(ChatTemplateErrors, RuntimeErrorNamesLine) {
  auto parsed = ChatTemplate::Parse("a\nb\n{{ missing.attribute }}");
  ASSERT_TRUE(parsed.ok());
  auto rendered = parsed->Render(Json::object());
  ASSERT_FALSE(rendered.ok());
  EXPECT_EQ(rendered.status().message(), "chat template line 3: 'missing' is undefined");
}

TEST(ChatTemplateErrors, RaiseExceptionGivesMessage) {
  auto parsed = ChatTemplate::Parse("{{ raise_exception('Only user and assistant roles are supported!') }}");
  ASSERT_TRUE(parsed.ok());
  auto rendered = parsed->Render(Json::object());
  ASSERT_FALSE(rendered.ok());
  EXPECT_EQ(rendered.status().message(), "Only user and assistant roles are supported!");
}

TEST(ChatTemplateErrors, ContextMustBeObject) {
  auto parsed = ChatTemplate::Parse("x");
  ASSERT_TRUE(parsed.ok());
  EXPECT_FALSE(parsed->Render(Json::array()).ok());
}

TEST(ChatTemplateLimits, LoopIterationCap) {
  auto parsed = ChatTemplate::Parse(
      "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
  ASSERT_TRUE(parsed.ok());
  ChatTemplateOptions options;
  options.max_loop_iterations = 1'000'000;
  auto rendered = parsed->Render(Json::object(), options);
  ASSERT_FALSE(rendered.ok());
  EXPECT_NE(rendered.status().message().find("iterations"), std::string::npos) << rendered.status().message();
}

TEST(ChatTemplateLimits, RecursionDepth) {
  auto parsed = ChatTemplate::Parse("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  ASSERT_TRUE(parsed.ok());
  auto rendered = parsed->Render(Json::object());
  ASSERT_FALSE(rendered.ok());
  EXPECT_NE(rendered.status().message().find("nested deeper"), std::string::npos) << rendered.status().message();
}

TEST(ChatTemplateLimits, DeepRecursionThroughNestedBlocksFailsCleanly) {
  std::string open, close;
  for (int i = 0; i < 90; ++i) {  // just under the parser's nesting limit
    open += "{% if true %}{% for x in [1] %}";
    close += "{% endfor %}{% endif %}";
  }
  auto parsed = ChatTemplate::Parse("{% macro f(n) %}" + open + "{{ f(n + 1) }}" + close +
                                    "{% endmacro %}{{ f(0) }}");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_FALSE(parsed->Render(Json::object()).ok());
}

TEST(ChatTemplateLimits, StringDoublingIsStopped) {
  auto parsed = ChatTemplate::Parse(
      "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
      "{{ ns.s|length }}");
  ASSERT_TRUE(parsed.ok());
  ChatTemplateOptions options;
  options.max_output_bytes = 1 << 20;
  auto rendered = parsed->Render(Json::object(), options);
  ASSERT_FALSE(rendered.ok());
  EXPECT_NE(rendered.status().message().find("limit"), std::string::npos) << rendered.status().message();
}

TEST(ChatTemplateLimits, OutputCap) {
  auto parsed = ChatTemplate::Parse("{% for i in range(100000) %}0123456789{% endfor %}");
  ASSERT_TRUE(parsed.ok());
  ChatTemplateOptions options;
  options.max_output_bytes = 1000;
  EXPECT_FALSE(parsed->Render(Json::object(), options).ok());
  options.max_output_bytes = 10'000'000;
  auto rendered = parsed->Render(Json::object(), options);
  ASSERT_TRUE(rendered.ok());
  EXPECT_EQ(rendered->size(), 1'000'000u);
}

TEST(ChatTemplateLimits, HugeRangeAndRepeatAreRefused) {
  for (const char* source : {"{{ range(10000000000)|length }}", "{{ ('x' * 100000000000)|length }}",
                             "{{ ([1] * 100000000000)|length }}"}) {
    auto parsed = ChatTemplate::Parse(source);
    ASSERT_TRUE(parsed.ok()) << source;
    EXPECT_FALSE(parsed->Render(Json::object()).ok()) << source;
  }
}

TEST(ChatTemplateLimits, DeepNestingIsASyntaxErrorNotACrash) {
  const std::string deep_parens = "{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}";
  EXPECT_FALSE(ChatTemplate::Parse(deep_parens).ok());
  std::string deep_ifs;
  for (int i = 0; i < 5000; ++i) deep_ifs += "{% if true %}";
  EXPECT_FALSE(ChatTemplate::Parse(deep_ifs).ok());
  const std::string deep_not = "{{ " + [] {
    std::string s;
    for (int i = 0; i < 100000; ++i) s += "not ";
    return s;
  }() + "1 }}";
  EXPECT_FALSE(ChatTemplate::Parse(deep_not).ok());
}

TEST(ChatTemplateLimits, TruncatedInputsFailCleanly) {
  const std::string source = "{%- for m in messages -%}{{ '<|' ~ m['role'] ~ '|>\\n' ~ m.content|trim }}{% endfor %}";
  for (size_t length = 0; length < source.size(); ++length) {
    auto parsed = ChatTemplate::Parse(source.substr(0, length));
    if (parsed.ok()) (void)parsed->Render(Json{{"messages", Json::array({{{"role", "user"}, {"content", "x"}}})}});
  }
}

TEST(ChatTemplateThreads, ConcurrentRendersAgree) {
  auto parsed = ChatTemplate::Parse(
      "{% for m in messages %}{{ m.role }}: {{ m.content }}{% if not loop.last %}\n{% endif %}{% endfor %}");
  ASSERT_TRUE(parsed.ok());
  const Json context = {{"messages", Json::array({{{"role", "user"}, {"content", "hi"}},
                                                  {{"role", "assistant"}, {"content", "yo"}}})}};
  const std::string single_threaded = parsed->Render(context).value();
  std::vector<std::thread> threads;
  std::vector<std::string> outputs(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) outputs[t] = parsed->Render(context).value();
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& output : outputs) EXPECT_EQ(output, single_threaded);
}

}  // namespace
}  // namespace tetra
