// RenderPrometheus against the text exposition format (0.0.4): every line a
// HELP/TYPE comment or `name{labels} value`; each family declared once before
// its samples; histogram buckets cumulative with +Inf equal to _count; label
// values escaped; the finish-reason counter labelled stop/length/abort/error.
#include "serving/prometheus.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace tetra::serving {
namespace {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;  // unescaped values
  double value = 0;
};

struct Exposition {
  std::map<std::string, std::string> types;  // family -> gauge | counter | histogram
  std::vector<Sample> samples;               // in order
};

std::string Unescape(const std::string& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '\\' && i + 1 < v.size()) {
      const char c = v[++i];
      out += c == 'n' ? '\n' : c;
    } else {
      out += v[i];
    }
  }
  return out;
}

// The family a sample belongs to: its own name, or a histogram's without the
// _bucket/_sum/_count suffix.
std::string FamilyOf(const std::string& name, const std::map<std::string, std::string>& types) {
  if (types.count(name)) return name;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      const std::string base = name.substr(0, name.size() - s.size());
      auto it = types.find(base);
      if (it != types.end() && it->second == "histogram") return base;
    }
  }
  return "";
}

// Parses the text strictly; a failed expectation names the line.
Exposition ParseStrictly(const std::string& text) {
  static const std::regex kHelp(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*)");
  static const std::regex kType(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (gauge|counter|histogram|summary|untyped))");
  // name{label="value",...} value, label values with \\ \" \n escapes only.
  static const std::string kPair = R"([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")";
  static const std::regex kSample(R"(([a-zA-Z_:][a-zA-Z0-9_:]*)\{()" + kPair + "(?:," + kPair + R"()*)\} (\S+))");
  static const std::regex kLabel(R"(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)\")");
  Exposition e;
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n') << "the text ends with a newline";
  std::istringstream in(text);
  std::string line;
  std::string helped;  // the family the last HELP named
  std::set<std::string> families_with_samples;
  std::string last_family;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, kHelp)) {
      helped = m[1];
      continue;
    }
    if (std::regex_match(line, m, kType)) {
      EXPECT_EQ(m[1].str(), helped) << "TYPE without its HELP: " << line;
      EXPECT_EQ(e.types.count(m[1]), 0u) << "family declared twice: " << line;
      e.types[m[1]] = m[2];
      continue;
    }
    if (!std::regex_match(line, m, kSample)) {
      ADD_FAILURE() << "not a comment nor a sample: \"" << line << "\"";
      continue;
    }
    Sample s;
    s.name = m[1];
    const std::string labels = m[2];
    for (auto it = std::sregex_iterator(labels.begin(), labels.end(), kLabel); it != std::sregex_iterator(); ++it) {
      EXPECT_EQ(s.labels.count((*it)[1]), 0u) << "label repeated: " << line;
      s.labels[(*it)[1]] = Unescape((*it)[2]);
    }
    const std::string value = m[3];
    if (value == "+Inf" || value == "-Inf" || value == "NaN") {
      s.value = value == "NaN" ? NAN : (value[0] == '+' ? INFINITY : -INFINITY);
    } else {
      char* end = nullptr;
      s.value = std::strtod(value.c_str(), &end);
      EXPECT_TRUE(end && *end == '\0' && !std::isinf(s.value) && !std::isnan(s.value)) << "bad value: " << line;
    }
    const std::string family = FamilyOf(s.name, e.types);
    EXPECT_FALSE(family.empty()) << "sample before (or without) its TYPE: " << line;
    if (family != last_family) {
      EXPECT_EQ(families_with_samples.count(family), 0u) << "family's samples not contiguous: " << line;
      families_with_samples.insert(family);
      last_family = family;
    }
    e.samples.push_back(std::move(s));
  }
  return e;
}

using Labels = std::map<std::string, std::string>;

const Sample* Find(const Exposition& e, const std::string& name, const Labels& labels = {}) {
  for (const Sample& s : e.samples) {
    if (s.name != name) continue;
    bool all = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      all = all && it != s.labels.end() && it->second == v;
    }
    if (all) return &s;
  }
  return nullptr;
}

double Value(const Exposition& e, const std::string& name, const Labels& labels = {}) {
  const Sample* s = Find(e, name, labels);
  EXPECT_NE(s, nullptr) << name;
  return s ? s->value : NAN;
}

