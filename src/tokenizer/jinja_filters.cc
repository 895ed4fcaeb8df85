// jinja2's builtin filters and tests, plus transformers' tojson override.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include "tokenizer/jinja_builtins.h"

namespace tetra::jinja {
namespace {

const std::set<std::string> kFilters = {
    "abs",     "attr",   "capitalize", "center", "count",   "d",         "default", "dictsort",
    "e",       "escape", "first",      "float",  "format",  "indent",    "int",     "items",
    "join",    "last",   "length",     "list",   "lower",   "map",       "max",     "min",
    "reject",  "rejectattr", "replace", "reverse", "round", "safe",      "select",  "selectattr",
    "sort",    "string", "sum",        "title",  "tojson",  "trim",      "unique",  "upper",
    "wordcount", "forceescape"};
const std::set<std::string> kTests = {
    "boolean", "callable", "defined",  "divisibleby", "eq",      "equalto", "escaped", "even",
    "false",   "filter",   "float",    "ge",          "gt",      "greaterthan", "in", "integer",
    "iterable", "le",      "lessthan", "lower",       "lt",      "mapping", "ne",      "none",
    "number",  "odd",      "sameas",   "sequence",    "string",  "test",    "true",    "undefined",
    "upper",   "==",       "!=",       "<",           "<=",      ">",       ">="};

std::optional<Value> Argument(const CallArgs& args, size_t position, const std::string& name) {
  return args.Get(position, name);
}

bool ArgumentBool(const CallArgs& args, size_t position, const std::string& name, bool fallback) {
  auto value = Argument(args, position, name);
  return value ? value->IsTruthy() : fallback;
}

std::string LowerAscii(std::string s) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x80) c = static_cast<char>(std::tolower(c));
  }
  return s;
}
std::string UpperAscii(std::string s) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x80) c = static_cast<char>(std::toupper(c));
  }
  return s;
}

// jinja2's attribute getter: "a.b.0" looks up each part as an item.
StatusOr<Value> LookupPath(const Value& item, const Value& attribute, const ValueLimits& limits) {
  if (!attribute.is_string()) return GetItem(item, attribute, limits);
  Value current = item;
  const std::string& path = attribute.as_string();
  size_t begin = 0;
  while (true) {
    const size_t dot = path.find('.', begin);
    const std::string part = path.substr(begin, dot == std::string::npos ? std::string::npos : dot - begin);
    Value key = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)
                    ? Value::Int(std::stoll(part))
                    : Value::String(part);
    TETRA_ASSIGN_OR_RETURN(current, GetItem(current, key, limits));
    if (dot == std::string::npos) return current;
    begin = dot + 1;
  }
}

// Sort key for sort/unique/dictsort/min/max: strings fold case unless asked not to.
Value SortKey(const Value& value, bool case_sensitive) {
  if (!case_sensitive && value.is_string()) return Value::String(LowerAscii(value.as_string()));
  return value;
}

// The sort key of every item: the item itself or its `attribute` path.
StatusOr<std::vector<Value>> SortKeys(const ValueList& items, const std::optional<Value>& attribute,
                                      bool case_sensitive, const ValueLimits& limits) {
  std::vector<Value> keys;
  for (const auto& item : items) {
    Value key = item;
    if (attribute && !attribute->is_none()) {
      TETRA_ASSIGN_OR_RETURN(key, LookupPath(item, *attribute, limits));
    }
    keys.push_back(SortKey(key, case_sensitive));
  }
  return keys;
}

StatusOr<Value> Length(const Value& input) {
  switch (input.kind()) {
    case ValueKind::kUndefined: return Value::Int(0);
    case ValueKind::kString: return Value::Int(static_cast<int64_t>(CountCodePoints(input.as_string())));
    case ValueKind::kList: return Value::Int(static_cast<int64_t>(input.items().size()));
    case ValueKind::kDict: return Value::Int(static_cast<int64_t>(input.pairs().size()));
    default: return Status::Errorf("object of type '{}' has no len()", input.TypeName());
  }
}

