// Attribute and item lookup, slicing, and the Python methods of str, dict and
// list that chat templates call.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <set>

#include "tokenizer/jinja_builtins.h"

namespace tetra::jinja {
namespace {

const std::set<std::string> kStringMethods = {
    "startswith", "endswith", "strip",  "lstrip",     "rstrip",       "split",      "rsplit",
    "replace",    "upper",    "lower",  "title",      "capitalize",   "find",       "rfind",
    "index",      "rindex",   "count",  "format",     "join",         "splitlines", "isdigit",
    "isalpha",    "isalnum",  "isspace", "isupper",   "islower",      "zfill",      "removeprefix",
    "removesuffix", "partition", "rpartition", "center", "ljust", "rjust", "swapcase", "isnumeric",
    "isdecimal", "istitle"};
const std::set<std::string> kDictMethods = {"get", "items", "keys", "values", "copy"};
const std::set<std::string> kDictUnsafeMethods = {"pop", "popitem", "update", "setdefault", "clear"};
const std::set<std::string> kListMethods = {"index", "count", "copy"};
const std::set<std::string> kListUnsafeMethods = {"append", "extend", "insert", "pop",
                                                  "remove", "reverse", "sort", "clear"};

bool IsPythonSpace(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

std::string ObjectTypeRepr(const Value& object) {
  if (object.is_none()) return "None";
  if (object.kind() == ValueKind::kBool) return object.as_bool() ? "True" : "False";
  return object.TypeName() + " object";
}

Value MissingAttribute(const Value& object, const std::string& name) {
  return Value::Undefined("'" + ObjectTypeRepr(object) + "' has no attribute '" + name + "'");
}

Value Unsafe(const Value& object, const std::string& name) {
  return Value::Undefined("access to attribute '" + name + "' of '" + object.TypeName() +
                          "' object is unsafe.");
}

// Converts a code point index to a byte offset in points.
std::string JoinPoints(const std::vector<std::string>& points, size_t begin, size_t end) {
  std::string out;
  for (size_t i = begin; i < end && i < points.size(); ++i) out += points[i];
  return out;
}

StatusOr<int64_t> ArgumentInt(const std::optional<Value>& value, const char* what) {
  if (!value->is_int()) {
    return Status::Errorf("{} must be an integer, not {}", what, value->TypeName());
  }
  return value->as_int();
}

StatusOr<Value> SplitString(const std::string& s, const CallArgs& args, bool from_right) {
  const auto separator = args.Get(0, "sep");
  const auto max_split_value = args.Get(1, "maxsplit");
  int64_t max_split = -1;
  if (max_split_value) {
    TETRA_ASSIGN_OR_RETURN(max_split, ArgumentInt(max_split_value, "maxsplit"));
  }
  std::vector<std::string> parts;
  if (!separator || separator->is_none()) {
    // Runs of whitespace separate; leading/trailing whitespace is dropped.
    std::vector<std::pair<size_t, size_t>> words;
    size_t pos = 0;
    while (pos < s.size()) {
      while (pos < s.size() && IsPythonSpace(s[pos])) ++pos;
      if (pos >= s.size()) break;
      size_t end = pos;
      while (end < s.size() && !IsPythonSpace(s[end])) ++end;
      words.emplace_back(pos, end);
      pos = end;
    }
    if (max_split < 0 || static_cast<size_t>(max_split) >= words.size()) {
      for (auto [b, e] : words) parts.push_back(s.substr(b, e - b));
    } else if (!from_right) {
      for (int64_t i = 0; i < max_split; ++i) parts.push_back(s.substr(words[i].first, words[i].second - words[i].first));
      std::string rest = s.substr(words[max_split].first);
      parts.push_back(StripString(rest, nullptr, false, true));
    } else {
      const size_t keep = words.size() - max_split;
      std::string rest = s.substr(0, words[keep - 1].second);
      parts.push_back(StripString(rest, nullptr, true, false));
      for (size_t i = keep; i < words.size(); ++i) parts.push_back(s.substr(words[i].first, words[i].second - words[i].first));
    }
  } else {
    if (!separator->is_string()) return Status::Errorf("must be str or None, not {}", separator->TypeName());
    const std::string& sep = separator->as_string();
    if (sep.empty()) return Status::Error("empty separator");
    if (!from_right) {
      size_t pos = 0;
      int64_t splits = 0;
      while (max_split < 0 || splits < max_split) {
        const size_t found = s.find(sep, pos);
        if (found == std::string::npos) break;
        parts.push_back(s.substr(pos, found - pos));
        pos = found + sep.size();
        ++splits;
      }
      parts.push_back(s.substr(pos));
    } else {
      size_t end = s.size();
      int64_t splits = 0;
      std::vector<std::string> reversed;
      while (max_split < 0 || splits < max_split) {
        if (end < sep.size()) break;
        const size_t found = s.rfind(sep, end - sep.size());
        if (found == std::string::npos) break;
        reversed.push_back(s.substr(found + sep.size(), end - found - sep.size()));
        end = found;
        ++splits;
      }
      reversed.push_back(s.substr(0, end));
      parts.assign(reversed.rbegin(), reversed.rend());
    }
  }
  ValueList items;
  for (auto& part : parts) items.push_back(Value::String(std::move(part)));
  return Value::List(std::move(items));
}

std::string AsciiMap(std::string s, int (*function)(int)) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x80) c = static_cast<char>(function(c));
  }
  return s;
}

