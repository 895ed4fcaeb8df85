// Values of the Jinja engine behind ChatTemplate, with Python's semantics as
// jinja2 shows them: str() and repr() printing, truthiness, ==, ordering,
// and json.dumps (the `tojson` filter transformers installs).
//
// Lists and dicts are shared by pointer like Python objects; the template
// cannot mutate them (transformers uses an ImmutableSandboxedEnvironment),
// only namespace() objects change. Not thread-safe: one render owns its
// values; the parsed template itself holds none of them.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace tetra::jinja {

class Value;
struct CallArgs;
using ValueList = std::vector<Value>;
// Insertion-ordered like a Python dict; lookup is linear (dicts are small).
using ValuePairs = std::vector<std::pair<Value, Value>>;
// A builtin or macro: positional and keyword arguments in, a value or error out.
using NativeFunction = std::function<StatusOr<Value>(CallArgs& args)>;

enum class ValueKind {
  kUndefined,  // a missing name, key or attribute; prints as ""
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,  // UTF-8
  kList,    // also tuples (is_tuple) and range()
  kDict,
  kNamespace,  // namespace(): the one mutable object
  kFunction,   // builtins, bound methods, macros
  kGenerator,  // what map/select/unique/... return: iterable once, no len(), always truthy
};

class Value {
 public:
  Value() = default;  // undefined
  static Value Undefined(std::string hint = "") {
    Value v;
    v.string_ = std::move(hint);
    return v;
  }
  static Value None() { return Value(ValueKind::kNone); }
  static Value Bool(bool b) {
    Value v(ValueKind::kBool);
    v.int_ = b;
    return v;
  }
  static Value Int(int64_t i) {
    Value v(ValueKind::kInt);
    v.int_ = i;
    return v;
  }
  static Value Float(double d) {
    Value v(ValueKind::kFloat);
    v.float_ = d;
    return v;
  }
  static Value String(std::string s) {
    Value v(ValueKind::kString);
    v.string_ = std::move(s);
    return v;
  }
  static Value List(ValueList items, bool is_tuple = false) {
    Value v(ValueKind::kList);
    v.list_ = std::make_shared<ValueList>(std::move(items));
    v.is_tuple_ = is_tuple;
    return v;
  }
  static Value Generator(ValueList items) {
    Value v(ValueKind::kGenerator);
    v.list_ = std::make_shared<ValueList>(std::move(items));
    return v;
  }
  // A str that jinja2 treats as markupsafe.Markup (from |safe or |escape):
  // `markup + str` HTML-escapes the plain operand.
  static Value Markup(std::string s) {
    Value v = String(std::move(s));
    v.is_markup_ = true;
    return v;
  }
  static Value Dict(ValuePairs pairs) {
    Value v(ValueKind::kDict);
    v.dict_ = std::make_shared<ValuePairs>(std::move(pairs));
    return v;
  }
  static Value Namespace(ValuePairs pairs) {
    Value v(ValueKind::kNamespace);
    v.dict_ = std::make_shared<ValuePairs>(std::move(pairs));
    return v;
  }
  // `name` is used in error messages and repr.
  static Value Function(std::string name, NativeFunction function) {
    Value v(ValueKind::kFunction);
    v.string_ = std::move(name);
    v.function_ = std::make_shared<NativeFunction>(std::move(function));
    return v;
  }
  static Value FromJson(const nlohmann::ordered_json& json);

  ValueKind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == ValueKind::kUndefined; }
  bool is_none() const { return kind_ == ValueKind::kNone; }
  bool is_bool() const { return kind_ == ValueKind::kBool; }
  bool is_int() const { return kind_ == ValueKind::kInt || kind_ == ValueKind::kBool; }
  bool is_number() const { return is_int() || kind_ == ValueKind::kFloat; }
  bool is_string() const { return kind_ == ValueKind::kString; }
  bool is_list() const { return kind_ == ValueKind::kList; }
  bool is_tuple() const { return kind_ == ValueKind::kList && is_tuple_; }
  bool is_dict() const { return kind_ == ValueKind::kDict; }
  bool is_generator() const { return kind_ == ValueKind::kGenerator; }
  bool is_markup() const { return kind_ == ValueKind::kString && is_markup_; }
  bool is_namespace() const { return kind_ == ValueKind::kNamespace; }
  bool is_function() const { return kind_ == ValueKind::kFunction; }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return int_; }
  double as_float() const { return kind_ == ValueKind::kFloat ? float_ : static_cast<double>(int_); }
  const std::string& as_string() const { return string_; }
  // For undefined values: what was missing, for error messages.
  const std::string& undefined_hint() const { return string_; }
  const std::string& function_name() const { return string_; }
  const ValueList& items() const { return *list_; }
  const ValuePairs& pairs() const { return *dict_; }
  ValuePairs& mutable_namespace_pairs() { return *dict_; }
  const NativeFunction& function() const { return *function_; }

  // Dict or namespace lookup; nullptr when absent.
  const Value* Find(const Value& key) const;
  const Value* Find(const std::string& key) const;

  bool IsTruthy() const;
  // Python str(): what {{ }} prints. Undefined prints "".
  std::string Str() const;
  // Python repr(): how items print inside lists and dicts.
  std::string Repr() const;
  // Python type name for error messages ("str", "int", "dict", ...).
  std::string TypeName() const;

  // Python ==.
  bool Equals(const Value& other) const;
  // Python <; error for unorderable types ("'<' not supported between ...").
  static StatusOr<bool> Less(const Value& a, const Value& b);

  // json.dumps(value, ensure_ascii, indent, separators, sort_keys) as
  // transformers' tojson calls it. indent nullopt means None (one line);
  // otherwise each level is indented by that string. Error for undefined
  // values and functions, as Python's "not JSON serializable".
  struct JsonStyle {
    std::optional<std::string> indent;
    std::string item_separator = ", ";
    std::string key_separator = ": ";
    bool sort_keys = false;
    bool ensure_ascii = false;
  };
  StatusOr<std::string> ToJson(const JsonStyle& style) const;

 private:
  explicit Value(ValueKind kind) : kind_(kind) {}
  Status AppendJson(std::string& out, const JsonStyle& style, int depth) const;

  ValueKind kind_ = ValueKind::kUndefined;
  bool is_tuple_ = false;
  bool is_markup_ = false;
  int64_t int_ = 0;
  double float_ = 0;
  std::string string_;
  std::shared_ptr<ValueList> list_;
  std::shared_ptr<ValuePairs> dict_;
  std::shared_ptr<NativeFunction> function_;
};

// Arguments of a call, as Python passes them.
struct CallArgs {
  ValueList positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument at `position` or named `name`, else nullopt.
  std::optional<Value> Get(size_t position, const std::string& name) const;
};

// Python float repr: shortest round-trip digits, "1.0", "1e+16", "inf", "nan".
std::string FormatPythonFloat(double value);
// Python repr() of a str: quotes chosen as Python does, escapes for control characters.
std::string PythonStringRepr(const std::string& utf8);

// UTF-8 helpers: Python indexes strings by code point.
std::vector<std::string> SplitCodePoints(const std::string& utf8);
size_t CountCodePoints(const std::string& utf8);

}  // namespace tetra::jinja
