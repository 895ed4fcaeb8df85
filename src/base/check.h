// TETRA_CHECK: invariants that only a bug can break. Prints and aborts.
// Bad input must never reach a CHECK: return a Status instead.
#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

namespace tetra::internal {
[[noreturn]] inline void CheckFailed(const char* file, int line, const char* condition,
                                     const std::string& message) {
  std::fprintf(stderr, "%s:%d: CHECK failed: %s %s\n", file, line, condition, message.c_str());
  std::abort();
}
}  // namespace tetra::internal

#define TETRA_CHECK(condition, ...)                                                   \
  do {                                                                                \
    if (!(condition)) [[unlikely]] {                                                  \
      ::tetra::internal::CheckFailed(__FILE__, __LINE__, #condition,                  \
                                     ::fmt::format("" __VA_ARGS__));                  \
    }                                                                                 \
  } while (0)
