// Recursive-descent parser with jinja2's grammar and operator precedence:
// conditional < or < and < not < comparisons < + - < ~ < * / // % < ** <
// unary - + < postfix (. [] ()) and filters/tests (| is).
#include <cstdlib>
#include <set>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_lexer.h"

namespace tetra::jinja {
namespace {

constexpr int kMaxNesting = 200;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  StatusOr<NodePtr> ParseRoot() {
    auto root = MakeNode(NodeKind::kScope, Current());
    std::string end_name;
    TETRA_RETURN_IF_ERROR(ParseBody(root->body, {}, &end_name));
    if (!end_name.empty()) return ErrorAt(Current(), "unexpected '" + end_name + "'");
    return root;
  }

 private:
  // ---- token helpers ----
  const Token& Current() const { return tokens_[position_]; }
  const Token& Peek(size_t ahead = 1) const {
    const size_t index = std::min(position_ + ahead, tokens_.size() - 1);
    return tokens_[index];
  }
  void Advance() {
    if (position_ + 1 < tokens_.size()) ++position_;
  }
  bool IsOperator(const char* op) const {
    return Current().kind == TokenKind::kOperator && Current().text == op;
  }
  bool IsName(const char* name) const {
    return Current().kind == TokenKind::kName && Current().text == name;
  }
  bool SkipOperator(const char* op) {
    if (!IsOperator(op)) return false;
    Advance();
    return true;
  }
  bool SkipName(const char* name) {
    if (!IsName(name)) return false;
    Advance();
    return true;
  }
  Status ExpectOperator(const char* op) {
    if (SkipOperator(op)) return Status::Ok();
    return ErrorAt(Current(), std::string("expected '") + op + "', got " + Describe(Current()));
  }
  Status ExpectBlockEnd() {
    if (Current().kind == TokenKind::kBlockEnd) {
      Advance();
      return Status::Ok();
    }
    return ErrorAt(Current(), "expected end of tag '%}', got " + Describe(Current()));
  }
  StatusOr<std::string> ExpectNameToken() {
    if (Current().kind != TokenKind::kName) {
      return ErrorAt(Current(), "expected a name, got " + Describe(Current()));
    }
    std::string name = Current().text;
    Advance();
    return name;
  }
  static std::string Describe(const Token& token) {
    switch (token.kind) {
      case TokenKind::kText: return "template text";
      case TokenKind::kVariableBegin: return "'{{'";
      case TokenKind::kVariableEnd: return "'}}'";
      case TokenKind::kBlockBegin: return "'{%'";
      case TokenKind::kBlockEnd: return "'%}'";
      case TokenKind::kEnd: return "end of template";
      case TokenKind::kString: return "string literal";
      default: return "'" + token.text + "'";
    }
  }
  static Status ErrorAt(const Token& token, const std::string& problem) {
    return Status::Errorf("line {} column {}: {}", token.line, token.column, problem);
  }
  static NodePtr MakeNode(NodeKind kind, const Token& token) {
    auto node = std::make_unique<Node>();
    node->kind = kind;
    node->line = token.line;
    node->column = token.column;
    return node;
  }

  struct DepthGuard {
    explicit DepthGuard(int& depth) : depth(depth) { ++depth; }
    ~DepthGuard() { --depth; }
    int& depth;
  };

  // ---- statements ----

