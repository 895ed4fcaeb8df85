// jinja2's builtin filters, tests, attribute/item lookup and the Python
// methods of str, dict and list that templates call, with the behaviour of
// transformers' ImmutableSandboxedEnvironment (mutating methods such as
// list.append are refused). Stateless functions; any thread.
#pragma once

#include <string>

#include "base/status.h"
#include "tokenizer/jinja_value.h"

namespace tetra::jinja {

// Limits shared with the interpreter so that builtins cannot build huge values.
struct ValueLimits {
  size_t max_string_bytes = 64u << 20;
  size_t max_list_items = 1u << 22;
};

bool IsKnownFilter(const std::string& name);
bool IsKnownTest(const std::string& name);

StatusOr<Value> ApplyFilter(const std::string& name, const Value& input, const CallArgs& args,
                            const ValueLimits& limits);
StatusOr<bool> ApplyTest(const std::string& name, const Value& input, const CallArgs& args);

// object.name as jinja2 resolves it: a method of str/dict/list first, then a
// key of a dict or namespace, else an undefined value (or an error when
// `object` is itself undefined).
StatusOr<Value> GetAttribute(const Value& object, const std::string& name, const ValueLimits& limits);
// object[key]: a key or index first, then an attribute.
StatusOr<Value> GetItem(const Value& object, const Value& key, const ValueLimits& limits);
// object[start:stop:step]; null pointers for omitted parts.
StatusOr<Value> GetSlice(const Value& object, const Value* start, const Value* stop, const Value* step);

// Calls the method `name` of a str/dict/list value.
StatusOr<Value> CallMethod(const Value& object, const std::string& name, const CallArgs& args,
                           const ValueLimits& limits);
// True when object.name is a Python method (so `object.name(...)` calls it).
bool HasMethod(const Value& object, const std::string& name);

// Python's `%` string formatting and str.format, for the subset templates use.
StatusOr<std::string> PercentFormat(const std::string& format, const Value& arguments);
StatusOr<std::string> BraceFormat(const std::string& format, const CallArgs& args);

// Python str.strip/lstrip/rstrip semantics (chars null = whitespace).
std::string StripString(const std::string& s, const std::string* chars, bool left, bool right);
// The values a for loop visits: list items, dict keys, string characters.
StatusOr<ValueList> IterateValue(const Value& value);

// Raises "undefined" errors the way jinja2 does: the hint of the value.
Status UndefinedError(const Value& undefined);

}  // namespace tetra::jinja
