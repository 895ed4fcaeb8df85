#include "tokenizer/jinja_interpreter.h"

#include <cmath>
#include <ctime>
#include <unordered_map>

#include "tokenizer/jinja_builtins.h"

namespace tetra::jinja {
namespace {

// Errors from raise_exception carry this prefix so that no line number is
// added; RenderTree strips it.
constexpr char kRaisedMarker[] = "\x01raised:";

struct Frame;
using FramePtr = std::shared_ptr<Frame>;

// One scope. Lookups walk to the parent; writes stay here.
struct Frame {
  explicit Frame(FramePtr parent_frame) : parent(std::move(parent_frame)) {}
  const Value* Lookup(const std::string& name) const {
    for (const Frame* frame = this; frame != nullptr; frame = frame->parent.get()) {
      for (const auto& [key, value] : frame->variables) {
        if (key == name) return &value;
      }
    }
    return nullptr;
  }
  void Set(const std::string& name, Value value) {
    for (auto& [key, existing] : variables) {
      if (key == name) {
        existing = std::move(value);
        return;
      }
    }
    variables.emplace_back(name, std::move(value));
  }
  std::vector<std::pair<std::string, Value>> variables;
  FramePtr parent;
};

enum class Flow { kNormal, kBreak, kContinue };

bool HasLinePrefix(const std::string& message) {
  return message.rfind("line ", 0) == 0 || message.rfind(kRaisedMarker, 0) == 0;
}

Status WithLine(const Status& status, int line) {
  if (status.ok() || HasLinePrefix(status.message())) return status;
  return Status::Errorf("line {}: {}", line, status.message());
}

bool NameIsUsed(const Node& node, const std::string& name) {
  if (node.kind == NodeKind::kName && node.name == name) return true;
  auto any = [&](const NodeList& list) {
    for (const auto& child : list) {
      if (child && NameIsUsed(*child, name)) return true;
    }
    return false;
  };
  if (any(node.children) || any(node.args) || any(node.body) || any(node.else_body)) return true;
  for (const auto& [key, child] : node.kwargs) {
    if (child && NameIsUsed(*child, name)) return true;
  }
  for (const auto& body : node.bodies) {
    if (any(body)) return true;
  }
  return false;
}

class Renderer {
 public:
  explicit Renderer(const RenderOptions& options) : options_(options) {
    value_limits_.max_string_bytes = options.limits.max_output_bytes;
  }

  StatusOr<std::string> Render(const Node& root, const Value& context) {
    if (!context.is_dict()) return Status::Error("the render context must be a JSON object");
    auto globals = std::make_shared<Frame>(nullptr);
    AddGlobals(*globals);
    auto frame = std::make_shared<Frame>(globals);
    for (const auto& [key, value] : context.pairs()) frame->Set(key.Str(), value);
    std::string out;
    Flow flow = Flow::kNormal;
    TETRA_RETURN_IF_ERROR(ExecBody(root.body, frame, out, &flow));
    return out;
  }