  // Parses nodes until a block tag whose name is in end_names (consumes
  // "{% name", sets *end_name) or the end of the template (*end_name empty).
  Status ParseBody(NodeList& body, const std::set<std::string>& end_names, std::string* end_name) {
    DepthGuard guard(depth_);
    if (depth_ > kMaxNesting) return ErrorAt(Current(), "blocks nested too deeply");
    end_name->clear();
    while (true) {
      const Token& token = Current();
      switch (token.kind) {
        case TokenKind::kEnd:
          if (!end_names.empty()) {
            std::string expected;
            for (const auto& name : end_names) expected += (expected.empty() ? "'" : " or '") + name + "'";
            return ErrorAt(token, "unexpected end of template, expected " + expected);
          }
          return Status::Ok();
        case TokenKind::kText: {
          auto node = MakeNode(NodeKind::kText, token);
          node->literal = Value::String(token.text);
          body.push_back(std::move(node));
          Advance();
          break;
        }
        case TokenKind::kVariableBegin: {
          auto node = MakeNode(NodeKind::kOutput, token);
          Advance();
          TETRA_ASSIGN_OR_RETURN(auto expression, ParseTuple(/*explicit_parentheses=*/false));
          node->children.push_back(std::move(expression));
          if (Current().kind != TokenKind::kVariableEnd) {
            return ErrorAt(Current(), "expected end of print statement '}}', got " + Describe(Current()));
          }
          Advance();
          body.push_back(std::move(node));
          break;
        }
        case TokenKind::kBlockBegin: {
          const Token& name_token = Peek();
          if (name_token.kind != TokenKind::kName) return ErrorAt(name_token, "expected a tag name");
          if (end_names.count(name_token.text)) {
            *end_name = name_token.text;
            Advance();
            Advance();
            return Status::Ok();
          }
          Advance();
          TETRA_ASSIGN_OR_RETURN(auto statement, ParseStatement());
          body.push_back(std::move(statement));
          break;
        }
        default: return ErrorAt(token, "unexpected " + Describe(token));
      }
    }
  }