StatusOr<Value> ToInt(const Value& input, const CallArgs& args) {
  const Value fallback = Argument(args, 0, "default").value_or(Value::Int(0));
  if (input.is_int()) return Value::Int(input.as_int());
  if (input.kind() == ValueKind::kFloat) {
    if (!std::isfinite(input.as_float()) || std::fabs(input.as_float()) > 9.2e18) return fallback;
    return Value::Int(static_cast<int64_t>(input.as_float()));
  }
  if (input.is_string()) {
    std::string text = StripString(input.as_string(), nullptr, true, true);
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    if (text.empty()) return fallback;
    errno = 0;
    char* end = nullptr;
    const long long integer = std::strtoll(text.c_str(), &end, 10);
    if (errno == 0 && *end == '\0') return Value::Int(integer);
    const double real = std::strtod(text.c_str(), &end);
    if (*end == '\0' && std::isfinite(real) && std::fabs(real) < 9.2e18) return Value::Int(static_cast<int64_t>(real));
  }
  return fallback;
}

StatusOr<Value> ToFloat(const Value& input, const CallArgs& args) {
  const Value fallback = Argument(args, 0, "default").value_or(Value::Float(0.0));
  if (input.is_number()) return Value::Float(input.as_float());
  if (input.is_string()) {
    const std::string text = StripString(input.as_string(), nullptr, true, true);
    char* end = nullptr;
    const double real = std::strtod(text.c_str(), &end);
    if (!text.empty() && *end == '\0') return Value::Float(real);
  }
  return fallback;
}

StatusOr<Value> ToJsonFilter(const Value& input, const CallArgs& args) {
  Value::JsonStyle style;
  style.ensure_ascii = ArgumentBool(args, 0, "ensure_ascii", false);
  if (auto indent = Argument(args, 1, "indent"); indent && !indent->is_none()) {
    if (indent->is_string()) {
      style.indent = indent->as_string();
    } else if (indent->is_int()) {
      style.indent.emplace(static_cast<size_t>(std::clamp<int64_t>(indent->as_int(), 0, 256)), ' ');
    } else {
      return Status::Errorf("tojson: indent must be an integer or string, not {}", indent->TypeName());
    }
    style.item_separator.assign(1, ',');
  }
  if (auto separators = Argument(args, 2, "separators"); separators && !separators->is_none()) {
    if (!separators->is_list() || separators->items().size() != 2 || !separators->items()[0].is_string() ||
        !separators->items()[1].is_string()) {
      return Status::Error("tojson: separators must be a pair of strings");
    }
    style.item_separator = separators->items()[0].as_string();
    style.key_separator = separators->items()[1].as_string();
  }
  style.sort_keys = ArgumentBool(args, 3, "sort_keys", false);
  TETRA_ASSIGN_OR_RETURN(auto text, input.ToJson(style));
  return Value::String(std::move(text));
}

StatusOr<Value> Indent(const Value& input, const CallArgs& args) {
  std::string indentation = "    ";
  if (auto width = Argument(args, 0, "width")) {
    if (width->is_string()) {
      indentation = width->as_string();
    } else if (width->is_int()) {
      indentation = std::string(static_cast<size_t>(std::clamp<int64_t>(width->as_int(), 0, 1024)), ' ');
    } else {
      return Status::Errorf("indent: width must be an integer or string, not {}", width->TypeName());
    }
  }
  const bool first = ArgumentBool(args, 1, "first", false);
  const bool blank = ArgumentBool(args, 2, "blank", false);
  std::string text = input.Str() + "\n";
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = text.find_first_of("\n\r", pos);
    lines.push_back(text.substr(pos, end - pos));
    pos = end + ((text[end] == '\r' && end + 1 < text.size() && text[end + 1] == '\n') ? 2 : 1);
  }
  std::string out;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) out += "\n" + indentation;
      out += lines[i];
    }
  } else {
    out = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      out += "\n";
      if (!lines[i].empty()) out += indentation + lines[i];
    }
  }
  if (first) out = indentation + out;
  return Value::String(std::move(out));
}