 private:
  // ---- globals ----
  void AddGlobals(Frame& globals) {
    globals.Set("raise_exception", Value::Function("raise_exception", [](CallArgs& args) -> StatusOr<Value> {
      const auto message = args.Get(0, "message");
      return Status::Error(kRaisedMarker + (message ? message->Str() : std::string()));
    }));
    globals.Set("strftime_now", Value::Function("strftime_now", [this](CallArgs& args) -> StatusOr<Value> {
      const auto format = args.Get(0, "format");
      if (!format || !format->is_string()) return Status::Error("strftime_now() needs a format string");
      const auto now = options_.now.value_or(std::chrono::system_clock::now());
      const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
      std::tm local{};
      localtime_r(&seconds, &local);
      char buffer[512];
      const size_t length = std::strftime(buffer, sizeof(buffer), format->as_string().c_str(), &local);
      return Value::String(std::string(buffer, length));
    }));
    globals.Set("range", Value::Function("range", [this](CallArgs& args) -> StatusOr<Value> {
      int64_t bounds[3] = {0, 0, 1};
      const size_t count = args.positional.size();
      if (count < 1 || count > 3 || !args.keyword.empty()) return Status::Error("range expected 1 to 3 arguments");
      for (const auto& v : args.positional) {
        if (!v.is_int()) return Status::Errorf("'{}' object cannot be interpreted as an integer", v.TypeName());
      }
      if (count == 1) {
        bounds[1] = args.positional[0].as_int();
      } else {
        bounds[0] = args.positional[0].as_int();
        bounds[1] = args.positional[1].as_int();
        if (count == 3) bounds[2] = args.positional[2].as_int();
      }
      if (bounds[2] == 0) return Status::Error("range() arg 3 must not be zero");
      const double size = std::ceil((static_cast<double>(bounds[1]) - bounds[0]) / bounds[2]);
      if (size > static_cast<double>(value_limits_.max_list_items)) {
        return Status::Errorf("range() of {} items is larger than the limit {}", size, value_limits_.max_list_items);
      }
      ValueList items;
      for (int64_t i = bounds[0]; bounds[2] > 0 ? i < bounds[1] : i > bounds[1]; i += bounds[2]) {
        items.push_back(Value::Int(i));
      }
      return Value::List(std::move(items));
    }));
    globals.Set("namespace", Value::Function("namespace", [](CallArgs& args) -> StatusOr<Value> {
      ValuePairs pairs;
      auto add = [&](const std::string& key, const Value& value) -> Status {
        if (!key.empty() && key[0] == '_') {
          return Status::Errorf(
              "Chat templates cannot store underscore-prefixed attributes on a namespace, but got '{}'.", key);
        }
        for (auto& [k, v] : pairs) {
          if (k.as_string() == key) {
            v = value;
            return Status::Ok();
          }
        }
        pairs.emplace_back(Value::String(key), value);
        return Status::Ok();
      };
      for (const auto& positional : args.positional) {
        if (!positional.is_dict()) return Status::Error("namespace() takes a dict or keyword arguments");
        for (const auto& [k, v] : positional.pairs()) TETRA_RETURN_IF_ERROR(add(k.Str(), v));
      }
      for (const auto& [k, v] : args.keyword) TETRA_RETURN_IF_ERROR(add(k, v));
      return Value::Namespace(std::move(pairs));
    }));
    globals.Set("dict", Value::Function("dict", [](CallArgs& args) -> StatusOr<Value> {
      ValuePairs pairs;
      for (const auto& positional : args.positional) {
        if (!positional.is_dict()) return Status::Error("dict() takes a dict or keyword arguments");
        pairs = positional.pairs();
      }
      Value dict = Value::Dict(std::move(pairs));
      ValuePairs merged = dict.pairs();
      for (const auto& [k, v] : args.keyword) {
        bool replaced = false;
        for (auto& [key, value] : merged) {
          if (key.is_string() && key.as_string() == k) {
            value = v;
            replaced = true;
          }
        }
        if (!replaced) merged.emplace_back(Value::String(k), v);
      }
      return Value::Dict(std::move(merged));
    }));
  }

  // ---- statements ----
  Status Append(std::string& out, const std::string& text) {
    if (out.size() + text.size() > options_.limits.max_output_bytes) {
      return Status::Errorf("output exceeds the limit of {} bytes", options_.limits.max_output_bytes);
    }
    out += text;
    return Status::Ok();
  }

  // Bounds the interpreter's own recursion (statements, expressions and
  // macro calls together), so no template can overflow the stack.
  struct NestingGuard {
    explicit NestingGuard(int& depth) : depth(depth) { ++depth; }
    ~NestingGuard() { --depth; }
    int& depth;
  };
  Status CheckNesting() const {
    if (nesting_ > options_.limits.max_nesting) {
      return Status::Errorf("template recursion deeper than {} levels", options_.limits.max_nesting);
    }
    return Status::Ok();
  }

  Status ExecBody(const NodeList& body, const FramePtr& frame, std::string& out, Flow* flow) {
    NestingGuard guard(nesting_);
    TETRA_RETURN_IF_ERROR(CheckNesting());
    for (const auto& node : body) {
      TETRA_RETURN_IF_ERROR(WithLine(Exec(*node, frame, out, flow), node->line));
      if (*flow != Flow::kNormal) return Status::Ok();
    }
    return Status::Ok();
  }