StatusOr<Value> CallStringMethod(const std::string& s, const std::string& name, const CallArgs& args,
                                 const ValueLimits& limits) {
  if (name == "startswith" || name == "endswith") {
    const auto affix = args.Get(0, "prefix");
    if (!affix) return Status::Errorf("{}() takes at least 1 argument (0 given)", name);
    ValueList candidates = affix->is_tuple() ? affix->items() : ValueList{*affix};
    for (const auto& candidate : candidates) {
      if (!candidate.is_string()) {
        return Status::Errorf("{} first arg must be str or a tuple of str, not {}", name, candidate.TypeName());
      }
      const std::string& a = candidate.as_string();
      const bool match = a.size() <= s.size() &&
                         (name == "startswith" ? s.compare(0, a.size(), a) == 0
                                               : s.compare(s.size() - a.size(), a.size(), a) == 0);
      if (match) return Value::Bool(true);
    }
    return Value::Bool(false);
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const auto chars = args.Get(0, "chars");
    std::string chars_text;
    const bool has_chars = chars && !chars->is_none();
    if (has_chars) {
      if (!chars->is_string()) return Status::Errorf("{} arg must be None or str", name);
      chars_text = chars->as_string();
    }
    return Value::String(StripString(s, has_chars ? &chars_text : nullptr, name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") return SplitString(s, args, name == "rsplit");
  if (name == "splitlines") {
    ValueList lines;
    size_t pos = 0;
    while (pos < s.size()) {
      size_t end = s.find_first_of("\n\r", pos);
      if (end == std::string::npos) {
        lines.push_back(Value::String(s.substr(pos)));
        break;
      }
      lines.push_back(Value::String(s.substr(pos, end - pos)));
      pos = end + ((s[end] == '\r' && end + 1 < s.size() && s[end + 1] == '\n') ? 2 : 1);
    }
    return Value::List(std::move(lines));
  }
  if (name == "replace") {
    const auto old_value = args.Get(0, "old");
    const auto new_value = args.Get(1, "new");
    if (!old_value || !new_value || !old_value->is_string() || !new_value->is_string()) {
      return Status::Error("replace() arguments must be str");
    }
    int64_t count = -1;
    if (auto c = args.Get(2, "count")) {
      TETRA_ASSIGN_OR_RETURN(count, ArgumentInt(c, "count"));
    }
    const std::string& from = old_value->as_string();
    const std::string& to = new_value->as_string();
    std::string out;
    if (from.empty()) {
      auto points = SplitCodePoints(s);
      int64_t done = 0;
      for (size_t i = 0; i <= points.size(); ++i) {
        if (count < 0 || done < count) {
          out += to;
          ++done;
        }
        if (i < points.size()) out += points[i];
        if (out.size() > limits.max_string_bytes) return Status::Error("string result too large");
      }
      return Value::String(std::move(out));
    }
    size_t pos = 0;
    int64_t done = 0;
    while (count < 0 || done < count) {
      const size_t found = s.find(from, pos);
      if (found == std::string::npos) break;
      out.append(s, pos, found - pos);
      out += to;
      pos = found + from.size();
      ++done;
      if (out.size() > limits.max_string_bytes) return Status::Error("string result too large");
    }
    out.append(s, pos);
    return Value::String(std::move(out));
  }
  if (name == "upper") return Value::String(AsciiMap(s, ::toupper));
  if (name == "lower") return Value::String(AsciiMap(s, ::tolower));
  if (name == "swapcase") {
    std::string out = s;
    for (char& c : out) c = std::isupper(static_cast<unsigned char>(c)) ? std::tolower(c) : std::toupper(c);
    return Value::String(out);
  }
  if (name == "capitalize") {
    std::string out = AsciiMap(s, ::tolower);
    if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
    return Value::String(out);
  }
  if (name == "title") {
    std::string out = s;
    bool previous_cased = false;
    for (char& c : out) {
      const bool is_letter = std::isalpha(static_cast<unsigned char>(c));
      if (is_letter) c = previous_cased ? std::tolower(c) : std::toupper(c);
      previous_cased = is_letter;
    }
    return Value::String(out);
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
    const auto needle = args.Get(0, "sub");
    if (!needle || !needle->is_string()) return Status::Errorf("{}() argument must be str", name);
    const std::string& n = needle->as_string();
    if (name == "count") {
      if (n.empty()) return Value::Int(static_cast<int64_t>(CountCodePoints(s)) + 1);
      int64_t count = 0;
      for (size_t pos = s.find(n); pos != std::string::npos; pos = s.find(n, pos + n.size())) ++count;
      return Value::Int(count);
    }
    const size_t found = (name == "find" || name == "index") ? s.find(n) : s.rfind(n);
    if (found == std::string::npos) {
      if (name == "index" || name == "rindex") return Status::Error("substring not found");
      return Value::Int(-1);
    }
    return Value::Int(static_cast<int64_t>(CountCodePoints(s.substr(0, found))));
  }
  if (name == "format") {
    TETRA_ASSIGN_OR_RETURN(auto text, BraceFormat(s, args));
    return Value::String(std::move(text));
  }
  if (name == "join") {
    const auto items_value = args.Get(0, "iterable");
    if (!items_value) return Status::Error("join() takes exactly one argument (0 given)");
    TETRA_ASSIGN_OR_RETURN(auto items, IterateValue(*items_value));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_string()) {
        return Status::Errorf("sequence item {}: expected str instance, {} found", i, items[i].TypeName());
      }
      if (i > 0) out += s;
      out += items[i].as_string();
      if (out.size() > limits.max_string_bytes) return Status::Error("string result too large");
    }
    return Value::String(std::move(out));
  }
  auto all_of = [&](auto predicate) {
    if (s.empty()) return Value::Bool(false);
    return Value::Bool(std::all_of(s.begin(), s.end(), [&](char c) { return predicate(static_cast<unsigned char>(c)); }));
  };
  if (name == "isdigit" || name == "isnumeric" || name == "isdecimal") return all_of(::isdigit);
  if (name == "isalpha") return all_of(::isalpha);
  if (name == "isalnum") return all_of(::isalnum);
  if (name == "isspace") return all_of(IsPythonSpace);
  if (name == "isupper" || name == "islower") {
    bool has_cased = false;
    for (char c : s) {
      if (std::isalpha(static_cast<unsigned char>(c))) {
        has_cased = true;
        if ((name == "isupper") != static_cast<bool>(std::isupper(static_cast<unsigned char>(c)))) {
          return Value::Bool(false);
        }
      }
    }
    return Value::Bool(has_cased);
  }
  if (name == "istitle") {
    TETRA_ASSIGN_OR_RETURN(auto titled, CallStringMethod(s, "title", CallArgs{}, limits));
    return Value::Bool(titled.as_string() == s && s != AsciiMap(s, ::tolower));
  }
  if (name == "removeprefix" || name == "removesuffix") {
    const auto affix = args.Get(0, "prefix");
    if (!affix || !affix->is_string()) return Status::Errorf("{}() argument must be str", name);
    const std::string& a = affix->as_string();
    if (name == "removeprefix" && s.compare(0, a.size(), a) == 0) return Value::String(s.substr(a.size()));
    if (name == "removesuffix" && !a.empty() && a.size() <= s.size() &&
        s.compare(s.size() - a.size(), a.size(), a) == 0) {
      return Value::String(s.substr(0, s.size() - a.size()));
    }
    return Value::String(s);
  }
  if (name == "partition" || name == "rpartition") {
    const auto separator = args.Get(0, "sep");
    if (!separator || !separator->is_string() || separator->as_string().empty()) {
      return Status::Errorf("{}() needs a non-empty str separator", name);
    }
    const std::string& sep = separator->as_string();
    const size_t found = name == "partition" ? s.find(sep) : s.rfind(sep);
    if (found == std::string::npos) {
      if (name == "partition") return Value::List({Value::String(s), Value::String(""), Value::String("")}, true);
      return Value::List({Value::String(""), Value::String(""), Value::String(s)}, true);
    }
    return Value::List({Value::String(s.substr(0, found)), Value::String(sep),
                        Value::String(s.substr(found + sep.size()))},
                       true);
  }
  if (name == "zfill" || name == "center" || name == "ljust" || name == "rjust") {
    const auto width_value = args.Get(0, "width");
    if (!width_value) return Status::Errorf("{}() takes at least 1 argument", name);
    TETRA_ASSIGN_OR_RETURN(int64_t width, ArgumentInt(width_value, "width"));
    const int64_t length = static_cast<int64_t>(CountCodePoints(s));
    if (width > static_cast<int64_t>(limits.max_string_bytes)) return Status::Error("string result too large");
    if (width <= length) return Value::String(s);
    const size_t pad = static_cast<size_t>(width - length);
    if (name == "zfill") {
      if (!s.empty() && (s[0] == '-' || s[0] == '+')) return Value::String(s.substr(0, 1) + std::string(pad, '0') + s.substr(1));
      return Value::String(std::string(pad, '0') + s);
    }
    std::string fill = " ";
    if (auto f = args.Get(1, "fillchar"); f && f->is_string()) fill = f->as_string();
    auto repeat = [&](size_t n) {
      std::string out;
      for (size_t i = 0; i < n; ++i) out += fill;
      return out;
    };
    if (name == "ljust") return Value::String(s + repeat(pad));
    if (name == "rjust") return Value::String(repeat(pad) + s);
    const size_t left = pad / 2 + (pad & static_cast<size_t>(width) & 1);
    return Value::String(repeat(left) + s + repeat(pad - left));
  }
  return Status::Errorf("'str' object has no attribute '{}'", name);
}

StatusOr<Value> CallDictMethod(const Value& dict, const std::string& name, const CallArgs& args) {
  if (name == "get") {
    const auto key = args.Get(0, "key");
    if (!key) return Status::Error("get expected at least 1 argument, got 0");
    if (const Value* found = dict.Find(*key)) return *found;
    if (auto fallback = args.Get(1, "default")) return *fallback;
    return Value::None();
  }
  if (name == "items") {
    ValueList items;
    for (const auto& [key, value] : dict.pairs()) items.push_back(Value::List({key, value}, true));
    return Value::List(std::move(items));
  }
  if (name == "keys" || name == "values") {
    ValueList items;
    for (const auto& [key, value] : dict.pairs()) items.push_back(name == "keys" ? key : value);
    return Value::List(std::move(items));
  }
  if (name == "copy") return Value::Dict(dict.pairs());
  return Status::Errorf("'dict' object has no attribute '{}'", name);
}

StatusOr<Value> CallListMethod(const Value& list, const std::string& name, const CallArgs& args) {
  if (name == "copy") return Value::List(list.items(), list.is_tuple());
  const auto needle = args.Get(0, "value");
  if (!needle) return Status::Errorf("{}() takes exactly one argument (0 given)", name);
  int64_t count = 0;
  for (size_t i = 0; i < list.items().size(); ++i) {
    if (list.items()[i].Equals(*needle)) {
      if (name == "index") return Value::Int(static_cast<int64_t>(i));
      ++count;
    }
  }
  if (name == "index") return Status::Errorf("{} is not in list", needle->Repr());
  return Value::Int(count);
}

int64_t ClampSliceIndex(int64_t index, int64_t length, int64_t step) {
  if (index < 0) {
    index += length;
    if (index < 0) index = step < 0 ? -1 : 0;
  } else if (index >= length) {
    index = step < 0 ? length - 1 : length;
  }
  return index;
}

}  // namespace