std::string Title(const std::string& s) {
  // jinja2 capitalises each piece split on runs of whitespace, '-', '(', '{', '[', '<'.
  std::string out;
  bool at_word_start = true;
  for (char c : s) {
    const bool is_separator = std::isspace(static_cast<unsigned char>(c)) || c == '-' || c == '(' ||
                              c == '{' || c == '[' || c == '<';
    if (is_separator) {
      out += c;
      at_word_start = true;
    } else if (static_cast<unsigned char>(c) >= 0x80) {
      out += c;
      at_word_start = false;
    } else {
      out += static_cast<char>(at_word_start ? std::toupper(c) : std::tolower(c));
      at_word_start = false;
    }
  }
  return out;
}

// The items selected by select/reject/selectattr/rejectattr.
StatusOr<Value> SelectItems(const Value& input, const CallArgs& args, bool by_attribute, bool keep_matches,
                            const ValueLimits& limits) {
  if (!input.IsTruthy()) return Value::Generator({});  // jinja2 skips falsy inputs
  TETRA_ASSIGN_OR_RETURN(auto items, IterateValue(input));
  size_t next = 0;
  Value attribute;
  if (by_attribute) {
    if (args.positional.empty()) return Status::Error("selectattr/rejectattr needs an attribute name");
    attribute = args.positional[next++];
  }
  std::string test_name;
  if (next < args.positional.size()) {
    if (!args.positional[next].is_string()) return Status::Error("the test name must be a string");
    test_name = args.positional[next++].as_string();
    if (!IsKnownTest(test_name)) return Status::Errorf("No test named '{}'", test_name);
  }
  CallArgs test_args;
  test_args.positional.assign(args.positional.begin() + next, args.positional.end());
  test_args.keyword = args.keyword;
  ValueList selected;
  for (const auto& item : items) {
    Value subject = item;
    if (by_attribute) {
      TETRA_ASSIGN_OR_RETURN(subject, LookupPath(item, attribute, limits));
    }
    bool passes;
    if (test_name.empty()) {
      passes = subject.IsTruthy();
    } else {
      TETRA_ASSIGN_OR_RETURN(passes, ApplyTest(test_name, subject, test_args));
    }
    if (passes == keep_matches) selected.push_back(item);
  }
  return Value::Generator(std::move(selected));
}

StatusOr<Value> MapItems(const Value& input, const CallArgs& args, const ValueLimits& limits) {
  if (!input.IsTruthy()) return Value::Generator({});  // jinja2 skips falsy inputs
  TETRA_ASSIGN_OR_RETURN(auto items, IterateValue(input));
  ValueList mapped;
  if (auto attribute = args.Get(SIZE_MAX, "attribute")) {
    const auto fallback = args.Get(SIZE_MAX, "default");
    for (const auto& item : items) {
      TETRA_ASSIGN_OR_RETURN(auto value, LookupPath(item, *attribute, limits));
      if (value.is_undefined() && fallback) value = *fallback;
      mapped.push_back(std::move(value));
    }
    return Value::Generator(std::move(mapped));
  }
  if (args.positional.empty() || !args.positional[0].is_string()) {
    return Status::Error("map needs a filter name or attribute=");
  }
  const std::string filter = args.positional[0].as_string();
  if (!IsKnownFilter(filter)) return Status::Errorf("No filter named '{}'", filter);
  CallArgs filter_args;
  filter_args.positional.assign(args.positional.begin() + 1, args.positional.end());
  filter_args.keyword = args.keyword;
  for (const auto& item : items) {
    TETRA_ASSIGN_OR_RETURN(auto value, ApplyFilter(filter, item, filter_args, limits));
    mapped.push_back(std::move(value));
  }
  return Value::Generator(std::move(mapped));
}

