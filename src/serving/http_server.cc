#include "serving/http_server.h"

#include <fmt/format.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "base/logging.h"

namespace tetra::serving {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using ErrorCode = beast::error_code;

std::string StatusLine(int status) {
  const auto reason = http::obsolete_reason(http::int_to_status(static_cast<unsigned>(status)));
  return fmt::format("HTTP/1.1 {} {}\r\n", status, std::string_view(reason.data(), reason.size()));
}

}  // namespace

class Session;

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  HttpServerOptions options;
  HttpHandler handler;
  net::io_context ioc;
  net::executor_work_guard<net::io_context::executor_type> work{ioc.get_executor()};
  tcp::acceptor acceptor{net::make_strand(ioc)};
  net::steady_timer accept_retry{acceptor.get_executor()};
  int bound_port = 0;
  std::atomic<bool> draining{false};
  std::atomic<int> connections{0};
  std::mutex mu;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;  // under mu

  void Accept();
  void OnAccept(ErrorCode ec, tcp::socket socket);
};

// One connection. Every member is touched on the connection's strand only.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<HttpServer::Impl> server)
      : stream_(std::move(socket)), server_(std::move(server)) {
    server_->connections.fetch_add(1);
  }
  ~Session() { server_->connections.fetch_sub(1); }

  auto executor() { return stream_.get_executor(); }

  void Start(bool reject) {
    ErrorCode ec;
    stream_.socket().set_option(tcp::no_delay(true), ec);
    remote_ = stream_.socket().remote_endpoint(ec).address().to_string();
    if (reject) {
      keep_alive_ = false;
      in_flight_ = true;
      QueueResponse(503, "application/json",
                    R"({"error":{"message":"too many connections","type":"server_error","param":null,"code":503}})",
                    {});
      return;
    }
    ReadRequest();
  }

  // --- the answer to request `seq` (posted here by HttpExchange) ---
  bool Current(uint64_t seq) const { return !closed_ && in_flight_ && seq == seq_; }

  void QueueResponse(int status, std::string_view content_type, std::string_view body, const HttpHeaders& headers) {
    if (response_started_) return;
    response_started_ = true;
    response_done_ = true;
    std::string out = StatusLine(status);
    out += fmt::format("Content-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n", content_type, body.size(),
                       KeepAlive() ? "keep-alive" : "close");
    for (const auto& [name, value] : headers) out += fmt::format("{}: {}\r\n", name, value);
    out += "\r\n";
    out += body;
    Enqueue(std::move(out));
  }
  void QueueStreamStart(int status, std::string_view content_type) {
    if (response_started_) return;
    response_started_ = true;
    streaming_ = true;
    std::string out = StatusLine(status);
    out += fmt::format(
        "Content-Type: {}\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: {}\r\n\r\n",
        content_type, KeepAlive() ? "keep-alive" : "close");
    Enqueue(std::move(out));
  }
  void QueueChunk(std::string_view data) {
    if (!streaming_ || response_done_ || data.empty()) return;
    std::string out = fmt::format("{:x}\r\n", data.size());
    out += data;
    out += "\r\n";
    Enqueue(std::move(out));
  }
  void QueueStreamEnd() {
    if (!streaming_ || response_done_) return;
    response_done_ = true;
    Enqueue("0\r\n\r\n");
  }
  void SetOnDisconnect(uint64_t seq, std::function<void()> callback) {
    if (seq != seq_) return;  // a later request runs: this one was answered
    if (closed_ || !in_flight_) {
      if (closed_ && !response_done_) callback();  // gone before the answer ended
      return;
    }
    on_disconnect_ = std::move(callback);
  }

  // Closes the connection if no request is in flight (shutdown drain).
  void CloseIfIdle() {
    if (!in_flight_) Close();
  }

 private:
  bool KeepAlive() const { return keep_alive_ && !server_->draining.load(); }

  void ReadRequest() {
    if (closed_) return;
    if (server_->draining.load()) return Close();
    parser_.emplace();
    parser_->body_limit(server_->options.max_body_bytes);
    parser_->header_limit(64 * 1024);
    stream_.expires_after(std::chrono::seconds(server_->options.idle_timeout_seconds));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](ErrorCode ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(ErrorCode ec) {
    if (ec) return OnReadError(ec);
    auto& request = parser_->get();
    keep_alive_ = request.keep_alive();
    const auto length = parser_->content_length();
    if (length && *length > server_->options.max_body_bytes) return RejectBody(413, "request body too large");
    if (beast::iequals(request[http::field::expect], "100-continue")) {
      continue_sent_ = true;
      net::async_write(stream_, net::buffer(kContinue, sizeof(kContinue) - 1),
                       [self = shared_from_this()](ErrorCode ec, size_t) {
                         if (ec) return self->Close();
                         self->ReadBody();
                       });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](ErrorCode ec, size_t) {
      if (ec) return self->OnReadError(ec);
      self->OnRequest();
    });
  }

  void OnReadError(ErrorCode ec) {
    if (ec == http::error::body_limit) return RejectBody(413, "request body too large");
    if (ec == http::error::header_limit) return RejectBody(431, "request header too large");
    if (ec.category() == ErrorCode(http::error::end_of_stream).category() && ec != http::error::end_of_stream &&
        ec != http::error::partial_message) {
      return RejectBody(400, fmt::format("malformed HTTP request: {}", ec.message()));
    }
    Close();  // end of stream, timeout, reset
  }

  // Answers an unreadable request, then closes once the client stops sending
  // (closing with unread bytes would reset the connection before the client
  // reads the answer).
  void RejectBody(int status, const std::string& message) {
    keep_alive_ = false;
    in_flight_ = true;
    ++seq_;
    response_started_ = false;
    response_done_ = false;
    streaming_ = false;
    QueueResponse(status, "application/json",
                  fmt::format(R"({{"error":{{"message":"{}","type":"invalid_request_error","param":null,"code":{}}}}})",
                              message, status),
                  {});
  }

  void OnRequest() {
    stream_.expires_never();
    auto message = parser_->release();
    HttpRequest request;
    request.method = std::string(message.method_string());
    const std::string_view target(message.target().data(), message.target().size());
    const size_t q = target.find('?');
    request.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) request.query = std::string(target.substr(q + 1));
    request.body = std::move(message.body());
    request.authorization = std::string(message[http::field::authorization]);
    request.prefill_url = std::string(message["X-Tetra-Prefill"]);
    request.remote = remote_;
    keep_alive_ = message.keep_alive();
    in_flight_ = true;
    ++seq_;
    response_started_ = false;
    response_done_ = false;
    streaming_ = false;
    Watch();
    auto exchange = MakeExchange();
    try {
      server_->handler(std::move(request), exchange);
    } catch (const std::exception& e) {
      // A bug in a handler costs its request, never the server.
      TETRA_LOG_ERROR("handler failed on {}: {}", std::string(target), e.what());
      exchange->Respond(500, "application/json",
                        R"({"error":{"message":"internal server error","type":"server_error","param":null,"code":500}})");
    }
  }

  std::shared_ptr<HttpExchange> MakeExchange();

  // A read while the answer is pending: it sees the client leave (EOF or a
  // reset) and keeps any pipelined bytes for the next request.
  void Watch() {
    if (closed_ || watching_ || buffer_.size() > 64 * 1024) return;
    watching_ = true;
    stream_.async_read_some(buffer_.prepare(4096), [self = shared_from_this()](ErrorCode ec, size_t n) {
      self->watching_ = false;
      if (self->lingering_) return;
      if (!ec) {
        self->buffer_.commit(n);
        if (self->in_flight_) return self->Watch();
        return self->ReadRequest();
      }
      if (ec == net::error::operation_aborted && !self->closed_ && !self->in_flight_) return self->ReadRequest();
      self->Close();
    });
  }

  void Enqueue(std::string bytes) {
    if (closed_) return;
    queued_bytes_ += bytes.size();
    queue_.push_back(std::move(bytes));
    if (queued_bytes_ > server_->options.max_queued_bytes) {
      TETRA_LOG_WARN("http: {} reads too slowly ({} bytes unsent); dropping it", remote_, queued_bytes_);
      return Close();
    }
    DoWrite();
  }

  void DoWrite() {
    if (writing_ || closed_) return;
    if (queue_.empty()) {
      if (response_done_ && in_flight_) OnResponseComplete();
      return;
    }
    writing_ = true;
    sending_.clear();
    for (std::string& part : queue_) sending_ += part;
    queue_.clear();
    stream_.expires_after(std::chrono::seconds(server_->options.write_timeout_seconds));
    net::async_write(stream_, net::buffer(sending_), [self = shared_from_this()](ErrorCode ec, size_t n) {
      self->writing_ = false;
      if (ec) return self->Close();
      self->queued_bytes_ -= n;
      self->stream_.expires_never();
      self->DoWrite();
    });
  }

  void OnResponseComplete() {
    in_flight_ = false;
    on_disconnect_ = nullptr;
    if (!KeepAlive()) return LingeringClose();
    if (watching_) {
      stream_.socket().cancel();  // the watch's handler starts the next read
      return;
    }
    ReadRequest();
  }

  // Half-closes, then discards what the client still sends (bounded) before closing.
  void LingeringClose() {
    if (closed_) return;
    ErrorCode ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (watching_) stream_.socket().cancel();
    lingering_ = true;
    stream_.expires_after(std::chrono::seconds(5));
    Discard();
  }
  void Discard() {
    if (closed_) return;
    if (watching_) {  // wait for the cancelled watch first
      net::post(stream_.get_executor(), [self = shared_from_this()] { self->Discard(); });
      return;
    }
    buffer_.clear();
    stream_.async_read_some(buffer_.prepare(64 * 1024), [self = shared_from_this()](ErrorCode ec, size_t n) {
      self->discarded_ += n;
      if (ec || self->discarded_ > (256u << 20)) return self->Close();
      self->Discard();
    });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    ErrorCode ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
    queue_.clear();
    if (in_flight_ && !response_done_ && on_disconnect_) {
      auto callback = std::move(on_disconnect_);
      callback();
    }
    on_disconnect_ = nullptr;
    in_flight_ = false;
  }

  static constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";

  beast::tcp_stream stream_;
  std::shared_ptr<HttpServer::Impl> server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string remote_;
  uint64_t seq_ = 0;          // the request in flight (or last)
  bool in_flight_ = false;    // a request is being answered
  bool response_started_ = false;
  bool response_done_ = false;  // its last bytes are queued
  bool streaming_ = false;
  bool keep_alive_ = true;
  bool continue_sent_ = false;
  bool watching_ = false;
  bool writing_ = false;
  bool lingering_ = false;
  bool closed_ = false;
  size_t discarded_ = 0;
  std::deque<std::string> queue_;
  std::string sending_;
  size_t queued_bytes_ = 0;
  std::function<void()> on_disconnect_;
};