Status UndefinedError(const Value& undefined) {
  if (undefined.undefined_hint().empty()) return Status::Error("value is undefined");
  return Status::Error(undefined.undefined_hint());
}

std::string StripString(const std::string& s, const std::string* chars, bool left, bool right) {
  if (chars == nullptr) {
    size_t begin = 0;
    size_t end = s.size();
    if (left) {
      while (begin < end && IsPythonSpace(s[begin])) ++begin;
    }
    if (right) {
      while (end > begin && IsPythonSpace(s[end - 1])) --end;
    }
    return s.substr(begin, end - begin);
  }
  const auto strip_points = SplitCodePoints(*chars);
  auto points = SplitCodePoints(s);
  auto is_stripped = [&](const std::string& p) {
    return std::find(strip_points.begin(), strip_points.end(), p) != strip_points.end();
  };
  size_t begin = 0;
  size_t end = points.size();
  if (left) {
    while (begin < end && is_stripped(points[begin])) ++begin;
  }
  if (right) {
    while (end > begin && is_stripped(points[end - 1])) --end;
  }
  return JoinPoints(points, begin, end);
}

StatusOr<ValueList> IterateValue(const Value& value) {
  switch (value.kind()) {
    case ValueKind::kUndefined: return ValueList{};
    case ValueKind::kList:
    case ValueKind::kGenerator: return value.items();
    case ValueKind::kDict: {
      ValueList keys;
      for (const auto& [key, item] : value.pairs()) keys.push_back(key);
      return keys;
    }
    case ValueKind::kString: {
      ValueList characters;
      for (auto& point : SplitCodePoints(value.as_string())) characters.push_back(Value::String(std::move(point)));
      return characters;
    }
    default: return Status::Errorf("'{}' object is not iterable", value.TypeName());
  }
}