  Status Exec(const Node& node, const FramePtr& frame, std::string& out, Flow* flow) {
    switch (node.kind) {
      case NodeKind::kText: return Append(out, node.literal.as_string());
      case NodeKind::kOutput: {
        TETRA_ASSIGN_OR_RETURN(auto value, Eval(*node.children[0], frame));
        return Append(out, value.Str());
      }
      case NodeKind::kIf: {
        for (size_t i = 0; i < node.children.size(); ++i) {
          TETRA_ASSIGN_OR_RETURN(auto condition, Eval(*node.children[i], frame));
          if (condition.IsTruthy()) return ExecBody(node.bodies[i], frame, out, flow);
        }
        return ExecBody(node.else_body, frame, out, flow);
      }
      case NodeKind::kFor: return ExecFor(node, frame, out);
      case NodeKind::kSet: {
        TETRA_ASSIGN_OR_RETURN(auto value, Eval(*node.children[0], frame));
        if (!node.attribute.empty()) {
          const Value* target = frame->Lookup(node.targets[0]);
          if (target == nullptr || !target->is_namespace()) {
            return Status::Error("cannot assign attribute on non-namespace object");
          }
          if (node.attribute[0] == '_') {
            return Status::Errorf(
                "Chat templates cannot store underscore-prefixed attributes on a namespace, but got '{}'.",
                node.attribute);
          }
          Value namespace_value = *target;
          auto& pairs = namespace_value.mutable_namespace_pairs();
          for (auto& [key, existing] : pairs) {
            if (key.as_string() == node.attribute) {
              existing = std::move(value);
              return Status::Ok();
            }
          }
          pairs.emplace_back(Value::String(node.attribute), std::move(value));
          return Status::Ok();
        }
        return Assign(node, value, *frame);
      }
      case NodeKind::kSetBlock: {
        std::string captured;
        Flow inner = Flow::kNormal;
        TETRA_RETURN_IF_ERROR(ExecBody(node.body, frame, captured, &inner));
        Value value = Value::String(std::move(captured));
        if (!node.children.empty()) {
          TETRA_ASSIGN_OR_RETURN(value, EvalWithBlockInput(*node.children[0], frame, value));
        }
        frame->Set(node.targets[0], std::move(value));
        return Status::Ok();
      }
      case NodeKind::kFilterBlock: {
        std::string captured;
        Flow inner = Flow::kNormal;
        TETRA_RETURN_IF_ERROR(ExecBody(node.body, frame, captured, &inner));
        TETRA_ASSIGN_OR_RETURN(auto value,
                               EvalWithBlockInput(*node.children[0], frame, Value::String(std::move(captured))));
        return Append(out, value.Str());
      }
      case NodeKind::kMacro: {
        frame->Set(node.name, MakeMacro(node, frame));
        return Status::Ok();
      }
      case NodeKind::kCallBlock: {
        Value caller = MakeMacro(node, frame);
        const Node& call = *node.args[0];
        TETRA_ASSIGN_OR_RETURN(auto callee, Eval(*call.children[0], frame));
        TETRA_ASSIGN_OR_RETURN(auto args, EvalArguments(call, frame));
        args.keyword.emplace_back("caller", caller);
        TETRA_ASSIGN_OR_RETURN(auto result, CallValue(callee, args));
        return Append(out, result.Str());
      }
      case NodeKind::kBreak: *flow = Flow::kBreak; return Status::Ok();
      case NodeKind::kContinue: *flow = Flow::kContinue; return Status::Ok();
      case NodeKind::kScope: return ExecBody(node.body, frame, out, flow);
      default: return Status::Error("internal: expression where a statement was expected");
    }
  }

  Status Assign(const Node& node, const Value& value, Frame& frame) {
    if (!node.targets_are_tuple && node.targets.size() == 1) {
      frame.Set(node.targets[0], value);
      return Status::Ok();
    }
    TETRA_ASSIGN_OR_RETURN(auto items, IterateValue(value));
    if (items.size() != node.targets.size()) {
      if (items.size() > node.targets.size()) {
        return Status::Errorf("too many values to unpack (expected {})", node.targets.size());
      }
      return Status::Errorf("not enough values to unpack (expected {}, got {})", node.targets.size(), items.size());
    }
    for (size_t i = 0; i < items.size(); ++i) frame.Set(node.targets[i], items[i]);
    return Status::Ok();
  }

  Status CountIteration() {
    if (++iterations_ > options_.limits.max_loop_iterations) {
      return Status::Errorf("loops ran more than {} iterations", options_.limits.max_loop_iterations);
    }
    return Status::Ok();
  }

  // jinja2's `loop` variable for iteration i of items. Kept out of line: its
  // temporaries would otherwise sit in every nested loop's stack frame.
  [[gnu::noinline]] static Value MakeLoopObject(const ValueList& items, int64_t i) {
    const int64_t length = static_cast<int64_t>(items.size());
    ValuePairs loop = {
        {Value::String("index"), Value::Int(i + 1)},
        {Value::String("index0"), Value::Int(i)},
        {Value::String("revindex"), Value::Int(length - i)},
        {Value::String("revindex0"), Value::Int(length - i - 1)},
        {Value::String("first"), Value::Bool(i == 0)},
        {Value::String("last"), Value::Bool(i == length - 1)},
        {Value::String("length"), Value::Int(length)},
        {Value::String("depth"), Value::Int(1)},
        {Value::String("depth0"), Value::Int(0)},
        {Value::String("previtem"), i > 0 ? items[i - 1] : Value::Undefined("there is no previous item")},
        {Value::String("nextitem"), i + 1 < length ? items[i + 1] : Value::Undefined("there is no next item")},
        {Value::String("cycle"), Value::Function("cycle", [i](CallArgs& args) -> StatusOr<Value> {
           if (args.positional.empty()) return Status::Error("no items for cycling given");
           return args.positional[i % args.positional.size()];
         })},
    };
    return Value::Dict(std::move(loop));
  }

