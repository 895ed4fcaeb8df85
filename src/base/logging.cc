#include "base/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace tetra {

void InitLogging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("tetra");
  logger->set_pattern("%^[%L %H:%M:%S.%e]%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

}  // namespace tetra