bool HasMethod(const Value& object, const std::string& name) {
  switch (object.kind()) {
    case ValueKind::kString: return kStringMethods.count(name) > 0;
    case ValueKind::kDict: return kDictMethods.count(name) > 0;
    case ValueKind::kList: return kListMethods.count(name) > 0;
    default: return false;
  }
}

StatusOr<Value> CallMethod(const Value& object, const std::string& name, const CallArgs& args,
                           const ValueLimits& limits) {
  switch (object.kind()) {
    case ValueKind::kString: return CallStringMethod(object.as_string(), name, args, limits);
    case ValueKind::kDict: return CallDictMethod(object, name, args);
    case ValueKind::kList: return CallListMethod(object, name, args);
    default: return Status::Errorf("'{}' object has no attribute '{}'", object.TypeName(), name);
  }
}

StatusOr<Value> GetAttribute(const Value& object, const std::string& name, const ValueLimits& limits) {
  if (object.is_undefined()) return UndefinedError(object);
  if (!name.empty() && name[0] == '_') return Unsafe(object, name);
  if (HasMethod(object, name)) {
    return Value::Function(name, [object, name, limits](CallArgs& args) {
      return CallMethod(object, name, args, limits);
    });
  }
  if ((object.is_dict() && kDictUnsafeMethods.count(name)) ||
      (object.is_list() && !object.is_tuple() && kListUnsafeMethods.count(name))) {
    return Unsafe(object, name);
  }
  if (object.is_dict() || object.is_namespace()) {
    if (const Value* found = object.Find(name)) return *found;
  }
  return MissingAttribute(object, name);
}