  StatusOr<NodePtr> ParseStatement() {
    const Token token = Current();
    const std::string& keyword = token.text;
    Advance();
    if (keyword == "if") return ParseIf(token);
    if (keyword == "for") return ParseFor(token);
    if (keyword == "set") return ParseSet(token);
    if (keyword == "macro") return ParseMacro(token);
    if (keyword == "call") return ParseCallBlock(token);
    if (keyword == "filter") return ParseFilterBlock(token);
    if (keyword == "break" || keyword == "continue") {
      auto node = MakeNode(keyword == "break" ? NodeKind::kBreak : NodeKind::kContinue, token);
      if (loop_depth_ == 0) return ErrorAt(token, "'" + keyword + "' outside of a for loop");
      TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (keyword == "generation") {
      auto node = MakeNode(NodeKind::kScope, token);
      TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
      std::string end;
      TETRA_RETURN_IF_ERROR(ParseBody(node->body, {"endgeneration"}, &end));
      TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (keyword.rfind("end", 0) == 0 || keyword == "else" || keyword == "elif") {
      return ErrorAt(token, "unexpected '" + keyword + "' with no open block");
    }
    return ErrorAt(token, "unknown tag '" + keyword + "'");
  }

  StatusOr<NodePtr> ParseIf(const Token& token) {
    auto node = MakeNode(NodeKind::kIf, token);
    while (true) {
      TETRA_ASSIGN_OR_RETURN(auto condition, ParseExpression(/*with_conditional=*/false));
      node->children.push_back(std::move(condition));
      TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
      node->bodies.emplace_back();
      std::string end;
      TETRA_RETURN_IF_ERROR(ParseBody(node->bodies.back(), {"elif", "else", "endif"}, &end));
      if (end == "elif") continue;
      if (end == "else") {
        TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
        TETRA_RETURN_IF_ERROR(ParseBody(node->else_body, {"endif"}, &end));
      }
      TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
  }

  Status ParseTargets(Node& node) {
    const bool parenthesized = SkipOperator("(");
    while (true) {
      TETRA_ASSIGN_OR_RETURN(auto name, ExpectNameToken());
      node.targets.push_back(name);
      if (!SkipOperator(",")) break;
      node.targets_are_tuple = true;
      if (Current().kind != TokenKind::kName) break;
    }
    if (parenthesized) TETRA_RETURN_IF_ERROR(ExpectOperator(")"));
    return Status::Ok();
  }

  StatusOr<NodePtr> ParseFor(const Token& token) {
    auto node = MakeNode(NodeKind::kFor, token);
    TETRA_RETURN_IF_ERROR(ParseTargets(*node));
    if (!SkipName("in")) return ErrorAt(Current(), "expected 'in' in for loop, got " + Describe(Current()));
    TETRA_ASSIGN_OR_RETURN(auto iterable, ParseTupleNoConditional());
    node->children.push_back(std::move(iterable));
    if (SkipName("if")) {
      TETRA_ASSIGN_OR_RETURN(auto filter, ParseExpression(true));
      node->children.push_back(std::move(filter));
    }
    if (IsName("recursive")) return ErrorAt(Current(), "recursive for loops are not supported");
    TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    ++loop_depth_;
    Status status = ParseBody(node->body, {"else", "endfor"}, &end);
    --loop_depth_;
    TETRA_RETURN_IF_ERROR(status);
    if (end == "else") {
      TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
      const int saved_loop_depth = loop_depth_;
      loop_depth_ = 0;
      status = ParseBody(node->else_body, {"endfor"}, &end);
      loop_depth_ = saved_loop_depth;
      TETRA_RETURN_IF_ERROR(status);
    }
    TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
    return node;
  }

  StatusOr<NodePtr> ParseSet(const Token& token) {
    auto node = MakeNode(NodeKind::kSet, token);
    if (Current().kind == TokenKind::kName && Peek().kind == TokenKind::kOperator && Peek().text == ".") {
      node->targets.push_back(Current().text);
      Advance();
      Advance();
      TETRA_ASSIGN_OR_RETURN(node->attribute, ExpectNameToken());
    } else {
      TETRA_RETURN_IF_ERROR(ParseTargets(*node));
    }
    if (SkipOperator("=")) {
      TETRA_ASSIGN_OR_RETURN(auto value, ParseTuple(false));
      node->children.push_back(std::move(value));
      TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
      return node;
    }
    if (!node->attribute.empty() || node->targets.size() != 1) {
      return ErrorAt(Current(), "expected '=' in set");
    }
    node->kind = NodeKind::kSetBlock;
    if (IsOperator("|")) {
      TETRA_ASSIGN_OR_RETURN(auto filters, ParseFilterChain(nullptr));
      node->children.push_back(std::move(filters));
    }
    TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    TETRA_RETURN_IF_ERROR(ParseBody(node->body, {"endset"}, &end));
    TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
    return node;
  }

  Status ParseParameters(Node& node) {
    TETRA_RETURN_IF_ERROR(ExpectOperator("("));
    while (!IsOperator(")")) {
      if (!node.targets.empty()) TETRA_RETURN_IF_ERROR(ExpectOperator(","));
      if (IsOperator(")")) break;
      TETRA_ASSIGN_OR_RETURN(auto name, ExpectNameToken());
      node.targets.push_back(name);
      if (SkipOperator("=")) {
        TETRA_ASSIGN_OR_RETURN(auto default_value, ParseExpression(true));
        node.children.push_back(std::move(default_value));
      } else {
        node.children.push_back(nullptr);
      }
    }
    Advance();
    return Status::Ok();
  }

  StatusOr<NodePtr> ParseMacro(const Token& token) {
    auto node = MakeNode(NodeKind::kMacro, token);
    TETRA_ASSIGN_OR_RETURN(node->name, ExpectNameToken());
    TETRA_RETURN_IF_ERROR(ParseParameters(*node));
    TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    const int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    Status status = ParseBody(node->body, {"endmacro"}, &end);
    loop_depth_ = saved_loop_depth;
    TETRA_RETURN_IF_ERROR(status);
    TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
    return node;
  }

  StatusOr<NodePtr> ParseCallBlock(const Token& token) {
    auto node = MakeNode(NodeKind::kCallBlock, token);
    if (IsOperator("(")) TETRA_RETURN_IF_ERROR(ParseParameters(*node));
    TETRA_ASSIGN_OR_RETURN(auto call, ParseExpression(true));
    if (call->kind != NodeKind::kCall) return ErrorAt(token, "expected a call in call block");
    node->args.push_back(std::move(call));
    TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    TETRA_RETURN_IF_ERROR(ParseBody(node->body, {"endcall"}, &end));
    TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
    return node;
  }

  StatusOr<NodePtr> ParseFilterBlock(const Token& token) {
    auto node = MakeNode(NodeKind::kFilterBlock, token);
    TETRA_ASSIGN_OR_RETURN(auto filters, ParseFilterChain(nullptr, /*needs_pipe=*/false));
    node->children.push_back(std::move(filters));
    TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    TETRA_RETURN_IF_ERROR(ParseBody(node->body, {"endfilter"}, &end));
    TETRA_RETURN_IF_ERROR(ExpectBlockEnd());
    return node;
  }

  // ---- expressions ----

  bool IsTupleEnd() const {
    const Token& token = Current();
    if (token.kind == TokenKind::kVariableEnd || token.kind == TokenKind::kBlockEnd ||
        token.kind == TokenKind::kEnd) {
      return true;
    }
    if (token.kind == TokenKind::kOperator) {
      return token.text == ")" || token.text == "]" || token.text == "}";
    }
    return false;
  }

  StatusOr<NodePtr> ParseTuple(bool explicit_parentheses, bool with_conditional = true) {
    const Token start = Current();
    NodeList items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) {
        if (!SkipOperator(",")) break;
      }
      if (IsTupleEnd() || (!with_conditional && IsName("if"))) break;
      TETRA_ASSIGN_OR_RETURN(auto item, ParseExpression(with_conditional));
      items.push_back(std::move(item));
      if (IsOperator(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parentheses) return ErrorAt(Current(), "expected an expression, got " + Describe(Current()));
    }
    auto node = MakeNode(NodeKind::kTupleLiteral, start);
    node->children = std::move(items);
    return node;
  }
  StatusOr<NodePtr> ParseTupleNoConditional() { return ParseTuple(false, false); }

  StatusOr<NodePtr> ParseExpression(bool with_conditional) {
    DepthGuard guard(depth_);
    if (depth_ > kMaxNesting) return ErrorAt(Current(), "expression nested too deeply");
    if (!with_conditional) return ParseOr();
    TETRA_ASSIGN_OR_RETURN(auto value, ParseOr());
    while (IsName("if")) {
      auto node = MakeNode(NodeKind::kConditional, Current());
      Advance();
      TETRA_ASSIGN_OR_RETURN(auto condition, ParseOr());
      NodePtr otherwise;
      if (SkipName("else")) {
        TETRA_ASSIGN_OR_RETURN(otherwise, ParseExpression(true));
      }
      node->children.push_back(std::move(condition));
      node->children.push_back(std::move(value));
      node->children.push_back(std::move(otherwise));
      value = std::move(node);
    }
    return value;
  }

  StatusOr<NodePtr> MakeBinary(const Token& token, std::string op, NodePtr left, NodePtr right) {
    auto node = MakeNode(NodeKind::kBinary, token);
    node->name = std::move(op);
    node->children.push_back(std::move(left));
    node->children.push_back(std::move(right));
    return node;
  }

  StatusOr<NodePtr> ParseOr() {
    TETRA_ASSIGN_OR_RETURN(auto left, ParseAnd());
    while (IsName("or")) {
      const Token token = Current();
      Advance();
      TETRA_ASSIGN_OR_RETURN(auto right, ParseAnd());
      TETRA_ASSIGN_OR_RETURN(left, MakeBinary(token, "or", std::move(left), std::move(right)));
    }
    return left;
  }

  StatusOr<NodePtr> ParseAnd() {
    TETRA_ASSIGN_OR_RETURN(auto left, ParseNot());
    while (IsName("and")) {
      const Token token = Current();
      Advance();
      TETRA_ASSIGN_OR_RETURN(auto right, ParseNot());
      TETRA_ASSIGN_OR_RETURN(left, MakeBinary(token, "and", std::move(left), std::move(right)));
    }
    return left;
  }

  StatusOr<NodePtr> ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(depth_);
      if (depth_ > kMaxNesting) return ErrorAt(Current(), "expression nested too deeply");
      auto node = MakeNode(NodeKind::kUnary, Current());
      node->name = "not";
      Advance();
      TETRA_ASSIGN_OR_RETURN(auto operand, ParseNot());
      node->children.push_back(std::move(operand));
      return node;
    }
    return ParseCompare();
  }