namespace {

class Exchange final : public HttpExchange {
 public:
  Exchange(std::shared_ptr<Session> session, uint64_t seq) : session_(std::move(session)), seq_(seq) {}

  void Respond(int status, std::string_view content_type, std::string body, HttpHeaders headers) override {
    Post([status, type = std::string(content_type), body = std::move(body), headers = std::move(headers)](Session& s) {
      s.QueueResponse(status, type, body, headers);
    });
  }
  void StartStream(int status, std::string_view content_type) override {
    Post([status, type = std::string(content_type)](Session& s) { s.QueueStreamStart(status, type); });
  }
  void Write(std::string data) override {
    Post([data = std::move(data)](Session& s) { s.QueueChunk(data); });
  }
  void End() override {
    Post([](Session& s) { s.QueueStreamEnd(); });
  }
  void OnDisconnect(std::function<void()> callback) override {
    auto session = session_;
    net::dispatch(session->executor(), [session, seq = seq_, callback = std::move(callback)]() mutable {
      session->SetOnDisconnect(seq, std::move(callback));
    });
  }

 private:
  template <typename F>
  void Post(F&& f) {
    auto session = session_;
    net::dispatch(session->executor(), [session, seq = seq_, f = std::forward<F>(f)]() mutable {
      if (session->Current(seq)) f(*session);
    });
  }
  std::shared_ptr<Session> session_;
  uint64_t seq_;
};

}  // namespace