StatusOr<Value> GetItem(const Value& object, const Value& key, const ValueLimits& limits) {
  if (object.is_undefined()) return UndefinedError(object);
  if (object.is_dict() || object.is_namespace()) {
    if (const Value* found = object.Find(key)) return *found;
  } else if ((object.is_list() || object.is_string()) && key.is_int()) {
    if (object.is_list()) {
      const int64_t length = static_cast<int64_t>(object.items().size());
      int64_t index = key.as_int() < 0 ? key.as_int() + length : key.as_int();
      if (index >= 0 && index < length) return object.items()[index];
    } else {
      const auto points = SplitCodePoints(object.as_string());
      const int64_t length = static_cast<int64_t>(points.size());
      int64_t index = key.as_int() < 0 ? key.as_int() + length : key.as_int();
      if (index >= 0 && index < length) return Value::String(points[index]);
    }
    return Value::Undefined("'" + ObjectTypeRepr(object) + "' has no element " + key.Repr());
  }
  if (key.is_string()) {
    if (object.is_namespace()) return MissingAttribute(object, key.as_string());
    return GetAttribute(object, key.as_string(), limits);
  }
  return Value::Undefined("'" + ObjectTypeRepr(object) + "' has no element " + key.Repr());
}

StatusOr<Value> GetSlice(const Value& object, const Value* start, const Value* stop, const Value* step) {
  if (object.is_undefined()) return UndefinedError(object);
  auto optional_int = [](const Value* v, const char* what) -> StatusOr<std::optional<int64_t>> {
    if (v == nullptr || v->is_none()) return std::optional<int64_t>();
    if (!v->is_int()) {
      return Status::Errorf("slice {} must be an integer or None, not {}", what, v->TypeName());
    }
    return std::optional<int64_t>(v->as_int());
  };
  TETRA_ASSIGN_OR_RETURN(auto start_index, optional_int(start, "start"));
  TETRA_ASSIGN_OR_RETURN(auto stop_index, optional_int(stop, "stop"));
  TETRA_ASSIGN_OR_RETURN(auto step_value, optional_int(step, "step"));
  const int64_t step_size = step_value.value_or(1);
  if (step_size == 0) return Status::Error("slice step cannot be zero");
  std::vector<std::string> points;
  int64_t length;
  if (object.is_string()) {
    points = SplitCodePoints(object.as_string());
    length = static_cast<int64_t>(points.size());
  } else if (object.is_list()) {
    length = static_cast<int64_t>(object.items().size());
  } else {
    return Status::Errorf("'{}' object is not subscriptable", object.TypeName());
  }
  int64_t begin = start_index ? ClampSliceIndex(*start_index, length, step_size) : (step_size > 0 ? 0 : length - 1);
  int64_t end = stop_index ? ClampSliceIndex(*stop_index, length, step_size) : (step_size > 0 ? length : -1);
  std::vector<int64_t> indices;
  if (step_size > 0) {
    for (int64_t i = begin; i < end; i += step_size) indices.push_back(i);
  } else {
    for (int64_t i = begin; i > end; i += step_size) indices.push_back(i);
  }
  if (object.is_string()) {
    std::string out;
    for (int64_t i : indices) out += points[i];
    return Value::String(std::move(out));
  }
  ValueList items;
  for (int64_t i : indices) items.push_back(object.items()[i]);
  return Value::List(std::move(items), object.is_tuple());
}