// Stable sort by a key, with Python's ordering errors.
Status SortValues(ValueList& items, const std::vector<Value>& keys, bool reverse) {
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  Status error;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (!error.ok()) return false;
    auto less = reverse ? Value::Less(keys[b], keys[a]) : Value::Less(keys[a], keys[b]);
    if (!less.ok()) {
      error = less.status();
      return false;
    }
    return *less;
  });
  TETRA_RETURN_IF_ERROR(error);
  ValueList sorted;
  for (size_t index : order) sorted.push_back(items[index]);
  items = std::move(sorted);
  return Status::Ok();
}

StatusOr<Value> Sort(const Value& input, const CallArgs& args, const ValueLimits& limits) {
  TETRA_ASSIGN_OR_RETURN(auto items, IterateValue(input));
  const bool reverse = ArgumentBool(args, 0, "reverse", false);
  const bool case_sensitive = ArgumentBool(args, 1, "case_sensitive", false);
  const auto attribute = Argument(args, 2, "attribute");
  TETRA_ASSIGN_OR_RETURN(std::vector<Value> keys, SortKeys(items, attribute, case_sensitive, limits));
  TETRA_RETURN_IF_ERROR(SortValues(items, keys, reverse));
  return Value::List(std::move(items));
}

StatusOr<Value> DictSort(const Value& input, const CallArgs& args) {
  if (!input.is_dict()) return Status::Errorf("dictsort: expected a dict, got {}", input.TypeName());
  const bool case_sensitive = ArgumentBool(args, 0, "case_sensitive", false);
  const std::string by = Argument(args, 1, "by").value_or(Value::String("key")).Str();
  const bool reverse = ArgumentBool(args, 2, "reverse", false);
  if (by != "key" && by != "value") return Status::Error("dictsort: You can only sort by either 'key' or 'value'");
  ValueList items;
  std::vector<Value> keys;
  for (const auto& [key, value] : input.pairs()) {
    items.push_back(Value::List({key, value}, true));
    keys.push_back(SortKey(by == "key" ? key : value, case_sensitive));
  }
  TETRA_RETURN_IF_ERROR(SortValues(items, keys, reverse));
  return Value::List(std::move(items));
}

StatusOr<Value> Unique(const Value& input, const CallArgs& args, const ValueLimits& limits) {
  TETRA_ASSIGN_OR_RETURN(auto items, IterateValue(input));
  const bool case_sensitive = ArgumentBool(args, 0, "case_sensitive", false);
  const auto attribute = Argument(args, 1, "attribute");
  TETRA_ASSIGN_OR_RETURN(std::vector<Value> keys, SortKeys(items, attribute, case_sensitive, limits));
  ValueList unique;
  std::vector<Value> seen;
  for (size_t i = 0; i < items.size(); ++i) {
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return s.Equals(keys[i]); })) {
      seen.push_back(keys[i]);
      unique.push_back(items[i]);
    }
  }
  return Value::Generator(std::move(unique));
}

StatusOr<Value> MinMax(const Value& input, const CallArgs& args, bool want_max, const ValueLimits& limits) {
  TETRA_ASSIGN_OR_RETURN(auto items, IterateValue(input));
  if (items.empty()) return Value::Undefined("No aggregated item, sequence was empty.");
  const bool case_sensitive = ArgumentBool(args, 0, "case_sensitive", false);
  const auto attribute = Argument(args, 1, "attribute");
  TETRA_ASSIGN_OR_RETURN(std::vector<Value> keys, SortKeys(items, attribute, case_sensitive, limits));
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i) {
    TETRA_ASSIGN_OR_RETURN(bool better, want_max ? Value::Less(keys[best], keys[i]) : Value::Less(keys[i], keys[best]));
    if (better) best = i;
  }
  return items[best];
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace

bool IsKnownFilter(const std::string& name) { return kFilters.count(name) > 0; }
bool IsKnownTest(const std::string& name) { return kTests.count(name) > 0; }

