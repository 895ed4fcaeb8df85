// Renders a parsed Jinja tree against a context. Each call owns its state,
// so many threads may render the same tree at once.
//
// Scoping follows jinja2: a for loop body and a macro body get a fresh scope
// (per iteration for loops), `set` writes the innermost scope, `if` opens
// none. Limits bound output size, loop iterations and macro recursion so a
// hostile template fails with an error instead of hanging or exhausting memory.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "base/status.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_value.h"

namespace tetra::jinja {

struct RenderLimits {
  size_t max_output_bytes = 64u << 20;        // also the largest string a template may build
  int64_t max_loop_iterations = 10'000'000;   // summed over all loops of one render
  int max_call_depth = 128;                   // nested macro calls
  // Nested statement bodies plus expressions, across macro calls: bounds the
  // native stack a render uses (a few KiB per level).
  int max_nesting = 500;
};

struct RenderOptions {
  RenderLimits limits;
  // The clock strftime_now() reads; nullopt = the real local time.
  std::optional<std::chrono::system_clock::time_point> now;
};

// `context` must be a dict (its keys become template variables). Errors read
// "line N: <problem>", except raise_exception(msg), whose error is msg itself.
StatusOr<std::string> RenderTree(const Node& root, const Value& context, const RenderOptions& options);

// Checks that every filter and test the tree names exists (jinja2 does this
// when compiling). Error "line N: no filter named 'x'".
Status CheckNames(const Node& root);

}  // namespace tetra::jinja