std::shared_ptr<HttpExchange> Session::MakeExchange() {
  return std::make_shared<Exchange>(shared_from_this(), seq_);
}

void HttpServer::Impl::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [self = shared_from_this()](ErrorCode ec, tcp::socket socket) {
    self->OnAccept(ec, std::move(socket));
  });
}

void HttpServer::Impl::OnAccept(ErrorCode ec, tcp::socket socket) {
  if (draining.load() || !acceptor.is_open()) return;
  if (ec) {
    // Out of file descriptors or a transient failure: try again shortly.
    TETRA_LOG_WARN("http: accept failed: {}", ec.message());
    accept_retry.expires_after(std::chrono::milliseconds(50));
    accept_retry.async_wait([self = shared_from_this()](ErrorCode) { self->Accept(); });
    return;
  }
  const bool reject = connections.load() >= options.max_connections;
  auto session = std::make_shared<Session>(std::move(socket), shared_from_this());
  {
    std::lock_guard lock(mu);
    for (auto it = sessions.begin(); it != sessions.end();) {
      it = it->second.expired() ? sessions.erase(it) : std::next(it);
    }
    sessions.emplace(session.get(), session);
  }
  net::dispatch(session->executor(), [session, reject] { session->Start(reject); });
  Accept();
}

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler) : impl_(std::make_shared<Impl>()) {
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
}

