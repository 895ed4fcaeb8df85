// `tetra router`: the front of a disaggregated deployment
// (doc/disaggregation.md). Clients see one OpenAI server; each generation
// request goes to the decode instance with the fewest requests in flight,
// with an X-Tetra-Prefill header naming the prefill instance with the
// fewest, and the decode instance's answer (JSON or an SSE stream) is
// relayed back as it comes. A health checker takes instances whose /health
// fails out of rotation and puts them back when it answers again.
//
//   GET  /health     200 while a decode instance is healthy
//   GET  /v1/models  from a decode instance
//   GET  /metrics    the router's own counters (doc/metrics.md)
//   POST /v1/completions, /v1/chat/completions  relayed
//
// Threads: Handle runs on an HTTP IO thread and returns at once; relays run
// asynchronously on the router's own IO thread; the health checker has one.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "serving/http_server.h"

namespace tetra::serving {

struct RouterOptions {
  std::vector<std::string> prefill_urls;  // http://host:port
  std::vector<std::string> decode_urls;
  double health_interval_seconds = 1.0;
};

class Router {
 public:
  static StatusOr<std::unique_ptr<Router>> Create(const RouterOptions& options);
  ~Router();

  void Handle(HttpRequest&& request, std::shared_ptr<HttpExchange> exchange);

  struct Instance {
    std::string url, host;
    int port = 0;
    bool is_decode = false;
    std::atomic<bool> healthy{true};
    std::atomic<int> in_flight{0};
    std::atomic<int64_t> requests{0};
    std::atomic<int64_t> failures{0};
  };

 private:
  explicit Router(const RouterOptions& options);
  Instance* Pick(bool decode);
  void HealthLoop();
  std::string Metrics() const;

  RouterOptions options_;
  std::vector<std::unique_ptr<Instance>> instances_;
  struct Io;
  std::unique_ptr<Io> io_;
  std::atomic<bool> stopping_{false};
  std::thread health_;
  std::atomic<int64_t> requests_total_{0};
  std::atomic<int64_t> requests_failed_{0};
  std::atomic<int64_t> prefill_assigned_{0};
};

}  // namespace tetra::serving