  StatusOr<NodePtr> ParseCompare() {
    const Token start = Current();
    TETRA_ASSIGN_OR_RETURN(auto first, ParseMath1());
    NodePtr node;
    while (true) {
      std::string op;
      const Token& token = Current();
      if (token.kind == TokenKind::kOperator &&
          (token.text == "==" || token.text == "!=" || token.text == "<" || token.text == ">" ||
           token.text == "<=" || token.text == ">=")) {
        op = token.text;
        Advance();
      } else if (IsName("in")) {
        op = "in";
        Advance();
      } else if (IsName("not") && Peek().kind == TokenKind::kName && Peek().text == "in") {
        op = "not in";
        Advance();
        Advance();
      } else {
        break;
      }
      if (!node) {
        node = MakeNode(NodeKind::kCompare, start);
        node->children.push_back(std::move(first));
      }
      TETRA_ASSIGN_OR_RETURN(auto operand, ParseMath1());
      node->ops.push_back(op);
      node->children.push_back(std::move(operand));
    }
    return node ? std::move(node) : std::move(first);
  }

  StatusOr<NodePtr> ParseMath1() {
    TETRA_ASSIGN_OR_RETURN(auto left, ParseConcat());
    while (IsOperator("+") || IsOperator("-")) {
      const Token token = Current();
      Advance();
      TETRA_ASSIGN_OR_RETURN(auto right, ParseConcat());
      TETRA_ASSIGN_OR_RETURN(left, MakeBinary(token, token.text, std::move(left), std::move(right)));
    }
    return left;
  }

