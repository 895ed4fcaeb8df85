#include "serving/http_client.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace tetra::serving {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

StatusOr<std::pair<std::string, int>> ParseHttpUrl(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) return Status::Errorf("'{}': expected http://HOST:PORT", url);
  std::string rest = url.substr(scheme.size());
  rest = rest.substr(0, rest.find('/'));
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size()) {
    return Status::Errorf("'{}': expected http://HOST:PORT", url);
  }
  int port = 0;
  for (char c : rest.substr(colon + 1)) {
    if (c < '0' || c > '9' || port > 65535) return Status::Errorf("'{}': bad port", url);
    port = port * 10 + (c - '0');
  }
  if (port < 1 || port > 65535) return Status::Errorf("'{}': bad port", url);
  return std::make_pair(rest.substr(0, colon), port);
}

StatusOr<HttpResponse> HttpCall(const std::string& method, const std::string& host, int port, const std::string& path,
                                const std::string& body, std::chrono::milliseconds timeout,
                                const std::vector<std::pair<std::string, std::string>>& headers) {
  const std::string where = fmt::format("{} http://{}:{}{}", method, host, port, path);
  // Asynchronous operations, so the stream's deadline holds for each of
  // them: a peer that stops answering (a partition, a hung process) costs
  // `timeout`, never a thread.
  try {
    net::io_context ioc;
    tcp::resolver resolver(ioc);
    beast::tcp_stream stream(ioc);
    http::request<http::string_body> request(method == "GET" ? http::verb::get : http::verb::post, path, 11);
    request.set(http::field::host, fmt::format("{}:{}", host, port));
    request.set(http::field::connection, "close");
    for (const auto& [name, value] : headers) request.set(name, value);
    if (method != "GET") {
      request.set(http::field::content_type, "application/json");
      request.body() = body;
      request.prepare_payload();
    }
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64u << 20);
    beast::error_code failure;
    bool done = false;
    auto fail = [&](beast::error_code ec) { failure = ec; };
    resolver.async_resolve(host, std::to_string(port), [&](beast::error_code ec, tcp::resolver::results_type results) {
      if (ec) return fail(ec);
      stream.expires_after(timeout);
      stream.async_connect(results, [&](beast::error_code ec, const tcp::endpoint&) {
        if (ec) return fail(ec);
        http::async_write(stream, request, [&](beast::error_code ec, size_t) {
          if (ec) return fail(ec);
          http::async_read(stream, buffer, parser, [&](beast::error_code ec, size_t) {
            if (ec) return fail(ec);
            done = true;
          });
        });
      });
    });
    ioc.run_for(timeout + std::chrono::seconds(1));  // the resolver has no deadline of its own
    if (!done) {
      const std::string why = failure ? failure.message() : "no answer in time";
      return Status::WithCode(StatusCode::kUnavailable, fmt::format("{}: {}", where, why));
    }
    HttpResponse out;
    out.status = static_cast<int>(parser.get().result_int());
    out.body = std::move(parser.get().body());
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    return out;
  } catch (const std::exception& e) {
    return Status::WithCode(StatusCode::kUnavailable, fmt::format("{}: {}", where, e.what()));
  }
}

}  // namespace tetra::serving
