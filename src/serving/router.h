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

// What the router knows of an instance's load when it picks one.
struct InstanceLoad {
  bool healthy = true;
  int in_flight = 0;              // the router's requests there now
  int64_t waiting = 0;            // its num_requests_waiting at the last health check
  int64_t pending_tokens = 0;     // its num_prompt_tokens_pending then (prefill instances)
  double kv_usage = 0;            // its kv_cache_usage_perc then
  uint64_t url_hash = 0;
};

// The instance a request goes to, or -1 when none is healthy: the least
// loaded (requests in flight and waiting there, and for prefill instances
// queued prompt tokens in units of 512), avoiding one whose KV cache is
// full while another has room; among those within one request of the
// least load, the one the request's prefix hashes to (rendezvous hashing
// on `affinity`; 0: none), so requests that share a prefix meet the
// prefix cache that holds it.
int ChooseInstance(const std::vector<InstanceLoad>& loads, uint64_t affinity);

// A request's prefix-affinity key: a hash of the start of its prompt (about
// the first KV block: 256 characters of text or chat content, 64 token
// ids); 0 when the body has none.
uint64_t AffinityKey(bool chat, const std::string& body);

struct RouterOptions {
  std::vector<std::string> prefill_urls;  // http://host:port
  std::vector<std::string> decode_urls;
  // etcd (http://host:port): instances registered there join (and leave)
  // the pools at every health check, beside the static lists.
  std::string etcd_url;
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
    bool discovered = false;           // came from etcd (GUARDED_BY(instances_mu_))
    std::atomic<bool> listed{true};    // static, or registered in etcd now
    std::atomic<int> in_flight{0};
    std::atomic<int64_t> requests{0};
    std::atomic<int64_t> failures{0};
    // From its /metrics at the last health check.
    std::atomic<int64_t> waiting{0};
    std::atomic<int64_t> pending_tokens{0};
    std::atomic<double> kv_usage{0};
  };

 private:
  explicit Router(const RouterOptions& options);
  Instance* Pick(bool decode, uint64_t affinity = 0);
  Status AddInstance(const std::string& url, bool decode);
  void Discover();  // the etcd registry into instances_
  void HealthLoop();
  std::string Metrics() const;

  RouterOptions options_;
  // Instances are never removed (relays hold pointers): one that leaves
  // etcd is no longer `listed`.
  mutable std::mutex instances_mu_;
  std::vector<std::unique_ptr<Instance>> instances_;  // GUARDED_BY(instances_mu_)
  struct Io;
  std::unique_ptr<Io> io_;
  std::atomic<bool> stopping_{false};
  std::thread health_;
  std::atomic<int64_t> requests_total_{0};
  std::atomic<int64_t> requests_failed_{0};
  std::atomic<int64_t> prefill_assigned_{0};
};

}  // namespace tetra::serving