  StatusOr<NodePtr> ParseConcat() {
    TETRA_ASSIGN_OR_RETURN(auto left, ParseMath2());
    while (IsOperator("~")) {
      const Token token = Current();
      Advance();
      TETRA_ASSIGN_OR_RETURN(auto right, ParseMath2());
      TETRA_ASSIGN_OR_RETURN(left, MakeBinary(token, "~", std::move(left), std::move(right)));
    }
    return left;
  }

  StatusOr<NodePtr> ParseMath2() {
    TETRA_ASSIGN_OR_RETURN(auto left, ParsePow());
    while (IsOperator("*") || IsOperator("/") || IsOperator("//") || IsOperator("%")) {
      const Token token = Current();
      Advance();
      TETRA_ASSIGN_OR_RETURN(auto right, ParsePow());
      TETRA_ASSIGN_OR_RETURN(left, MakeBinary(token, token.text, std::move(left), std::move(right)));
    }
    return left;
  }

  StatusOr<NodePtr> ParsePow() {
    TETRA_ASSIGN_OR_RETURN(auto left, ParseUnary(true));
    while (IsOperator("**")) {
      const Token token = Current();
      Advance();
      TETRA_ASSIGN_OR_RETURN(auto right, ParseUnary(true));
      TETRA_ASSIGN_OR_RETURN(left, MakeBinary(token, "**", std::move(left), std::move(right)));
    }
    return left;
  }