StatusOr<std::string> PercentFormat(const std::string& format, const Value& arguments) {
  ValueList values = arguments.is_tuple() ? arguments.items() : ValueList{arguments};
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    if (++i >= format.size()) return Status::Error("incomplete format");
    std::string spec;
    while (i < format.size() && std::strchr("-+ #0123456789.", format[i]) != nullptr) spec += format[i++];
    if (i >= format.size()) return Status::Error("incomplete format");
    const char conversion = format[i];
    if (conversion == '%') {
      out += '%';
      continue;
    }
    if (next >= values.size()) return Status::Error("not enough arguments for format string");
    const Value& v = values[next++];
    char buffer[128];
    switch (conversion) {
      case 's': out += v.Str(); break;
      case 'r': out += v.Repr(); break;
      case 'd':
      case 'i':
        if (!v.is_number()) return Status::Errorf("%d format: a real number is required, not {}", v.TypeName());
        std::snprintf(buffer, sizeof(buffer), ("%" + spec + "lld").c_str(),
                      static_cast<long long>(v.is_int() ? v.as_int() : static_cast<int64_t>(v.as_float())));
        out += buffer;
        break;
      case 'f':
      case 'e':
      case 'g':
        if (!v.is_number()) return Status::Errorf("%{} format: a real number is required, not {}", conversion, v.TypeName());
        std::snprintf(buffer, sizeof(buffer), ("%" + spec + conversion).c_str(), v.as_float());
        out += buffer;
        break;
      default: return Status::Errorf("unsupported format character '{}'", conversion);
    }
  }
  if (next < values.size() && arguments.is_tuple()) {
    return Status::Error("not all arguments converted during string formatting");
  }
  return out;
}

