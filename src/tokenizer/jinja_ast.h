// The syntax tree of a Jinja template, and the lexer and parser that build it.
//
// Lexing follows the environment transformers uses for chat templates:
// trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False, with
// `-`/`+` whitespace control on every tag. Parse errors name the line and
// column. The tree is immutable after parsing and may be shared across threads.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "tokenizer/jinja_value.h"

namespace tetra::jinja {

enum class NodeKind {
  // Expressions.
  kLiteral,      // literal
  kName,         // name
  kListLiteral,  // children
  kTupleLiteral, // children
  kDictLiteral,  // children: key0, value0, key1, value1, ...
  kGetAttr,      // children[0].name
  kGetItem,      // children[0][children[1]]
  kSlice,        // children[0][children[1]:children[2]:children[3]] (null = omitted)
  kCall,         // children[0](args, kwargs)
  kFilter,       // children[0] | name(args, kwargs); children[0] null = the block's body
  kTest,         // children[0] is [not] name(args); negated
  kUnary,        // name ("-", "+", "not") children[0]
  kBinary,       // children[0] name children[1]; name in + - * / // % ** ~ and or
  kCompare,      // children[0] ops[0] children[1] ops[1] children[2] ...
  kConditional,  // children[1] if children[0] else children[2] (null = undefined)
  // Statements.
  kText,       // literal text
  kOutput,     // {{ children[0] }}
  kIf,         // children: conditions; bodies[i] for each, else_body
  kFor,        // for targets in children[0] [if children[1]]: body; else_body
  kSet,        // targets = children[0]; or name.attribute = children[0] (attribute set)
  kSetBlock,   // targets[0] = rendered body, through children[0] (a filter chain) if set
  kMacro,      // name(targets with defaults in children: null = no default): body
  kCallBlock,  // {% call children[0] %} body: the body is `caller()`
  kFilterBlock,// body rendered, then children[0] (a filter chain with a null input)
  kBreak,
  kContinue,
  kScope,      // body in place: {% generation %} and template root
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using NodeList = std::vector<NodePtr>;

struct Node {
  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  // Iterative, so that a very deep tree cannot overflow the stack.
  ~Node();

  NodeKind kind;
  int line = 0;
  int column = 0;
  std::string name;
  std::string attribute;  // kSet on a namespace attribute
  Value literal;
  bool negated = false;
  NodeList children;
  std::vector<std::string> ops;  // kCompare operators
  // Call, filter and test arguments.
  NodeList args;
  std::vector<std::pair<std::string, NodePtr>> kwargs;
  // Statements.
  std::vector<std::string> targets;
  bool targets_are_tuple = false;
  std::vector<NodeList> bodies;  // kIf
  NodeList body;
  NodeList else_body;
};

// The deepest expression or statement nesting a template may have; deeper
// trees are syntax errors, which bounds the interpreter's recursion.
inline constexpr int kMaxTreeHeight = 400;

// Parses a whole template into a kScope node. Errors read
// "line L column C: <problem>".
StatusOr<NodePtr> ParseTemplate(const std::string& source);

}  // namespace tetra::jinja