  StatusOr<NodePtr> ParseUnary(bool with_filter) {
    DepthGuard guard(depth_);
    if (depth_ > kMaxNesting) return ErrorAt(Current(), "expression nested too deeply");
    NodePtr node;
    if (IsOperator("-") || IsOperator("+")) {
      node = MakeNode(NodeKind::kUnary, Current());
      node->name = Current().text;
      Advance();
      TETRA_ASSIGN_OR_RETURN(auto operand, ParseUnary(false));
      node->children.push_back(std::move(operand));
    } else {
      TETRA_ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    TETRA_ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) {
      TETRA_ASSIGN_OR_RETURN(node, ParseFilterExpression(std::move(node)));
    }
    return node;
  }

  StatusOr<NodePtr> ParsePrimary() {
    const Token token = Current();
    auto literal = [&](Value value) {
      auto node = MakeNode(NodeKind::kLiteral, token);
      node->literal = std::move(value);
      return node;
    };
    switch (token.kind) {
      case TokenKind::kName: {
        Advance();
        if (token.text == "true" || token.text == "True") return literal(Value::Bool(true));
        if (token.text == "false" || token.text == "False") return literal(Value::Bool(false));
        if (token.text == "none" || token.text == "None") return literal(Value::None());
        auto node = MakeNode(NodeKind::kName, token);
        node->name = token.text;
        return node;
      }
      case TokenKind::kString: {
        std::string text;
        while (Current().kind == TokenKind::kString) {
          text += Current().text;
          Advance();
        }
        return literal(Value::String(std::move(text)));
      }
      case TokenKind::kInteger: {
        Advance();
        errno = 0;
        char* end = nullptr;
        const long long value = std::strtoll(token.text.c_str(), &end, 10);
        if (errno == ERANGE) return ErrorAt(token, "integer literal too large");
        return literal(Value::Int(value));
      }
      case TokenKind::kFloat: {
        Advance();
        return literal(Value::Float(std::strtod(token.text.c_str(), nullptr)));
      }
      case TokenKind::kOperator: {
        if (token.text == "(") {
          Advance();
          TETRA_ASSIGN_OR_RETURN(auto inner, ParseTuple(/*explicit_parentheses=*/true));
          TETRA_RETURN_IF_ERROR(ExpectOperator(")"));
          return inner;
        }
        if (token.text == "[") {
          Advance();
          auto node = MakeNode(NodeKind::kListLiteral, token);
          while (!IsOperator("]")) {
            if (!node->children.empty()) TETRA_RETURN_IF_ERROR(ExpectOperator(","));
            if (IsOperator("]")) break;
            TETRA_ASSIGN_OR_RETURN(auto item, ParseExpression(true));
            node->children.push_back(std::move(item));
          }
          Advance();
          return node;
        }
        if (token.text == "{") {
          Advance();
          auto node = MakeNode(NodeKind::kDictLiteral, token);
          while (!IsOperator("}")) {
            if (!node->children.empty()) TETRA_RETURN_IF_ERROR(ExpectOperator(","));
            if (IsOperator("}")) break;
            TETRA_ASSIGN_OR_RETURN(auto key, ParseExpression(true));
            TETRA_RETURN_IF_ERROR(ExpectOperator(":"));
            TETRA_ASSIGN_OR_RETURN(auto value, ParseExpression(true));
            node->children.push_back(std::move(key));
            node->children.push_back(std::move(value));
          }
          Advance();
          return node;
        }
        break;
      }
      default: break;
    }
    return ErrorAt(token, "unexpected " + Describe(token));
  }

