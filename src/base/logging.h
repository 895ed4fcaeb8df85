// Logging goes through spdlog to stderr, so stdout carries only program output
// (generated text, token ids). Call tetra::InitLogging once from main.
#pragma once

#include <spdlog/spdlog.h>

namespace tetra {
// level: "trace", "debug", "info", "warn", "error", "off".
void InitLogging(const std::string& level);
}  // namespace tetra

#define TETRA_LOG_DEBUG(...) SPDLOG_DEBUG(__VA_ARGS__)
#define TETRA_LOG_INFO(...) SPDLOG_INFO(__VA_ARGS__)
#define TETRA_LOG_WARN(...) SPDLOG_WARN(__VA_ARGS__)
#define TETRA_LOG_ERROR(...) SPDLOG_ERROR(__VA_ARGS__)