StatusOr<Value> ApplyFilter(const std::string& name, const Value& input, const CallArgs& args,
                            const ValueLimits& limits) {
  if (name == "length" || name == "count") return Length(input);
  if (name == "string") return Value::String(input.Str());
  if (name == "safe") return input.is_string() ? Value::Markup(input.as_string()) : Value::Markup(input.Str());
  if (name == "trim") {
    const auto chars = Argument(args, 0, "chars");
    std::string chars_text = chars && chars->is_string() ? chars->as_string() : "";
    return Value::String(StripString(input.Str(), chars && chars->is_string() ? &chars_text : nullptr, true, true));
  }
  if (name == "default" || name == "d") {
    const bool use_default = input.is_undefined() || (ArgumentBool(args, 1, "boolean", false) && !input.IsTruthy());
    if (use_default) return Argument(args, 0, "default_value").value_or(Value::String(""));
    return input;
  }
  if (name == "tojson") return ToJsonFilter(input, args);
  if (name == "upper") return Value::String(UpperAscii(input.Str()));
  if (name == "lower") return Value::String(LowerAscii(input.Str()));
  if (name == "title") return Value::String(Title(input.Str()));
  if (name == "capitalize") {
    std::string out = LowerAscii(input.Str());
    if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
    return Value::String(out);
  }
  if (name == "replace") {
    CallArgs method_args;
    method_args.positional = {Argument(args, 0, "old").value_or(Value()), Argument(args, 1, "new").value_or(Value())};
    if (auto count = Argument(args, 2, "count"); count && !count->is_none()) method_args.positional.push_back(*count);
    return CallMethod(Value::String(input.Str()), "replace", method_args, limits);
  }
  if (name == "join") {
    TETRA_ASSIGN_OR_RETURN(auto items, IterateValue(input));
    const std::string separator = Argument(args, 0, "d").value_or(Value::String("")).Str();
    const auto attribute = Argument(args, 1, "attribute");
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      Value item = items[i];
      if (attribute && !attribute->is_none()) {
        TETRA_ASSIGN_OR_RETURN(item, LookupPath(item, *attribute, limits));
      }
      if (i > 0) out += separator;
      out += item.Str();
      if (out.size() > limits.max_string_bytes) return Status::Error("join: result too large");
    }
    return Value::String(std::move(out));
  }
  if (name == "first" || name == "last") {
    TETRA_ASSIGN_OR_RETURN(auto items, IterateValue(input));
    if (name == "last" && input.is_generator()) return Status::Error("'generator' object is not reversible");
    if (items.empty()) return Value::Undefined(name == "first" ? "No first item, sequence was empty." : "No last item, sequence was empty.");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") {
    TETRA_ASSIGN_OR_RETURN(auto items, IterateValue(input));
    return Value::List(std::move(items));
  }
  if (name == "items") {
    if (input.is_undefined()) return Value::List({});
    if (!input.is_dict()) return Status::Errorf("items: can only get item pairs from a mapping, not {}", input.TypeName());
    TETRA_ASSIGN_OR_RETURN(auto pairs, CallMethod(input, "items", CallArgs{}, limits));
    return Value::Generator(pairs.items());
  }
  if (name == "dictsort") return DictSort(input, args);
  if (name == "sort") return Sort(input, args, limits);
  if (name == "unique") return Unique(input, args, limits);
  if (name == "min" || name == "max") return MinMax(input, args, name == "max", limits);
  if (name == "select" || name == "reject") return SelectItems(input, args, false, name == "select", limits);
  if (name == "selectattr" || name == "rejectattr") {
    return SelectItems(input, args, true, name == "selectattr", limits);
  }
  if (name == "map") return MapItems(input, args, limits);
  if (name == "int") return ToInt(input, args);
  if (name == "float") return ToFloat(input, args);
  if (name == "abs") {
    if (input.kind() == ValueKind::kFloat) return Value::Float(std::fabs(input.as_float()));
    if (input.is_int()) {
      if (input.as_int() == INT64_MIN) return Status::Error("abs: integer overflow");
      return Value::Int(std::llabs(input.as_int()));
    }
    return Status::Errorf("bad operand type for abs(): '{}'", input.TypeName());
  }
  if (name == "round") {
    if (!input.is_number()) return Status::Errorf("round: expected a number, got {}", input.TypeName());
    const int64_t precision = Argument(args, 0, "precision").value_or(Value::Int(0)).as_int();
    const std::string method = Argument(args, 1, "method").value_or(Value::String("common")).Str();
    const double scale = std::pow(10.0, static_cast<double>(precision));
    double scaled = input.as_float() * scale;
    if (method == "common") {
      scaled = std::nearbyint(scaled);  // round half to even, like Python's round()
    } else if (method == "ceil") {
      scaled = std::ceil(scaled);
    } else if (method == "floor") {
      scaled = std::floor(scaled);
    } else {
      return Status::Error("method must be common, ceil or floor");
    }
    return Value::Float(scaled / scale);
  }
  if (name == "reverse") {
    if (input.is_string()) {
      auto points = SplitCodePoints(input.as_string());
      std::string out;
      for (auto it = points.rbegin(); it != points.rend(); ++it) out += *it;
      return Value::String(out);
    }
    TETRA_ASSIGN_OR_RETURN(auto items, IterateValue(input));
    std::reverse(items.begin(), items.end());
    // reversed(list) is an iterator; a generator is listed first.
    return input.is_list() ? Value::Generator(std::move(items)) : Value::List(std::move(items));
  }
  if (name == "sum") {
    TETRA_ASSIGN_OR_RETURN(auto items, IterateValue(input));
    const auto attribute = Argument(args, 0, "attribute");
    Value total = Argument(args, 1, "start").value_or(Value::Int(0));
    for (const auto& item : items) {
      Value term = item;
      if (attribute && !attribute->is_none()) {
        TETRA_ASSIGN_OR_RETURN(term, LookupPath(item, *attribute, limits));
      }
      if (!term.is_number() || !total.is_number()) return Status::Error("sum: unsupported operand types");
      if (term.kind() == ValueKind::kFloat || total.kind() == ValueKind::kFloat) {
        total = Value::Float(total.as_float() + term.as_float());
      } else {
        int64_t sum;
        if (__builtin_add_overflow(total.as_int(), term.as_int(), &sum)) return Status::Error("sum: integer overflow");
        total = Value::Int(sum);
      }
    }
    return total;
  }
  if (name == "indent") return Indent(input, args);
  if (name == "format") {
    if (!args.keyword.empty()) return Status::Error("format: keyword arguments are not supported");
    TETRA_ASSIGN_OR_RETURN(auto text, PercentFormat(input.Str(), Value::List(args.positional, true)));
    return Value::String(std::move(text));
  }
  if (name == "attr") {
    const auto attribute = Argument(args, 0, "name");
    if (!attribute || !attribute->is_string()) return Status::Error("attr: needs an attribute name");
    return GetAttribute(input, attribute->as_string(), limits);
  }
  if (name == "e" || name == "escape" || name == "forceescape") {
    if (input.is_markup() && name != "forceescape") return input;
    return Value::Markup(HtmlEscape(input.Str()));
  }
  if (name == "wordcount") {
    CallArgs none;
    TETRA_ASSIGN_OR_RETURN(auto words, CallMethod(Value::String(input.Str()), "split", none, limits));
    return Value::Int(static_cast<int64_t>(words.items().size()));
  }
  if (name == "center") {
    CallArgs method_args;
    method_args.positional = {Argument(args, 0, "width").value_or(Value::Int(80))};
    return CallMethod(Value::String(input.Str()), "center", method_args, limits);
  }
  return Status::Errorf("No filter named '{}'", name);
}

