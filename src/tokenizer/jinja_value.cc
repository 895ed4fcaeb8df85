#include "tokenizer/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace tetra::jinja {
namespace {

constexpr int kMaxJsonDepth = 512;

// Decodes one UTF-8 code point at `pos`; invalid bytes decode as themselves.
uint32_t DecodeAt(const std::string& s, size_t pos, size_t* length) {
  const auto byte = static_cast<unsigned char>(s[pos]);
  int extra = 0;
  uint32_t code = byte;
  if (byte >= 0xF0 && byte < 0xF8) {
    extra = 3;
    code = byte & 0x07;
  } else if (byte >= 0xE0) {
    extra = byte < 0xF0 ? 2 : 0;
    code = byte & 0x0F;
  } else if (byte >= 0xC0) {
    extra = 1;
    code = byte & 0x1F;
  }
  if (extra == 0 || pos + extra >= s.size()) {
    *length = 1;
    return byte;
  }
  for (int i = 1; i <= extra; ++i) {
    const auto next = static_cast<unsigned char>(s[pos + i]);
    if ((next & 0xC0) != 0x80) {
      *length = 1;
      return byte;
    }
    code = (code << 6) | (next & 0x3F);
  }
  *length = extra + 1;
  return code;
}

void AppendHex(std::string& out, const char* prefix, uint32_t code, int digits) {
  char buffer[16];
  std::snprintf(buffer, sizeof(buffer), "%s%0*x", prefix, digits, code);
  out += buffer;
}

bool IsPythonUnprintable(uint32_t code) {
  return code < 0x20 || (code >= 0x7F && code <= 0xA0) || code == 0xAD ||
         (code >= 0x200B && code <= 0x200F) || code == 0x2028 || code == 0x2029 ||
         (code >= 0x202A && code <= 0x202E) || (code >= 0x2060 && code <= 0x2064) ||
         code == 0xFEFF || code == 0x3000 || (code >= 0x2000 && code <= 0x200A);
}

void AppendJsonString(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (size_t pos = 0; pos < s.size(); ++pos) {
    const char c = s[pos];
    if (ensure_ascii && static_cast<unsigned char>(c) >= 0x80) {
      size_t length = 1;
      uint32_t code = DecodeAt(s, pos, &length);
      if (code >= 0x10000) {
        code -= 0x10000;
        AppendHex(out, "\\u", 0xD800 + (code >> 10), 4);
        AppendHex(out, "\\u", 0xDC00 + (code & 0x3FF), 4);
      } else {
        AppendHex(out, "\\u", code, 4);
      }
      pos += length - 1;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          AppendHex(out, "\\u", static_cast<unsigned char>(c), 4);
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

}  // namespace

std::vector<std::string> SplitCodePoints(const std::string& utf8) {
  std::vector<std::string> points;
  for (size_t pos = 0; pos < utf8.size();) {
    size_t length = 1;
    DecodeAt(utf8, pos, &length);
    points.push_back(utf8.substr(pos, length));
    pos += length;
  }
  return points;
}

size_t CountCodePoints(const std::string& utf8) {
  size_t count = 0;
  for (size_t pos = 0; pos < utf8.size();) {
    size_t length = 1;
    DecodeAt(utf8, pos, &length);
    pos += length;
    ++count;
  }
  return count;
}

std::string FormatPythonFloat(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  std::string scientific(buffer, result.ptr);
  // scientific is "[-]d[.ddd]e[+-]xx"
  bool negative = scientific[0] == '-';
  if (negative) scientific.erase(0, 1);
  const size_t e_pos = scientific.find('e');
  std::string digits = scientific.substr(0, e_pos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::stoi(scientific.substr(e_pos + 1));
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent <= 15) {
    const int point = exponent + 1;  // digits before the decimal point
    if (point <= 0) {
      out += "0." + std::string(-point, '0') + digits;
    } else if (static_cast<size_t>(point) >= digits.size()) {
      out += digits + std::string(point - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, point) + "." + digits.substr(point);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exponent_text[16];
  std::snprintf(exponent_text, sizeof(exponent_text), "e%c%02d", exponent < 0 ? '-' : '+',
                std::abs(exponent));
  return out + exponent_text;
}

std::string PythonStringRepr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (size_t pos = 0; pos < s.size();) {
    size_t length = 1;
    const uint32_t code = DecodeAt(s, pos, &length);
    if (code == static_cast<uint32_t>(quote)) {
      out += '\\';
      out += quote;
    } else if (code == '\\') {
      out += "\\\\";
    } else if (code == '\n') {
      out += "\\n";
    } else if (code == '\r') {
      out += "\\r";
    } else if (code == '\t') {
      out += "\\t";
    } else if (code == ' ') {
      out += ' ';
    } else if (IsPythonUnprintable(code)) {
      if (code <= 0xFF) {
        AppendHex(out, "\\x", code, 2);
      } else {
        AppendHex(out, "\\u", code, 4);
      }
    } else {
      out.append(s, pos, length);
    }
    pos += length;
  }
  out += quote;
  return out;
}

Value Value::FromJson(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null: return None();
    case nlohmann::ordered_json::value_t::boolean: return Bool(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Int(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const auto u = json.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Float(static_cast<double>(u));
      return Int(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Float(json.get<double>());
    case nlohmann::ordered_json::value_t::string: return String(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      ValueList items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(FromJson(item));
      return List(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      ValuePairs pairs;
      pairs.reserve(json.size());
      for (const auto& [key, item] : json.items()) pairs.emplace_back(String(key), FromJson(item));
      return Dict(std::move(pairs));
    }
    default: return Undefined();
  }
}

const Value* Value::Find(const Value& key) const {
  if (!dict_) return nullptr;
  for (const auto& [k, v] : *dict_) {
    if (k.Equals(key)) return &v;
  }
  return nullptr;
}

const Value* Value::Find(const std::string& key) const {
  if (!dict_) return nullptr;
  for (const auto& [k, v] : *dict_) {
    if (k.is_string() && k.as_string() == key) return &v;
  }
  return nullptr;
}

bool Value::IsTruthy() const {
  switch (kind_) {
    case ValueKind::kUndefined:
    case ValueKind::kNone: return false;
    case ValueKind::kBool:
    case ValueKind::kInt: return int_ != 0;
    case ValueKind::kFloat: return float_ != 0;
    case ValueKind::kString: return !string_.empty();
    case ValueKind::kList: return !list_->empty();
    case ValueKind::kDict: return !dict_->empty();
    case ValueKind::kNamespace:
    case ValueKind::kFunction:
    case ValueKind::kGenerator: return true;
  }
  return false;
}

std::string Value::TypeName() const {
  switch (kind_) {
    case ValueKind::kUndefined: return "Undefined";
    case ValueKind::kNone: return "NoneType";
    case ValueKind::kBool: return "bool";
    case ValueKind::kInt: return "int";
    case ValueKind::kFloat: return "float";
    case ValueKind::kString: return "str";
    case ValueKind::kList: return is_tuple_ ? "tuple" : "list";
    case ValueKind::kDict: return "dict";
    case ValueKind::kNamespace: return "Namespace";
    case ValueKind::kFunction: return "function";
    case ValueKind::kGenerator: return "generator";
  }
  return "object";
}

std::string Value::Str() const {
  switch (kind_) {
    case ValueKind::kUndefined: return "";
    case ValueKind::kString: return string_;
    default: return Repr();
  }
}

std::string Value::Repr() const {
  switch (kind_) {
    case ValueKind::kUndefined: return "";
    case ValueKind::kNone: return "None";
    case ValueKind::kBool: return int_ ? "True" : "False";
    case ValueKind::kInt: return std::to_string(int_);
    case ValueKind::kFloat: return FormatPythonFloat(float_);
    case ValueKind::kString: return PythonStringRepr(string_);
    case ValueKind::kList: {
      std::string out = is_tuple_ ? "(" : "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        if (i > 0) out += ", ";
        out += (*list_)[i].Repr();
      }
      if (is_tuple_ && list_->size() == 1) out += ",";
      return out + (is_tuple_ ? ")" : "]");
    }
    case ValueKind::kDict:
    case ValueKind::kNamespace: {
      std::string out = kind_ == ValueKind::kNamespace ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [key, value] : *dict_) {
        if (!first) out += ", ";
        first = false;
        out += key.Repr() + ": " + value.Repr();
      }
      return out + (kind_ == ValueKind::kNamespace ? "}>" : "}");
    }
    case ValueKind::kFunction: return "<function " + string_ + ">";
    case ValueKind::kGenerator: return "<generator object>";
  }
  return "";
}

bool Value::Equals(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (kind_ == ValueKind::kFloat || other.kind_ == ValueKind::kFloat) {
      return as_float() == other.as_float();
    }
    return int_ == other.int_;
  }
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case ValueKind::kUndefined:
    case ValueKind::kNone: return true;
    case ValueKind::kString: return string_ == other.string_;
    case ValueKind::kList: {
      if (is_tuple_ != other.is_tuple_ || list_->size() != other.list_->size()) return false;
      for (size_t i = 0; i < list_->size(); ++i) {
        if (!(*list_)[i].Equals((*other.list_)[i])) return false;
      }
      return true;
    }
    case ValueKind::kDict: {
      if (dict_->size() != other.dict_->size()) return false;
      for (const auto& [key, value] : *dict_) {
        const Value* found = other.Find(key);
        if (found == nullptr || !found->Equals(value)) return false;
      }
      return true;
    }
    case ValueKind::kNamespace: return dict_ == other.dict_;
    case ValueKind::kFunction: return function_ == other.function_;
    case ValueKind::kGenerator: return list_ == other.list_;
    default: return false;
  }
}

StatusOr<bool> Value::Less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind_ == ValueKind::kFloat || b.kind_ == ValueKind::kFloat) return a.as_float() < b.as_float();
    return a.int_ < b.int_;
  }
  if (a.is_string() && b.is_string()) return a.string_ < b.string_;
  if (a.is_list() && b.is_list() && a.is_tuple_ == b.is_tuple_) {
    const auto& x = *a.list_;
    const auto& y = *b.list_;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i].Equals(y[i])) continue;
      return Less(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  return Status::Errorf("'<' not supported between instances of '{}' and '{}'", a.TypeName(),
                        b.TypeName());
}

