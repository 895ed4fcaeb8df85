// Discovery of a disaggregated deployment's instances through etcd
// (doc/disaggregation.md, "Discovery"), over etcd's v3 JSON gateway
// (POST /v3/lease/grant, /v3/kv/put, /v3/kv/range, /v3/lease/keepalive,
// /v3/lease/revoke): no gRPC dependency.
//
// An instance registers /tetra/instances/<role>/<url> = <url> under a lease
// of `ttl` seconds that it keeps alive; when the process dies the lease
// runs out and the key disappears, so a router that lists the prefix drops
// it. A lost lease (etcd restarted, a long pause) is granted again.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"

namespace tetra::serving {

inline constexpr char kEtcdPrefix[] = "/tetra/instances/";

struct DiscoveredInstance {
  std::string role;  // "prefill" or "decode"
  std::string url;
};

// The instances registered at the etcd endpoint (http://host:port) now.
StatusOr<std::vector<DiscoveredInstance>> ListInstances(const std::string& etcd_url);

class EtcdRegistration {
 public:
  // Registers (role, url) and keeps it alive until destroyed (then revokes
  // the lease: the key goes at once). An error when etcd cannot be reached
  // at the start; later failures are retried every ttl / 3.
  static StatusOr<std::unique_ptr<EtcdRegistration>> Start(const std::string& etcd_url, const std::string& role,
                                                           const std::string& url, std::chrono::seconds ttl);
  ~EtcdRegistration();

 private:
  EtcdRegistration() = default;
  Status Register();  // a new lease and the key under it
  void KeepAlive();

  std::string host_, key_, value_;
  int port_ = 0;
  std::chrono::seconds ttl_{10};
  std::string lease_;  // the lease id, as etcd writes it (a decimal string)
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // GUARDED_BY(mu_)
  std::thread thread_;
};

// Base64 (RFC 4648, padded), as etcd's gateway carries keys and values.
std::string Base64Encode(const std::string& bytes);
StatusOr<std::string> Base64Decode(const std::string& text);

}  // namespace tetra::serving
