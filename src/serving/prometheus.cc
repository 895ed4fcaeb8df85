#include "serving/prometheus.h"

#include <fmt/format.h>

#include <cmath>
#include <string_view>

namespace tetra::serving {
namespace {

// A label value with Prometheus' escapes: backslash, double quote, newline.
std::string EscapeLabel(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);  // shortest representation that round-trips
}

class Writer {
 public:
  explicit Writer(const std::string& model_name) : label_(fmt::format("model_name=\"{}\"", EscapeLabel(model_name))) {}

  void Header(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out_), "# HELP tetra:{} {}\n# TYPE tetra:{} {}\n", name, help, name, type);
  }
  void Sample(std::string_view name, double value, std::string_view extra_labels = "") {
    fmt::format_to(std::back_inserter(out_), "tetra:{}{{{}{}{}}} {}\n", name, label_, extra_labels.empty() ? "" : ",",
                   extra_labels, Number(value));
  }
  void Gauge(std::string_view name, double value, std::string_view help) {
    Header(name, "gauge", help);
    Sample(name, value);
  }
  void Counter(std::string_view name, double value, std::string_view help) {
    Header(name, "counter", help);
    Sample(name, value);
  }
  void Histo(std::string_view name, const Histogram::Snapshot& h, std::string_view help) {
    Header(name, "histogram", help);
    const std::string bucket = fmt::format("{}_bucket", name);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < h.upper_bounds.size(); ++i) {
      cumulative += i < h.counts.size() ? h.counts[i] : 0;
      Sample(bucket, static_cast<double>(cumulative), fmt::format("le=\"{}\"", Number(h.upper_bounds[i])));
    }
    Sample(bucket, static_cast<double>(h.count), "le=\"+Inf\"");
    Sample(fmt::format("{}_sum", name), h.sum);
    Sample(fmt::format("{}_count", name), static_cast<double>(h.count));
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string label_;
  std::string out_;
};

}  // namespace

std::string RenderPrometheus(const EngineMetrics& m, const std::string& model_name) {
  Writer w(model_name);
  w.Gauge("num_requests_running", static_cast<double>(m.num_requests_running),
          "Requests with a sequence in the running batch.");
  w.Gauge("num_requests_waiting", static_cast<double>(m.num_requests_waiting),
          "Requests waiting to run: not started yet, or preempted.");
  w.Gauge("kv_cache_usage_perc", m.kv_cache_usage, "Fraction of KV-cache blocks in use (1 = full).");
  w.Gauge("kv_cache_blocks", static_cast<double>(m.kv_cache_blocks), "KV-cache blocks in the pool.");
  w.Counter("prefix_cache_queries_total", static_cast<double>(m.prefix_cache_queries),
            "Prompt tokens looked up in the prefix cache.");
  w.Counter("prefix_cache_hits_total", static_cast<double>(m.prefix_cache_hits),
            "Prompt tokens found in the prefix cache.");
  w.Counter("prompt_tokens_total", static_cast<double>(m.prompt_tokens), "Prompt tokens processed (computed or cached).");
  w.Counter("generation_tokens_total", static_cast<double>(m.generation_tokens), "Tokens generated.");
  w.Counter("num_preemptions_total", static_cast<double>(m.num_preemptions),
            "Sequences preempted: KV freed when the cache ran out, recomputed later.");
  w.Counter("num_steps_total", static_cast<double>(m.num_steps), "Forward steps run.");
  w.Counter("step_busy_seconds_total", m.step_busy_seconds, "Seconds the model runner computed.");
  w.Counter("step_idle_seconds_total", m.step_idle_seconds,
            "Seconds the model runner waited between steps while requests were in flight.");
  w.Header("request_success_total", "counter", "Finished requests, by finish reason.");
  static constexpr const char* kReasons[] = {"stop", "length", "abort", "error"};
  for (size_t i = 0; i < m.requests_finished.size(); ++i) {
    w.Sample("request_success_total", static_cast<double>(m.requests_finished[i]),
             fmt::format("finished_reason=\"{}\"", kReasons[i]));
  }
  w.Histo("time_to_first_token_seconds", m.time_to_first_token, "Time from arrival to the first generated token.");
  w.Histo("inter_token_latency_seconds", m.inter_token_latency, "Time between consecutive tokens of a sequence.");
  w.Histo("e2e_request_latency_seconds", m.e2e_request_latency, "Time from arrival to the request's last token.");
  w.Histo("request_queue_time_seconds", m.request_queue_time, "Time a request waited before its first step.");
  return w.Take();
}

}  // namespace tetra::serving