  [[gnu::noinline]] Status ExecFor(const Node& node, const FramePtr& frame, std::string& out) {
    TETRA_ASSIGN_OR_RETURN(auto iterable, Eval(*node.children[0], frame));
    TETRA_ASSIGN_OR_RETURN(auto all_items, IterateValue(iterable));
    ValueList items;
    if (node.children.size() > 1) {
      for (const auto& item : all_items) {
        TETRA_RETURN_IF_ERROR(CountIteration());
        auto scope = std::make_shared<Frame>(frame);
        TETRA_RETURN_IF_ERROR(Assign(node, item, *scope));
        TETRA_ASSIGN_OR_RETURN(auto keep, Eval(*node.children[1], scope));
        if (keep.IsTruthy()) items.push_back(item);
      }
    } else {
      items = std::move(all_items);
    }
    const int64_t length = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < length; ++i) {
      TETRA_RETURN_IF_ERROR(CountIteration());
      auto scope = std::make_shared<Frame>(frame);
      TETRA_RETURN_IF_ERROR(Assign(node, items[i], *scope));
      scope->Set("loop", MakeLoopObject(items, i));
      Flow flow = Flow::kNormal;
      TETRA_RETURN_IF_ERROR(ExecBody(node.body, scope, out, &flow));
      if (flow == Flow::kBreak) break;
    }
    if (length == 0 && !node.else_body.empty()) {
      Flow flow = Flow::kNormal;
      auto scope = std::make_shared<Frame>(frame);
      return ExecBody(node.else_body, scope, out, &flow);
    }
    return Status::Ok();
  }

  Value MakeMacro(const Node& node, const FramePtr& defining_frame) {
    const bool uses_varargs = NameIsUsed(node, "varargs");
    const bool uses_kwargs = NameIsUsed(node, "kwargs");
    const bool uses_caller = NameIsUsed(node, "caller");
    const Node* macro = &node;
    const std::string name = node.kind == NodeKind::kMacro ? node.name : "caller";
    // The macro value usually lives in the frame it captures; a weak capture
    // avoids a reference cycle, and macro_frames_ keeps the frame alive
    // until the render ends.
    macro_frames_.push_back(defining_frame);
    std::weak_ptr<Frame> weak_frame = defining_frame;
    return Value::Function(name, [=, this](CallArgs& args) -> StatusOr<Value> {
      FramePtr defining_frame = weak_frame.lock();
      if (!defining_frame) return Status::Errorf("macro '{}' called after its render ended", name);
      if (call_depth_ >= options_.limits.max_call_depth) {
        return Status::Errorf("macro '{}': calls nested deeper than {}", name, options_.limits.max_call_depth);
      }
      const auto& parameters = macro->targets;
      auto scope = std::make_shared<Frame>(defining_frame);
      if (args.positional.size() > parameters.size() && !uses_varargs) {
        return Status::Errorf("macro '{}' takes not more than {} argument(s)", name, parameters.size());
      }
      std::vector<bool> bound(parameters.size(), false);
      for (size_t i = 0; i < args.positional.size() && i < parameters.size(); ++i) {
        scope->Set(parameters[i], args.positional[i]);
        bound[i] = true;
      }
      ValuePairs extra_keywords;
      for (const auto& [key, value] : args.keyword) {
        if (key == "caller" && uses_caller) {
          scope->Set("caller", value);
          continue;
        }
        bool matched = false;
        for (size_t i = 0; i < parameters.size(); ++i) {
          if (parameters[i] == key) {
            if (bound[i]) return Status::Errorf("macro '{}' got multiple values for argument '{}'", name, key);
            scope->Set(key, value);
            bound[i] = matched = true;
          }
        }
        if (!matched) {
          if (!uses_kwargs) return Status::Errorf("macro '{}' takes no keyword argument '{}'", name, key);
          extra_keywords.emplace_back(Value::String(key), value);
        }
      }
      for (size_t i = 0; i < parameters.size(); ++i) {
        if (bound[i]) continue;
        if (i < macro->children.size() && macro->children[i]) {
          TETRA_ASSIGN_OR_RETURN(auto fallback, Eval(*macro->children[i], scope));
          scope->Set(parameters[i], fallback);
        } else {
          scope->Set(parameters[i], Value::Undefined("parameter '" + parameters[i] + "' was not provided"));
        }
      }
      if (uses_varargs) {
        ValueList rest;
        for (size_t i = parameters.size(); i < args.positional.size(); ++i) rest.push_back(args.positional[i]);
        scope->Set("varargs", Value::List(std::move(rest), true));
      }
      if (uses_kwargs) scope->Set("kwargs", Value::Dict(std::move(extra_keywords)));
      ++call_depth_;
      std::string out;
      Flow flow = Flow::kNormal;
      Status status = ExecBody(macro->body, scope, out, &flow);
      --call_depth_;
      TETRA_RETURN_IF_ERROR(status);
      return Value::String(std::move(out));
    });
  }

