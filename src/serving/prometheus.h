// EngineMetrics in Prometheus' text exposition format (version 0.0.4), with
// vLLM's series names under a "tetra:" prefix and a model_name label on
// every series (doc/metrics.md lists them).
#pragma once

#include <string>
#include <string_view>

#include "engine/metrics.h"

namespace tetra::serving {

// name="value" with Prometheus' escapes (backslash, double quote, newline).
std::string PrometheusLabel(std::string_view name, std::string_view value);

// Builds the text: every series named "tetra:NAME", with the writer's labels
// (comma-joined PrometheusLabel()s, maybe empty) and any extra ones.
class PrometheusWriter {
 public:
  explicit PrometheusWriter(std::string labels = "") : labels_(std::move(labels)) {}
  void Header(std::string_view name, std::string_view type, std::string_view help);
  void Sample(std::string_view name, double value, std::string_view extra_labels = "");
  void Gauge(std::string_view name, double value, std::string_view help) {
    Header(name, "gauge", help);
    Sample(name, value);
  }
  void Counter(std::string_view name, double value, std::string_view help) {
    Header(name, "counter", help);
    Sample(name, value);
  }
  void Histo(std::string_view name, const Histogram::Snapshot& h, std::string_view help);
  std::string Take() { return std::move(out_); }

 private:
  std::string labels_;
  std::string out_;
};

std::string RenderPrometheus(const EngineMetrics& metrics, const std::string& model_name);

}  // namespace tetra::serving
