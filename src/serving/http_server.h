// A small HTTP/1.1 server on Boost.Beast for the OpenAI routes: keep-alive,
// bounded request bodies, a connection limit, Server-Sent-Event streams
// (chunked transfer encoding), disconnect detection while a request is in
// flight, and a graceful drain on shutdown.
//
// Threads: the server runs its IO threads (Run); each connection is served
// on its own strand. The handler runs on that strand and must return quickly
// (parse, tokenize, submit); it answers through the HttpExchange, whose
// methods any thread may call (the engine's thread, typically): they post to
// the connection's strand. Calls after the connection closed are ignored.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"

namespace tetra::serving {

struct HttpRequest {
  std::string method;        // "GET", "POST", ...
  std::string path;          // the target without its query
  std::string query;         // after '?', "" when none
  std::string body;
  std::string authorization;  // the Authorization header, "" when absent
  std::string prefill_url;    // X-Tetra-Prefill (the router's pick of a prefill instance), "" when absent
  std::string remote;         // peer address, for logs
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// One request's answer: either Respond once, or StartStream, Write any number
// of times and End. Thread-safe.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual void Respond(int status, std::string_view content_type, std::string body, HttpHeaders headers = {}) = 0;
  virtual void StartStream(int status, std::string_view content_type) = 0;
  virtual void Write(std::string data) = 0;
  virtual void End() = 0;
  // `callback` runs once, on an IO thread, if the client goes away (or the
  // connection fails) before the answer ended; at once if it already has.
  virtual void OnDisconnect(std::function<void()> callback) = 0;
};

using HttpHandler = std::function<void(HttpRequest&&, std::shared_ptr<HttpExchange>)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                   // 0: any free port (see port())
  int io_threads = 1;
  int max_connections = 1024;        // more are answered 503 and closed
  size_t max_body_bytes = 32u << 20;  // larger bodies are answered 413
  int idle_timeout_seconds = 120;    // keep-alive connections without a request
  int write_timeout_seconds = 120;   // a client that reads nothing for this long is dropped
  size_t max_queued_bytes = 16u << 20;  // a stream's unsent bytes beyond this drop the client
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens: kUnavailable when the address is taken or invalid.
  Status Listen();
  int port() const;  // the bound port, after Listen
  // Serves on options.io_threads threads until Stop; returns when they end.
  void Run();
  // Stops accepting and closes idle keep-alive connections; answers in flight
  // go on (each then closes its connection). Thread-safe, idempotent.
  void StopAccepting();
  // Waits up to `seconds` for every connection to end, then stops the IO
  // threads (Run returns). Thread-safe.
  void Stop(double seconds);
  int open_connections() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace tetra::serving