  // ---- expressions ----
  StatusOr<Value> EvalWithBlockInput(const Node& filters, const FramePtr& frame, const Value& input) {
    const Value* saved = block_input_;
    block_input_ = &input;
    auto result = Eval(filters, frame);
    block_input_ = saved;
    return result;
  }

  StatusOr<CallArgs> EvalArguments(const Node& node, const FramePtr& frame) {
    CallArgs args;
    for (const auto& arg : node.args) {
      TETRA_ASSIGN_OR_RETURN(auto value, Eval(*arg, frame));
      args.positional.push_back(std::move(value));
    }
    for (const auto& [key, arg] : node.kwargs) {
      TETRA_ASSIGN_OR_RETURN(auto value, Eval(*arg, frame));
      args.keyword.emplace_back(key, std::move(value));
    }
    return args;
  }

  StatusOr<Value> CallValue(const Value& callee, CallArgs& args) {
    if (callee.is_function()) return callee.function()(args);
    if (callee.is_undefined()) return UndefinedError(callee);
    return Status::Errorf("'{}' object is not callable", callee.TypeName());
  }

  Status CheckSize(const Value& value) {
    if (value.is_string() && value.as_string().size() > options_.limits.max_output_bytes) {
      return Status::Errorf("a string grew past the limit of {} bytes", options_.limits.max_output_bytes);
    }
    if (value.is_list() && value.items().size() > value_limits_.max_list_items) {
      return Status::Errorf("a list grew past the limit of {} items", value_limits_.max_list_items);
    }
    return Status::Ok();
  }

  StatusOr<Value> Eval(const Node& node, const FramePtr& frame) {
    NestingGuard guard(nesting_);
    TETRA_RETURN_IF_ERROR(CheckNesting());
    auto result = EvalUnchecked(node, frame);
    if (result.ok()) TETRA_RETURN_IF_ERROR(CheckSize(*result));
    return result;
  }

