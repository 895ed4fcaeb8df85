// `tetra router`: one OpenAI endpoint in front of prefill and decode
// instances (serving/router.h, doc/disaggregation.md). Serves until SIGINT
// or SIGTERM, then drains for up to --drain-timeout seconds.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace tetra::cli {

struct RouterFlags {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::vector<std::string> prefill;
  std::vector<std::string> decode;
  std::string etcd;
  double health_interval = 1.0;
  int max_connections = 4096;
  double drain_timeout = 30;
};
void AddRouterCommand(CLI::App& app, RouterFlags& flags);
int RunRouter(const RouterFlags& flags);

}  // namespace tetra::cli
