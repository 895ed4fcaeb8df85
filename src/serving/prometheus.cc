#include "serving/prometheus.h"

#include <fmt/format.h>

#include <cmath>
#include <string_view>

namespace tetra::serving {
namespace {

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);  // shortest representation that round-trips
}

}  // namespace

std::string PrometheusLabel(std::string_view name, std::string_view value) {
  std::string out = fmt::format("{}=\"", name);
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
  return out + "\"";
}

void PrometheusWriter::Header(std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(std::back_inserter(out_), "# HELP tetra:{} {}\n# TYPE tetra:{} {}\n", name, help, name, type);
}

void PrometheusWriter::Sample(std::string_view name, double value, std::string_view extra_labels) {
  if (labels_.empty() && extra_labels.empty()) {
    fmt::format_to(std::back_inserter(out_), "tetra:{} {}\n", name, Number(value));
    return;
  }
  const char* comma = labels_.empty() || extra_labels.empty() ? "" : ",";
  fmt::format_to(std::back_inserter(out_), "tetra:{}{{{}{}{}}} {}\n", name, labels_, comma, extra_labels,
                 Number(value));
}

void PrometheusWriter::Histo(std::string_view name, const Histogram::Snapshot& h, std::string_view help) {
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

std::string RenderPrometheus(const EngineMetrics& m, const std::string& model_name) {
  PrometheusWriter w(PrometheusLabel("model_name", model_name));
  w.Gauge("num_requests_running", static_cast<double>(m.num_requests_running),
          "Requests with a sequence in the running batch.");
  w.Gauge("num_requests_waiting", static_cast<double>(m.num_requests_waiting),
          "Requests waiting to run: not started yet, or preempted.");
  w.Gauge("kv_cache_usage_perc", m.kv_cache_usage, "Fraction of KV-cache blocks in use (1 = full).");
  w.Gauge("kv_cache_blocks", static_cast<double>(m.kv_cache_blocks), "KV-cache blocks in the pool.");
  w.Gauge("num_prompt_tokens_pending", static_cast<double>(m.num_prompt_tokens_pending),
          "Prompt tokens queued or running whose KV is not computed yet.");
  w.Gauge("num_requests_awaiting_kv", static_cast<double>(m.num_requests_awaiting_kv),
          "Decode role: requests whose KV is on its way from a prefill instance.");
  w.Gauge("num_requests_holding_kv", static_cast<double>(m.num_requests_holding_kv),
          "Prefill role: requests whose computed KV is being sent.");
  w.Counter("prefix_cache_queries_total", static_cast<double>(m.prefix_cache_queries),
            "Prompt tokens looked up in the prefix cache.");
  w.Counter("prefix_cache_hits_total", static_cast<double>(m.prefix_cache_hits),
            "Prompt tokens found in the prefix cache.");
  w.Counter("prompt_tokens_total", static_cast<double>(m.prompt_tokens), "Prompt tokens processed (computed or cached).");
  w.Counter("generation_tokens_total", static_cast<double>(m.generation_tokens), "Tokens generated.");
  w.Counter("num_preemptions_total", static_cast<double>(m.num_preemptions),
            "Sequences preempted: KV freed when the cache ran out, recomputed later.");
  w.Counter("num_steps_total", static_cast<double>(m.num_steps), "Forward steps run.");
  w.Counter("spec_decode_num_draft_tokens_total", static_cast<double>(m.spec_draft_tokens),
            "Speculative decoding: guessed tokens verified.");
  w.Counter("spec_decode_num_accepted_tokens_total", static_cast<double>(m.spec_accepted_tokens),
            "Speculative decoding: guessed tokens accepted.");
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