  StatusOr<Value> EvalUnchecked(const Node& node, const FramePtr& frame) {
    switch (node.kind) {
      case NodeKind::kLiteral: return node.literal;
      case NodeKind::kName: {
        if (const Value* value = frame->Lookup(node.name)) return *value;
        return Value::Undefined("'" + node.name + "' is undefined");
      }
      case NodeKind::kListLiteral:
      case NodeKind::kTupleLiteral: {
        ValueList items;
        for (const auto& child : node.children) {
          TETRA_ASSIGN_OR_RETURN(auto value, Eval(*child, frame));
          items.push_back(std::move(value));
        }
        return Value::List(std::move(items), node.kind == NodeKind::kTupleLiteral);
      }
      case NodeKind::kDictLiteral: {
        ValuePairs pairs;
        for (size_t i = 0; i + 1 < node.children.size(); i += 2) {
          TETRA_ASSIGN_OR_RETURN(auto key, Eval(*node.children[i], frame));
          TETRA_ASSIGN_OR_RETURN(auto value, Eval(*node.children[i + 1], frame));
          if (key.is_list() && !key.is_tuple()) return Status::Error("unhashable type: 'list'");
          if (key.is_dict()) return Status::Error("unhashable type: 'dict'");
          bool replaced = false;
          for (auto& [k, v] : pairs) {
            if (k.Equals(key)) {
              v = value;
              replaced = true;
            }
          }
          if (!replaced) pairs.emplace_back(std::move(key), std::move(value));
        }
        return Value::Dict(std::move(pairs));
      }
      case NodeKind::kGetAttr: {
        TETRA_ASSIGN_OR_RETURN(auto object, Eval(*node.children[0], frame));
        return GetAttribute(object, node.name, value_limits_);
      }
      case NodeKind::kGetItem: {
        TETRA_ASSIGN_OR_RETURN(auto object, Eval(*node.children[0], frame));
        TETRA_ASSIGN_OR_RETURN(auto key, Eval(*node.children[1], frame));
        return GetItem(object, key, value_limits_);
      }
      case NodeKind::kSlice: {
        TETRA_ASSIGN_OR_RETURN(auto object, Eval(*node.children[0], frame));
        Value parts[3];
        const Value* pointers[3] = {nullptr, nullptr, nullptr};
        for (int i = 0; i < 3; ++i) {
          if (node.children[i + 1]) {
            TETRA_ASSIGN_OR_RETURN(parts[i], Eval(*node.children[i + 1], frame));
            pointers[i] = &parts[i];
          }
        }
        return GetSlice(object, pointers[0], pointers[1], pointers[2]);
      }
      case NodeKind::kCall: {
        const Node& callee_node = *node.children[0];
        TETRA_ASSIGN_OR_RETURN(auto args, EvalArguments(node, frame));
        if (callee_node.kind == NodeKind::kGetAttr) {
          TETRA_ASSIGN_OR_RETURN(auto object, Eval(*callee_node.children[0], frame));
          if (HasMethod(object, callee_node.name)) {
            return CallMethod(object, callee_node.name, args, value_limits_);
          }
          TETRA_ASSIGN_OR_RETURN(auto callee, GetAttribute(object, callee_node.name, value_limits_));
          return CallValue(callee, args);
        }
        TETRA_ASSIGN_OR_RETURN(auto callee, Eval(callee_node, frame));
        return CallValue(callee, args);
      }
      case NodeKind::kFilter: {
        Value input;
        if (node.children[0]) {
          TETRA_ASSIGN_OR_RETURN(input, Eval(*node.children[0], frame));
        } else if (block_input_ != nullptr) {
          input = *block_input_;
        }
        TETRA_ASSIGN_OR_RETURN(auto args, EvalArguments(node, frame));
        return ApplyFilter(node.name, input, args, value_limits_);
      }
      case NodeKind::kTest: {
        TETRA_ASSIGN_OR_RETURN(auto input, Eval(*node.children[0], frame));
        TETRA_ASSIGN_OR_RETURN(auto args, EvalArguments(node, frame));
        TETRA_ASSIGN_OR_RETURN(bool passes, ApplyTest(node.name, input, args));
        return Value::Bool(passes != node.negated);
      }
      case NodeKind::kUnary: {
        TETRA_ASSIGN_OR_RETURN(auto operand, Eval(*node.children[0], frame));
        if (node.name == "not") return Value::Bool(!operand.IsTruthy());
        if (operand.is_undefined()) return UndefinedError(operand);
        if (!operand.is_number()) {
          return Status::Errorf("bad operand type for unary {}: '{}'", node.name, operand.TypeName());
        }
        if (node.name == "+") return operand.is_int() ? Value::Int(operand.as_int()) : operand;
        if (operand.kind() == ValueKind::kFloat) return Value::Float(-operand.as_float());
        if (operand.as_int() == INT64_MIN) return Status::Error("integer overflow");
        return Value::Int(-operand.as_int());
      }
      case NodeKind::kBinary: {
        TETRA_ASSIGN_OR_RETURN(auto left, Eval(*node.children[0], frame));
        if (node.name == "and") return left.IsTruthy() ? Eval(*node.children[1], frame) : left;
        if (node.name == "or") return left.IsTruthy() ? left : Eval(*node.children[1], frame);
        TETRA_ASSIGN_OR_RETURN(auto right, Eval(*node.children[1], frame));
        return BinaryOperation(node.name, left, right);
      }
      case NodeKind::kCompare: {
        TETRA_ASSIGN_OR_RETURN(auto left, Eval(*node.children[0], frame));
        for (size_t i = 0; i < node.ops.size(); ++i) {
          TETRA_ASSIGN_OR_RETURN(auto right, Eval(*node.children[i + 1], frame));
          TETRA_ASSIGN_OR_RETURN(bool holds, Compare(node.ops[i], left, right));
          if (!holds) return Value::Bool(false);
          left = std::move(right);
        }
        return Value::Bool(true);
      }
      case NodeKind::kConditional: {
        TETRA_ASSIGN_OR_RETURN(auto condition, Eval(*node.children[0], frame));
        if (condition.IsTruthy()) return Eval(*node.children[1], frame);
        if (node.children[2]) return Eval(*node.children[2], frame);
        return Value::Undefined("the inline if-expression on line " + std::to_string(node.line) +
                                " evaluated to false and no else section was defined.");
      }
      default: return Status::Error("internal: statement where an expression was expected");
    }
  }

