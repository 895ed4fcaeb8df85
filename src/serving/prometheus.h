// EngineMetrics in Prometheus' text exposition format (version 0.0.4), with
// vLLM's series names under a "tetra:" prefix and a model_name label on
// every series (doc/metrics.md lists them).
#pragma once

#include <string>

#include "engine/metrics.h"

namespace tetra::serving {

std::string RenderPrometheus(const EngineMetrics& metrics, const std::string& model_name);

}  // namespace tetra::serving