  StatusOr<NodePtr> ParsePostfix(NodePtr node) {
    while (true) {
      if (IsOperator(".")) {
        const Token token = Current();
        Advance();
        if (Current().kind == TokenKind::kInteger) {
          auto item = MakeNode(NodeKind::kGetItem, token);
          auto index = MakeNode(NodeKind::kLiteral, Current());
          index->literal = Value::Int(std::strtoll(Current().text.c_str(), nullptr, 10));
          Advance();
          item->children.push_back(std::move(node));
          item->children.push_back(std::move(index));
          node = std::move(item);
          continue;
        }
        auto attribute = MakeNode(NodeKind::kGetAttr, token);
        TETRA_ASSIGN_OR_RETURN(attribute->name, ExpectNameToken());
        attribute->children.push_back(std::move(node));
        node = std::move(attribute);
      } else if (IsOperator("[")) {
        TETRA_ASSIGN_OR_RETURN(node, ParseSubscript(std::move(node)));
      } else if (IsOperator("(")) {
        TETRA_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  StatusOr<NodePtr> ParseSubscript(NodePtr target) {
    const Token token = Current();
    Advance();  // [
    NodePtr parts[3];
    bool is_slice = false;
    int part = 0;
    while (!IsOperator("]")) {
      if (IsOperator(":")) {
        is_slice = true;
        if (++part > 2) return ErrorAt(Current(), "too many ':' in slice");
        Advance();
        continue;
      }
      if (parts[part]) return ErrorAt(Current(), "expected ']' or ':', got " + Describe(Current()));
      TETRA_ASSIGN_OR_RETURN(parts[part], ParseExpression(true));
    }
    Advance();  // ]
    if (!is_slice) {
      if (!parts[0]) return ErrorAt(token, "empty subscript");
      auto node = MakeNode(NodeKind::kGetItem, token);
      node->children.push_back(std::move(target));
      node->children.push_back(std::move(parts[0]));
      return node;
    }
    auto node = MakeNode(NodeKind::kSlice, token);
    node->children.push_back(std::move(target));
    for (auto& p : parts) node->children.push_back(std::move(p));
    return node;
  }

  Status ParseArguments(Node& node) {
    TETRA_RETURN_IF_ERROR(ExpectOperator("("));
    bool first = true;
    while (!IsOperator(")")) {
      if (!first) TETRA_RETURN_IF_ERROR(ExpectOperator(","));
      first = false;
      if (IsOperator(")")) break;
      if (IsOperator("*") || IsOperator("**")) {
        return ErrorAt(Current(), "*args and **kwargs in calls are not supported");
      }
      if (Current().kind == TokenKind::kName && Peek().kind == TokenKind::kOperator && Peek().text == "=") {
        std::string name = Current().text;
        Advance();
        Advance();
        TETRA_ASSIGN_OR_RETURN(auto value, ParseExpression(true));
        node.kwargs.emplace_back(std::move(name), std::move(value));
      } else {
        if (!node.kwargs.empty()) return ErrorAt(Current(), "positional argument follows keyword argument");
        TETRA_ASSIGN_OR_RETURN(auto value, ParseExpression(true));
        node.args.push_back(std::move(value));
      }
    }
    Advance();
    return Status::Ok();
  }

  StatusOr<NodePtr> ParseCall(NodePtr callee) {
    auto node = MakeNode(NodeKind::kCall, Current());
    node->children.push_back(std::move(callee));
    TETRA_RETURN_IF_ERROR(ParseArguments(*node));
    return node;
  }

  // One or more "| name(args)"; the first filter's input is `input` (null
  // for a block's rendered body).
  StatusOr<NodePtr> ParseFilterChain(NodePtr input, bool needs_pipe = true) {
    bool first = true;
    while (IsOperator("|") || (first && !needs_pipe)) {
      if (IsOperator("|")) Advance();
      first = false;
      auto node = MakeNode(NodeKind::kFilter, Current());
      TETRA_ASSIGN_OR_RETURN(node->name, ExpectNameToken());
      while (IsOperator(".")) {
        Advance();
        TETRA_ASSIGN_OR_RETURN(auto part, ExpectNameToken());
        node->name += "." + part;
      }
      if (IsOperator("(")) TETRA_RETURN_IF_ERROR(ParseArguments(*node));
      node->children.push_back(std::move(input));
      input = std::move(node);
    }
    return input;
  }

  StatusOr<NodePtr> ParseFilterExpression(NodePtr node) {
    while (true) {
      if (IsOperator("|")) {
        TETRA_ASSIGN_OR_RETURN(node, ParseFilterChain(std::move(node)));
      } else if (IsName("is")) {
        auto test = MakeNode(NodeKind::kTest, Current());
        Advance();
        test->negated = SkipName("not");
        TETRA_ASSIGN_OR_RETURN(test->name, ExpectNameToken());
        while (IsOperator(".")) {
          Advance();
          TETRA_ASSIGN_OR_RETURN(auto part, ExpectNameToken());
          test->name += "." + part;
        }
        const Token& next = Current();
        if (IsOperator("(")) {
          TETRA_RETURN_IF_ERROR(ParseArguments(*test));
        } else if ((next.kind == TokenKind::kName || next.kind == TokenKind::kString ||
                    next.kind == TokenKind::kInteger || next.kind == TokenKind::kFloat ||
                    IsOperator("[") || IsOperator("{")) &&
                   !IsName("else") && !IsName("or") && !IsName("and")) {
          TETRA_ASSIGN_OR_RETURN(auto argument, ParsePrimary());
          TETRA_ASSIGN_OR_RETURN(argument, ParsePostfix(std::move(argument)));
          test->args.push_back(std::move(argument));
        }
        test->children.push_back(std::move(node));
        node = std::move(test);
      } else if (IsOperator("(")) {
        TETRA_ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  std::vector<Token> tokens_;
  size_t position_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

// Moves every child pointer of node into out.
void TakeChildren(Node& node, std::vector<NodePtr>& out) {
  auto take = [&](NodeList& list) {
    for (auto& child : list) {
      if (child) out.push_back(std::move(child));
    }
    list.clear();
  };
  take(node.children);
  take(node.args);
  take(node.body);
  take(node.else_body);
  for (auto& body : node.bodies) take(body);
  for (auto& [key, child] : node.kwargs) {
    if (child) out.push_back(std::move(child));
  }
  node.kwargs.clear();
}

// Height of the tree, computed without recursion; the first node deeper
// than kMaxTreeHeight is reported.
Status CheckHeight(const Node& root) {
  std::vector<std::pair<const Node*, int>> stack = {{&root, 1}};
  auto push_all = [&](const NodeList& list, int depth) {
    for (const auto& child : list) {
      if (child) stack.emplace_back(child.get(), depth);
    }
  };
  while (!stack.empty()) {
    auto [node, depth] = stack.back();
    stack.pop_back();
    if (depth > kMaxTreeHeight) {
      return Status::Errorf("line {} column {}: template nested deeper than {} levels", node->line,
                            node->column, kMaxTreeHeight);
    }
    push_all(node->children, depth + 1);
    push_all(node->args, depth + 1);
    push_all(node->body, depth + 1);
    push_all(node->else_body, depth + 1);
    for (const auto& body : node->bodies) push_all(body, depth + 1);
    for (const auto& [key, child] : node->kwargs) {
      if (child) stack.emplace_back(child.get(), depth + 1);
    }
  }
  return Status::Ok();
}

}  // namespace

Node::~Node() {
  std::vector<NodePtr> pending;
  TakeChildren(*this, pending);
  while (!pending.empty()) {
    NodePtr node = std::move(pending.back());
    pending.pop_back();
    TakeChildren(*node, pending);
  }
}

StatusOr<NodePtr> ParseTemplate(const std::string& source) {
  TETRA_ASSIGN_OR_RETURN(auto tokens, Tokenize(source));
  TETRA_ASSIGN_OR_RETURN(auto root, Parser(std::move(tokens)).ParseRoot());
  TETRA_RETURN_IF_ERROR(CheckHeight(*root));
  return root;
}

}  // namespace tetra::jinja