  StatusOr<bool> Compare(const std::string& op, const Value& left, const Value& right) {
    if (op == "==") return left.Equals(right);
    if (op == "!=") return !left.Equals(right);
    if (op == "in" || op == "not in") {
      CallArgs args;
      args.positional.push_back(right);
      if (right.is_undefined()) return op == "not in";
      TETRA_ASSIGN_OR_RETURN(bool contained, ApplyTest("in", left, args));
      return contained == (op == "in");
    }
    if (left.is_undefined()) return UndefinedError(left);
    if (right.is_undefined()) return UndefinedError(right);
    auto fix_message = [&](StatusOr<bool> result) -> StatusOr<bool> {
      if (result.ok()) return result;
      return Status::Errorf("'{}' not supported between instances of '{}' and '{}'", op, left.TypeName(),
                            right.TypeName());
    };
    if (op == "<") return fix_message(Value::Less(left, right));
    if (op == ">") return fix_message(Value::Less(right, left));
    if (op == "<=") {
      TETRA_ASSIGN_OR_RETURN(bool greater, fix_message(Value::Less(right, left)));
      return !greater;
    }
    if (op == ">=") {
      TETRA_ASSIGN_OR_RETURN(bool less, fix_message(Value::Less(left, right)));
      return !less;
    }
    return Status::Errorf("unknown comparison '{}'", op);
  }

  StatusOr<Value> Repeat(const Value& sequence, int64_t times) {
    if (times <= 0) return sequence.is_string() ? Value::String("") : Value::List({}, sequence.is_tuple());
    if (sequence.is_string()) {
      const size_t size = sequence.as_string().size();
      if (size != 0 && static_cast<uint64_t>(times) > options_.limits.max_output_bytes / size) {
        return Status::Errorf("a string grew past the limit of {} bytes", options_.limits.max_output_bytes);
      }
      std::string out;
      for (int64_t i = 0; i < times; ++i) out += sequence.as_string();
      return Value::String(std::move(out));
    }
    const size_t size = sequence.items().size();
    if (size != 0 && static_cast<uint64_t>(times) > value_limits_.max_list_items / size) {
      return Status::Errorf("a list grew past the limit of {} items", value_limits_.max_list_items);
    }
    ValueList items;
    for (int64_t i = 0; i < times; ++i) items.insert(items.end(), sequence.items().begin(), sequence.items().end());
    return Value::List(std::move(items), sequence.is_tuple());
  }

  StatusOr<Value> BinaryOperation(const std::string& op, const Value& left, const Value& right) {
    if (op == "~") {
      if (left.Str().size() + right.Str().size() > options_.limits.max_output_bytes) {
        return Status::Errorf("a string grew past the limit of {} bytes", options_.limits.max_output_bytes);
      }
      return Value::String(left.Str() + right.Str());
    }
    if (left.is_undefined()) return UndefinedError(left);
    if (right.is_undefined()) return UndefinedError(right);
    auto unsupported = [&]() {
      if (op == "+" && left.is_string()) {
        return Status::Errorf("can only concatenate str (not \"{}\") to str", right.TypeName());
      }
      if (op == "+" && left.is_list() && !left.is_tuple()) {
        return Status::Errorf("can only concatenate list (not \"{}\") to list", right.TypeName());
      }
      return Status::Errorf("unsupported operand type(s) for {}: '{}' and '{}'", op, left.TypeName(),
                            right.TypeName());
    };
    if (left.is_number() && right.is_number()) {
      const bool is_float = left.kind() == ValueKind::kFloat || right.kind() == ValueKind::kFloat;
      const double a = left.as_float(), b = right.as_float();
      const int64_t x = left.as_int(), y = right.as_int();
      int64_t r = 0;
      if (op == "+") {
        if (is_float) return Value::Float(a + b);
        if (__builtin_add_overflow(x, y, &r)) return Status::Error("integer overflow");
        return Value::Int(r);
      }
      if (op == "-") {
        if (is_float) return Value::Float(a - b);
        if (__builtin_sub_overflow(x, y, &r)) return Status::Error("integer overflow");
        return Value::Int(r);
      }
      if (op == "*") {
        if (is_float) return Value::Float(a * b);
        if (__builtin_mul_overflow(x, y, &r)) return Status::Error("integer overflow");
        return Value::Int(r);
      }
      if (op == "/") {
        if (b == 0) return Status::Error("division by zero");
        return Value::Float(a / b);
      }
      if (op == "//" || op == "%") {
        if (is_float) {
          if (b == 0) return Status::Error(op == "//" ? "float floor division by zero" : "float modulo");
          const double quotient = std::floor(a / b);
          if (op == "//") return Value::Float(quotient);
          double m = std::fmod(a, b);
          if (m != 0 && ((m < 0) != (b < 0))) m += b;
          return Value::Float(m);
        }
        if (y == 0) return Status::Error(op == "//" ? "integer division or modulo by zero" : "integer modulo by zero");
        if (x == INT64_MIN && y == -1) return Status::Error("integer overflow");
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        return Value::Int(op == "//" ? q : m);
      }
      if (op == "**") {
        if (is_float || y < 0) return Value::Float(std::pow(a, b));
        int64_t result = 1;
        for (int64_t i = 0; i < y; ++i) {
          if (__builtin_mul_overflow(result, x, &result)) return Status::Error("integer overflow");
          if (result == 0 || result == 1) break;
        }
        return Value::Int(result);
      }
    }
    if (op == "+" && (left.is_markup() || right.is_markup()) && left.is_string() && right.is_string()) {
      // markupsafe: the plain operand is HTML-escaped, the result is Markup.
      CallArgs none;
      TETRA_ASSIGN_OR_RETURN(auto escaped_left, ApplyFilter("escape", left, none, value_limits_));
      TETRA_ASSIGN_OR_RETURN(auto escaped_right, ApplyFilter("escape", right, none, value_limits_));
      return Value::Markup(escaped_left.as_string() + escaped_right.as_string());
    }
    if (op == "+") {
      if (left.is_string() && right.is_string()) {
        if (left.as_string().size() + right.as_string().size() > options_.limits.max_output_bytes) {
          return Status::Errorf("a string grew past the limit of {} bytes", options_.limits.max_output_bytes);
        }
        return Value::String(left.as_string() + right.as_string());
      }
      if (left.is_list() && right.is_list() && left.is_tuple() == right.is_tuple()) {
        ValueList items = left.items();
        items.insert(items.end(), right.items().begin(), right.items().end());
        return Value::List(std::move(items), left.is_tuple());
      }
    }
    if (op == "*") {
      if ((left.is_string() || left.is_list()) && right.is_int()) return Repeat(left, right.as_int());
      if ((right.is_string() || right.is_list()) && left.is_int()) return Repeat(right, left.as_int());
    }
    if (op == "%" && left.is_string()) {
      TETRA_ASSIGN_OR_RETURN(auto text, PercentFormat(left.as_string(), right));
      return Value::String(std::move(text));
    }
    return unsupported();
  }