EngineMetrics KnownMetrics() {
  EngineMetrics m;
  m.num_requests_running = 3;
  m.num_requests_waiting = 2;
  m.kv_cache_usage = 0.25;
  m.kv_cache_blocks = 512;
  m.prefix_cache_queries = 1000;
  m.prefix_cache_hits = 250;
  m.prompt_tokens = 1234;
  m.generation_tokens = 5678;
  m.num_preemptions = 1;
  m.num_steps = 99;
  m.requests_finished = {5, 6, 7, 8};
  m.step_busy_seconds = 1.5;
  m.step_idle_seconds = 0.125;
  Histogram ttft({0.1, 0.5, 1.0});
  for (double v : {0.05, 0.1, 0.2, 0.3, 0.7, 5.0}) ttft.Observe(v);
  m.time_to_first_token = ttft.snapshot();
  Histogram itl(Histogram::InterTokenBuckets());
  for (int i = 0; i < 100; ++i) itl.Observe(0.001 * i * i);
  m.inter_token_latency = itl.snapshot();
  m.e2e_request_latency = Histogram(Histogram::RequestLatencyBuckets()).snapshot();  // empty
  // request_queue_time: the default snapshot, without bounds: only +Inf.
  return m;
}

TEST(Prometheus, EveryLineIsACommentOrASample) {
  const Exposition e = ParseStrictly(RenderPrometheus(KnownMetrics(), "SmolLM2"));
  EXPECT_FALSE(e.samples.empty());
  for (const Sample& s : e.samples) {
    EXPECT_EQ(s.labels.count("model_name"), 1u) << s.name;
    EXPECT_EQ(s.labels.at("model_name"), "SmolLM2");
    EXPECT_EQ(s.name.rfind("tetra:", 0), 0u) << s.name;
  }
  // A default (all zero, bound-less histograms) snapshot is well formed too.
  ParseStrictly(RenderPrometheus(EngineMetrics{}, "m"));
}

TEST(Prometheus, GaugesAndCountersCarryTheirValues) {
  const Exposition e = ParseStrictly(RenderPrometheus(KnownMetrics(), "m"));
  EXPECT_EQ(e.types.at("tetra:num_requests_running"), "gauge");
  EXPECT_EQ(e.types.at("tetra:kv_cache_usage_perc"), "gauge");
  EXPECT_EQ(Value(e, "tetra:num_requests_running"), 3);
  EXPECT_EQ(Value(e, "tetra:num_requests_waiting"), 2);
  EXPECT_EQ(Value(e, "tetra:kv_cache_usage_perc"), 0.25);
  EXPECT_EQ(Value(e, "tetra:kv_cache_blocks"), 512);
  // Counters end in _total (vLLM's names).
  for (const auto& [family, type] : e.types) {
    if (type == "counter") {
      EXPECT_EQ(family.size() > 6 && family.compare(family.size() - 6, 6, "_total") == 0, true) << family;
    }
  }
  EXPECT_EQ(e.types.at("tetra:prompt_tokens_total"), "counter");
  EXPECT_EQ(Value(e, "tetra:prompt_tokens_total"), 1234);
  EXPECT_EQ(Value(e, "tetra:generation_tokens_total"), 5678);
  EXPECT_EQ(Value(e, "tetra:prefix_cache_queries_total"), 1000);
  EXPECT_EQ(Value(e, "tetra:prefix_cache_hits_total"), 250);
  EXPECT_EQ(Value(e, "tetra:num_preemptions_total"), 1);
  EXPECT_EQ(Value(e, "tetra:num_steps_total"), 99);
  EXPECT_EQ(Value(e, "tetra:step_busy_seconds_total"), 1.5);
  EXPECT_EQ(Value(e, "tetra:step_idle_seconds_total"), 0.125);
}

TEST(Prometheus, FinishedReasonLabels) {
  const Exposition e = ParseStrictly(RenderPrometheus(KnownMetrics(), "m"));
  EXPECT_EQ(e.types.at("tetra:request_success_total"), "counter");
  EXPECT_EQ(Value(e, "tetra:request_success_total", {{"finished_reason", "stop"}}), 5);
  EXPECT_EQ(Value(e, "tetra:request_success_total", {{"finished_reason", "length"}}), 6);
  EXPECT_EQ(Value(e, "tetra:request_success_total", {{"finished_reason", "abort"}}), 7);
  EXPECT_EQ(Value(e, "tetra:request_success_total", {{"finished_reason", "error"}}), 8);
  int n = 0;
  for (const Sample& s : e.samples) n += s.name == "tetra:request_success_total";
  EXPECT_EQ(n, 4);
}

