// Paths of fixtures and of the default model for tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace tetra::testing {

inline std::string FixturePath(const std::string& relative) {
  return std::string(TETRA_FIXTURES_DIR) + "/" + relative;
}

// The default model; tests needing it skip when it is absent, unless
// TETRA_REQUIRE_DEFAULT_MODEL is set (as scripts/test.sh and CI do).
inline std::string DefaultModelPathForTests() {
  if (const char* env = std::getenv("TETRA_DEFAULT_MODEL"); env && *env) return env;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.cache/tetra/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

inline bool DefaultModelRequired() {
  const char* env = std::getenv("TETRA_REQUIRE_DEFAULT_MODEL");
  return env != nullptr && std::string(env) == "1";
}

}  // namespace tetra::testing

#define TETRA_REQUIRE_DEFAULT_MODEL_OR_SKIP(path)                                          \
  do {                                                                                     \
    if (!std::filesystem::exists(path)) {                                                  \
      if (::tetra::testing::DefaultModelRequired()) FAIL() << "default model missing: " << path; \
      GTEST_SKIP() << "default model not installed: " << path;                            \
    }                                                                                      \
  } while (0)