  const RenderOptions& options_;
  ValueLimits value_limits_;
  int64_t iterations_ = 0;
  int call_depth_ = 0;
  int nesting_ = 0;
  const Value* block_input_ = nullptr;
  std::vector<FramePtr> macro_frames_;
};

// jinja2 rejects unknown filters and tests when compiling, except inside an
// `if` or conditional expression ("soft" frames; a loop, macro or block body
// starts a hard one again), where the error waits until the filter runs.
Status CheckNamesIn(const Node& node, bool soft) {
  if (!soft && node.kind == NodeKind::kFilter && !IsKnownFilter(node.name)) {
    return Status::Errorf("line {}: no filter named '{}'", node.line, node.name);
  }
  if (!soft && node.kind == NodeKind::kTest && !IsKnownTest(node.name)) {
    return Status::Errorf("line {}: no test named '{}'", node.line, node.name);
  }
  const bool opens_soft = node.kind == NodeKind::kIf || node.kind == NodeKind::kConditional;
  const bool child_soft = soft || opens_soft;
  const bool body_soft = opens_soft ? true
                         : (node.kind == NodeKind::kFor || node.kind == NodeKind::kMacro ||
                            node.kind == NodeKind::kSetBlock || node.kind == NodeKind::kFilterBlock ||
                            node.kind == NodeKind::kCallBlock)
                             ? false
                             : soft;
  auto check = [](const NodeList& list, bool list_soft) -> Status {
    for (const auto& child : list) {
      if (child) TETRA_RETURN_IF_ERROR(CheckNamesIn(*child, list_soft));
    }
    return Status::Ok();
  };
  TETRA_RETURN_IF_ERROR(check(node.children, child_soft));
  TETRA_RETURN_IF_ERROR(check(node.args, child_soft));
  TETRA_RETURN_IF_ERROR(check(node.body, node.kind == NodeKind::kIf ? true : body_soft));
  TETRA_RETURN_IF_ERROR(check(node.else_body, node.kind == NodeKind::kIf ? true : body_soft));
  for (const auto& body : node.bodies) TETRA_RETURN_IF_ERROR(check(body, true));
  for (const auto& [key, child] : node.kwargs) {
    if (child) TETRA_RETURN_IF_ERROR(CheckNamesIn(*child, child_soft));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::string> RenderTree(const Node& root, const Value& context, const RenderOptions& options) {
  Renderer renderer(options);
  auto result = renderer.Render(root, context);
  if (result.ok()) return result;
  std::string message = result.status().message();
  if (message.rfind(kRaisedMarker, 0) == 0) message.erase(0, sizeof(kRaisedMarker) - 1);
  return Status::Error(message);
}

Status CheckNames(const Node& root) { return CheckNamesIn(root, false); }

}  // namespace tetra::jinja