HttpServer::~HttpServer() {
  impl_->work.reset();
  impl_->ioc.stop();
}

Status HttpServer::Listen() {
  ErrorCode ec;
  const auto address = net::ip::make_address(impl_->options.host, ec);
  if (ec) return Status::WithCode(StatusCode::kInvalid, fmt::format("--host {}: {}", impl_->options.host, ec.message()));
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(impl_->options.port));
  auto& acceptor = impl_->acceptor;
  const auto where = fmt::format("{}:{}", impl_->options.host, impl_->options.port);
  if (acceptor.open(endpoint.protocol(), ec); ec) {
    return Status::WithCode(StatusCode::kUnavailable, fmt::format("{}: {}", where, ec.message()));
  }
  acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (acceptor.bind(endpoint, ec); ec) {
    return Status::WithCode(StatusCode::kUnavailable, fmt::format("cannot listen on {}: {}", where, ec.message()));
  }
  if (acceptor.listen(net::socket_base::max_listen_connections, ec); ec) {
    return Status::WithCode(StatusCode::kUnavailable, fmt::format("cannot listen on {}: {}", where, ec.message()));
  }
  impl_->bound_port = acceptor.local_endpoint().port();
  net::dispatch(acceptor.get_executor(), [impl = impl_] { impl->Accept(); });
  return Status::Ok();
}

int HttpServer::port() const { return impl_->bound_port; }
int HttpServer::open_connections() const { return impl_->connections.load(); }

void HttpServer::Run() {
  std::vector<std::thread> threads;
  for (int i = 1; i < std::max(1, impl_->options.io_threads); ++i) {
    threads.emplace_back([impl = impl_] { impl->ioc.run(); });
  }
  impl_->ioc.run();
  for (auto& t : threads) t.join();
}

void HttpServer::StopAccepting() {
  if (impl_->draining.exchange(true)) return;
  net::dispatch(impl_->acceptor.get_executor(), [impl = impl_] {
    ErrorCode ec;
    impl->acceptor.close(ec);
    impl->accept_retry.cancel();
  });
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [ptr, weak] : impl_->sessions) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) net::dispatch(s->executor(), [s] { s->CloseIfIdle(); });
}

void HttpServer::Stop(double seconds) {
  StopAccepting();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (impl_->connections.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  impl_->work.reset();
  impl_->ioc.stop();
}

}  // namespace tetra::serving
