#include "tokenizer/chat_template.h"

#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_interpreter.h"

namespace tetra {

StatusOr<ChatTemplate> ChatTemplate::Parse(std::string source) {
  auto root = jinja::ParseTemplate(source);
  if (!root.ok()) return root.status().WithPrefix("chat template ");
  TETRA_RETURN_IF_ERROR(jinja::CheckNames(**root).WithPrefix("chat template "));
  return ChatTemplate(std::make_shared<const std::string>(std::move(source)),
                      std::shared_ptr<const jinja::Node>(std::move(*root)));
}

StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& context,
                                           const ChatTemplateOptions& options) const {
  if (!context.is_object()) return Status::Error("chat template: the render context must be a JSON object");
  jinja::RenderOptions render_options;
  render_options.limits.max_output_bytes = options.max_output_bytes;
  render_options.limits.max_loop_iterations = options.max_loop_iterations;
  render_options.limits.max_call_depth = options.max_call_depth;
  render_options.now = options.now;
  auto result = jinja::RenderTree(*root_, jinja::Value::FromJson(context), render_options);
  if (!result.ok() && result.status().message().rfind("line ", 0) == 0) {
    return result.status().WithPrefix("chat template ");
  }
  return result;
}

StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& context,
                                           const ChatTemplateOptions& options) const {
  return Render(nlohmann::ordered_json::parse(context.dump()), options);
}

}  // namespace tetra