// The buckets of one histogram family, in order, as (le, cumulative count).
std::vector<std::pair<double, double>> Buckets(const Exposition& e, const std::string& family) {
  std::vector<std::pair<double, double>> out;
  for (const Sample& s : e.samples) {
    if (s.name != family + "_bucket") continue;
    EXPECT_EQ(s.labels.count("le"), 1u);
    const std::string le = s.labels.at("le");
    out.emplace_back(le == "+Inf" ? INFINITY : std::strtod(le.c_str(), nullptr), s.value);
  }
  return out;
}

TEST(Prometheus, HistogramBucketsAreCumulativeAndEndInCount) {
  const EngineMetrics metrics = KnownMetrics();
  const Exposition e = ParseStrictly(RenderPrometheus(metrics, "m"));
  for (const char* family : {"tetra:time_to_first_token_seconds", "tetra:inter_token_latency_seconds",
                             "tetra:e2e_request_latency_seconds", "tetra:request_queue_time_seconds"}) {
    SCOPED_TRACE(family);
    EXPECT_EQ(e.types.at(family), "histogram");
    const auto buckets = Buckets(e, family);
    ASSERT_FALSE(buckets.empty());
    EXPECT_TRUE(std::isinf(buckets.back().first)) << "the last bucket is +Inf";
    for (size_t i = 1; i < buckets.size(); ++i) {
      EXPECT_LT(buckets[i - 1].first, buckets[i].first) << "le ascending";
      EXPECT_LE(buckets[i - 1].second, buckets[i].second) << "cumulative counts never decrease";
    }
    EXPECT_EQ(buckets.back().second, Value(e, std::string(family) + "_count"));
    EXPECT_NE(Find(e, std::string(family) + "_sum"), nullptr);
  }
  // The known observations: 0.05 and 0.1 (le is inclusive) <= 0.1; 0.2, 0.3 <= 0.5; 0.7 <= 1; 5 above.
  const auto ttft = Buckets(e, "tetra:time_to_first_token_seconds");
  ASSERT_EQ(ttft.size(), 4u);
  EXPECT_EQ(ttft[0], (std::pair<double, double>{0.1, 2}));
  EXPECT_EQ(ttft[1], (std::pair<double, double>{0.5, 4}));
  EXPECT_EQ(ttft[2], (std::pair<double, double>{1.0, 5}));
  EXPECT_EQ(ttft[3].second, 6);
  EXPECT_EQ(Value(e, "tetra:time_to_first_token_seconds_count"), 6);
  EXPECT_DOUBLE_EQ(Value(e, "tetra:time_to_first_token_seconds_sum"), 0.05 + 0.1 + 0.2 + 0.3 + 0.7 + 5.0);
  EXPECT_EQ(Buckets(e, "tetra:inter_token_latency_seconds").size(), Histogram::InterTokenBuckets().size() + 1);
  EXPECT_EQ(Value(e, "tetra:inter_token_latency_seconds_count"), 100);
  EXPECT_EQ(Value(e, "tetra:e2e_request_latency_seconds_count"), 0);
  EXPECT_EQ(Buckets(e, "tetra:request_queue_time_seconds").size(), 1u);  // bound-less: +Inf only
}

TEST(Prometheus, BucketBoundsRoundTrip) {
  // Bounds print in their shortest exact form (0.001, not 0.0010000000000000002).
  EngineMetrics m;
  m.time_to_first_token = Histogram(Histogram::TimeToFirstTokenBuckets()).snapshot();
  const Exposition e = ParseStrictly(RenderPrometheus(m, "m"));
  const auto buckets = Buckets(e, "tetra:time_to_first_token_seconds");
  const auto bounds = Histogram::TimeToFirstTokenBuckets();
  ASSERT_EQ(buckets.size(), bounds.size() + 1);
  for (size_t i = 0; i < bounds.size(); ++i) EXPECT_EQ(buckets[i].first, bounds[i]);
  EXPECT_NE(RenderPrometheus(m, "m").find("le=\"0.001\""), std::string::npos);
}

TEST(Prometheus, ModelNameIsEscaped) {
  const std::string name = "we\"ird\\mo\ndel";
  const std::string text = RenderPrometheus(KnownMetrics(), name);
  EXPECT_NE(text.find(R"(model_name="we\"ird\\mo\ndel")"), std::string::npos);
  const Exposition e = ParseStrictly(text);  // no line broken by the newline
  for (const Sample& s : e.samples) EXPECT_EQ(s.labels.at("model_name"), name);
  EXPECT_EQ(Value(e, "tetra:num_requests_running"), 3);
}

}  // namespace
}  // namespace tetra::serving
