// A blocking HTTP/1.1 client on Boost.Beast for calls between tetra
// processes (a decode instance asking a prefill instance for a prompt's KV;
// the router's health checks): one request per connection, a deadline for
// the whole exchange. Any thread; each call is independent.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace tetra::serving {

struct HttpResponse {
  int status = 0;
  std::string body;
};

// "http://host:port" (a path after it is ignored) to host and port; an
// error naming the URL otherwise.
StatusOr<std::pair<std::string, int>> ParseHttpUrl(const std::string& url);

// POST (or GET when body is empty and method is "GET") to host:port/path.
// kUnavailable when the peer cannot be reached or the deadline passes; the
// response otherwise, whatever its status.
StatusOr<HttpResponse> HttpCall(const std::string& method, const std::string& host, int port, const std::string& path,
                                const std::string& body, std::chrono::milliseconds timeout,
                                const std::vector<std::pair<std::string, std::string>>& headers = {});

}  // namespace tetra::serving
