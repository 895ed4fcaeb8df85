// Runs the tetra binary under test as a user would, capturing its output.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace tetra::testing {

struct RunResult {
  int exit_code = -1;
  std::string output;
};

// `stderr_too` merges stderr into the output; otherwise stderr is dropped.
inline RunResult RunTetra(const std::string& args, bool stderr_too = true) {
  const std::string command = std::string(TETRA_BINARY) + " " + args + (stderr_too ? " 2>&1" : " 2>/dev/null");
  RunResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline int CountLines(const std::string& s) {
  int lines = 0;
  for (char c : s) lines += c == '\n';
  return lines;
}

}  // namespace tetra::testing