StatusOr<std::string> Value::ToJson(const JsonStyle& style) const {
  std::string out;
  TETRA_RETURN_IF_ERROR(AppendJson(out, style, 0));
  return out;
}

Status Value::AppendJson(std::string& out, const JsonStyle& style, int depth) const {
  if (depth > kMaxJsonDepth) return Status::Error("tojson: value nested too deeply");
  const std::string& item_separator = style.item_separator;
  const std::string& key_separator = style.key_separator;
  auto newline = [&](int level) {
    if (!style.indent) return;
    out += '\n';
    for (int i = 0; i < level; ++i) out += *style.indent;
  };
  switch (kind_) {
    case ValueKind::kNone: out += "null"; return Status::Ok();
    case ValueKind::kBool: out += int_ ? "true" : "false"; return Status::Ok();
    case ValueKind::kInt: out += std::to_string(int_); return Status::Ok();
    case ValueKind::kFloat:
      if (std::isnan(float_)) {
        out += "NaN";
      } else if (std::isinf(float_)) {
        out += float_ > 0 ? "Infinity" : "-Infinity";
      } else {
        out += FormatPythonFloat(float_);
      }
      return Status::Ok();
    case ValueKind::kString: AppendJsonString(out, string_, style.ensure_ascii); return Status::Ok();
    case ValueKind::kList: {
      if (list_->empty()) {
        out += "[]";
        return Status::Ok();
      }
      out += '[';
      for (size_t i = 0; i < list_->size(); ++i) {
        if (i > 0) out += item_separator;
        newline(depth + 1);
        TETRA_RETURN_IF_ERROR((*list_)[i].AppendJson(out, style, depth + 1));
      }
      newline(depth);
      out += ']';
      return Status::Ok();
    }
    case ValueKind::kDict: {
      if (dict_->empty()) {
        out += "{}";
        return Status::Ok();
      }
      std::vector<const std::pair<Value, Value>*> order;
      for (const auto& pair : *dict_) order.push_back(&pair);
      if (style.sort_keys) {
        std::stable_sort(order.begin(), order.end(), [](const auto* x, const auto* y) {
          return x->first.Str() < y->first.Str();
        });
      }
      out += '{';
      bool first = true;
      for (const auto* pair : order) {
        if (!first) out += item_separator;
        first = false;
        newline(depth + 1);
        const Value& key = pair->first;
        if (key.is_string()) {
          AppendJsonString(out, key.string_, style.ensure_ascii);
        } else if (key.kind_ == ValueKind::kBool) {
          out += key.int_ ? "\"true\"" : "\"false\"";
        } else if (key.is_none()) {
          out += "\"null\"";
        } else if (key.is_number()) {
          out += "\"" + key.Repr() + "\"";
        } else {
          return Status::Errorf("tojson: keys must be str, int, float, bool or None, not {}",
                                key.TypeName());
        }
        out += key_separator;
        TETRA_RETURN_IF_ERROR(pair->second.AppendJson(out, style, depth + 1));
      }
      newline(depth);
      out += '}';
      return Status::Ok();
    }
    default:
      return Status::Errorf("tojson: Object of type {} is not JSON serializable", TypeName());
  }
}

std::optional<Value> CallArgs::Get(size_t position, const std::string& name) const {
  if (position < positional.size()) return positional[position];
  for (const auto& [key, value] : keyword) {
    if (key == name) return value;
  }
  return std::nullopt;
}

}  // namespace tetra::jinja