StatusOr<std::string> BraceFormat(const std::string& format, const CallArgs& args) {
  std::string out;
  size_t automatic = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    const char c = format[i];
    if (c == '}') {
      if (i + 1 < format.size() && format[i + 1] == '}') {
        out += '}';
        ++i;
        continue;
      }
      return Status::Error("Single '}' encountered in format string");
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < format.size() && format[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    const size_t close = format.find('}', i);
    if (close == std::string::npos) return Status::Error("Single '{' encountered in format string");
    std::string field = format.substr(i + 1, close - i - 1);
    i = close;
    if (const size_t colon = field.find_first_of(":!"); colon != std::string::npos) {
      if (field.substr(colon) != ":" && field.substr(colon) != "!s") {
        return Status::Errorf("format spec '{}' is not supported", field.substr(colon));
      }
      field.resize(colon);
    }
    Value value;
    if (field.empty()) {
      if (automatic >= args.positional.size()) return Status::Errorf("Replacement index {} out of range", automatic);
      value = args.positional[automatic++];
    } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
      const size_t index = std::stoul(field);
      if (index >= args.positional.size()) return Status::Errorf("Replacement index {} out of range", index);
      value = args.positional[index];
    } else {
      bool found = false;
      for (const auto& [key, v] : args.keyword) {
        if (key == field) {
          value = v;
          found = true;
        }
      }
      if (!found) return Status::Errorf("KeyError: '{}'", field);
    }
    out += value.Str();
  }
  return out;
}

}  // namespace tetra::jinja