StatusOr<bool> ApplyTest(const std::string& name, const Value& input, const CallArgs& args) {
  auto other = [&]() -> StatusOr<Value> {
    auto value = Argument(args, 0, "other");
    if (!value) return Status::Errorf("test '{}' needs an argument", name);
    return *value;
  };
  if (name == "defined") return !input.is_undefined();
  if (name == "undefined") return input.is_undefined();
  if (name == "none") return input.is_none();
  if (name == "boolean") return input.is_bool();
  if (name == "true") return input.is_bool() && input.as_bool();
  if (name == "false") return input.is_bool() && !input.as_bool();
  if (name == "integer") return input.kind() == ValueKind::kInt;
  if (name == "float") return input.kind() == ValueKind::kFloat;
  if (name == "number") return input.is_number();
  if (name == "string") return input.is_string();
  if (name == "mapping") return input.is_dict();
  if (name == "iterable") {
    return input.is_string() || input.is_list() || input.is_dict() || input.is_undefined() || input.is_generator();
  }
  if (name == "sequence") return input.is_string() || input.is_list() || input.is_dict();
  if (name == "callable") return input.is_function();
  if (name == "escaped") return false;
  if (name == "lower" || name == "upper") {
    if (!input.is_string()) return false;
    const std::string& s = input.as_string();
    bool has_cased = false;
    for (char c : s) {
      if (std::isalpha(static_cast<unsigned char>(c))) {
        has_cased = true;
        if ((name == "upper") != static_cast<bool>(std::isupper(static_cast<unsigned char>(c)))) return false;
      }
    }
    return has_cased;
  }
  if (name == "odd" || name == "even") {
    if (!input.is_int()) return Status::Errorf("test '{}' needs an integer, got {}", name, input.TypeName());
    return (input.as_int() % 2 != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    TETRA_ASSIGN_OR_RETURN(auto divisor, other());
    if (!input.is_int() || !divisor.is_int()) return Status::Error("divisibleby needs integers");
    if (divisor.as_int() == 0) return Status::Error("integer modulo by zero");
    return input.as_int() % divisor.as_int() == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==" || name == "ne" || name == "!=") {
    TETRA_ASSIGN_OR_RETURN(auto value, other());
    return input.Equals(value) == (name != "ne" && name != "!=");
  }
  if (name == "sameas") {
    TETRA_ASSIGN_OR_RETURN(auto value, other());
    if (input.is_none() || value.is_none() || input.is_bool() || value.is_bool()) {
      return input.kind() == value.kind() && input.Equals(value);
    }
    return input.Equals(value) && input.kind() == value.kind();
  }
  if (name == "lt" || name == "lessthan" || name == "<") {
    TETRA_ASSIGN_OR_RETURN(auto value, other());
    return Value::Less(input, value);
  }
  if (name == "gt" || name == "greaterthan" || name == ">") {
    TETRA_ASSIGN_OR_RETURN(auto value, other());
    return Value::Less(value, input);
  }
  if (name == "le" || name == "<=" || name == "ge" || name == ">=") {
    TETRA_ASSIGN_OR_RETURN(auto value, other());
    const bool is_le = name == "le" || name == "<=";
    TETRA_ASSIGN_OR_RETURN(bool strictly, is_le ? Value::Less(input, value) : Value::Less(value, input));
    return strictly || input.Equals(value);
  }
  if (name == "in") {
    TETRA_ASSIGN_OR_RETURN(auto container, other());
    if (container.is_string()) {
      if (!input.is_string()) return Status::Errorf("'in <string>' requires string as left operand, not {}", input.TypeName());
      return container.as_string().find(input.as_string()) != std::string::npos;
    }
    if (container.is_dict()) return container.Find(input) != nullptr;
    TETRA_ASSIGN_OR_RETURN(auto items, IterateValue(container));
    return std::any_of(items.begin(), items.end(), [&](const Value& v) { return v.Equals(input); });
  }
  if (name == "filter") return input.is_string() && IsKnownFilter(input.as_string());
  if (name == "test") return input.is_string() && IsKnownTest(input.as_string());
  return Status::Errorf("No test named '{}'", name);
}

}  // namespace tetra::jinja
