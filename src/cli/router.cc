#include "cli/router.h"

#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>

#include <thread>

#include "serving/http_server.h"
#include "serving/router.h"

namespace tetra::cli {

void AddRouterCommand(CLI::App& app, RouterFlags& f) {
  CLI::App* cmd = app.add_subcommand("router", "Serve one OpenAI endpoint in front of prefill and decode instances");
  cmd->add_option("--host", f.host, "Address to listen on (default 127.0.0.1)");
  cmd->add_option("--port", f.port, "Port (default 8000; 0: any free port)")->check(CLI::Range(0, 65535));
  cmd->add_option("--prefill", f.prefill, "Prefill instances, http://HOST:PORT (tetra serve --role prefill)");
  cmd->add_option("--decode", f.decode, "Decode instances, http://HOST:PORT (tetra serve --role decode)");
  cmd->add_option("--etcd", f.etcd,
                  "etcd endpoint, http://HOST:PORT: instances registered there (tetra serve --etcd) join and leave "
                  "the pools, beside --prefill and --decode");
  cmd->add_option("--health-interval", f.health_interval, "Seconds between /health checks (default 1)")
      ->check(CLI::Range(0.05, 3600.0));
  cmd->add_option("--max-connections", f.max_connections, "Open client connections at most (default 4096)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--drain-timeout", f.drain_timeout, "On SIGTERM, seconds to let answers in flight finish (default 30)")
      ->check(CLI::Range(0.0, 3600.0));
}

int RunRouter(const RouterFlags& f) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  serving::RouterOptions options;
  options.prefill_urls = f.prefill;
  options.decode_urls = f.decode;
  options.etcd_url = f.etcd;
  options.health_interval_seconds = f.health_interval;
  auto router = serving::Router::Create(options);
  if (!router.ok()) {
    fmt::print(stderr, "{}\n", router.status().message());
    return 1;
  }
  serving::HttpServerOptions http_options;
  http_options.host = f.host;
  http_options.port = f.port;
  http_options.max_connections = f.max_connections;
  serving::Router* r = router->get();
  serving::HttpServer http(http_options, [r](serving::HttpRequest&& request, std::shared_ptr<serving::HttpExchange> ex) {
    r->Handle(std::move(request), std::move(ex));
  });
  if (Status s = http.Listen(); !s.ok()) {
    fmt::print(stderr, "tetra router: {}\n", s.message());
    return 1;
  }
  std::thread io([&http] { http.Run(); });
  fmt::print(stderr, "tetra router: on {}:{}, {} prefill and {} decode instance(s){}\n", f.host, http.port(),
             f.prefill.size(), f.decode.size(), f.etcd.empty() ? "" : fmt::format(", more from etcd at {}", f.etcd));
  std::fflush(stderr);
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  http.StopAccepting();
  http.Stop(f.drain_timeout);
  io.join();
  return 0;
}

}  // namespace tetra::cli
