// HttpServer on loopback, driven with plain POSIX sockets (so the tests send
// exactly the bytes they mean, malformed ones included): keep-alive and
// pipelining, body limits with Content-Length and chunked bodies, malformed
// requests, chunked streams, disconnects seen while a request is in flight,
// the connection limit, and the shutdown drain. Waits poll with generous
// deadlines; nothing sleeps a fixed time.
#include "serving/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace tetra::serving {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kDeadline = std::chrono::seconds(5);  // generous: a pass takes milliseconds

// Polls `done` until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout = kDeadline) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                            // chunks joined when chunked
  std::vector<std::string> chunks;             // when chunked, the last is ""
  std::string raw_body;                        // the bytes after the header, as sent
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// A blocking client connection with a read buffer (responses may arrive together).
class Client {
 public:
  explicit Client(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      error_ = errno;
      Close();
    }
  }
  ~Client() { Close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return fd_ >= 0; }
  int connect_error() const { return error_; }

  bool Send(const std::string& data) {
    size_t sent = 0;
    while (sent < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  // The next response, or nullopt on EOF, error or timeout before it is whole.
  std::optional<Response> Read() {
    const auto deadline = Clock::now() + kDeadline;
    size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill(deadline)) return std::nullopt;
    }
    Response r;
    const std::string head = buffer_.substr(0, end);
    buffer_.erase(0, end + 4);
    size_t line_end = head.find("\r\n");
    const std::string status_line = head.substr(0, line_end);
    if (status_line.rfind("HTTP/1.1 ", 0) != 0 || status_line.size() < 12) return std::nullopt;
    r.status = std::stoi(status_line.substr(9, 3));
    while (line_end != std::string::npos) {
      const size_t start = line_end + 2;
      line_end = head.find("\r\n", start);
      const std::string line = head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
      const size_t colon = line.find(':');
      if (colon == std::string::npos) return std::nullopt;
      std::string name = line.substr(0, colon);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      const size_t value = line.find_first_not_of(' ', colon + 1);
      r.headers[name] = value == std::string::npos ? "" : line.substr(value);
    }
    if (r.header("transfer-encoding") == "chunked") {
      for (;;) {
        size_t size_end;
        while ((size_end = buffer_.find("\r\n")) == std::string::npos) {
          if (!Fill(deadline)) return std::nullopt;
        }
        const size_t size = std::stoul(buffer_.substr(0, size_end), nullptr, 16);
        while (buffer_.size() < size_end + 2 + size + 2) {
          if (!Fill(deadline)) return std::nullopt;
        }
        if (buffer_.compare(size_end + 2 + size, 2, "\r\n") != 0) return std::nullopt;
        r.raw_body += buffer_.substr(0, size_end + 2 + size + 2);
        r.chunks.push_back(buffer_.substr(size_end + 2, size));
        r.body += r.chunks.back();
        buffer_.erase(0, size_end + 2 + size + 2);
        if (size == 0) break;  // no trailers: "0\r\n\r\n"
      }
    } else {
      const size_t length = std::stoul(r.header("content-length"));
      while (buffer_.size() < length) {
        if (!Fill(deadline)) return std::nullopt;
      }
      r.body = r.raw_body = buffer_.substr(0, length);
      buffer_.erase(0, length);
    }
    return r;
  }

  // Whether the server closes the connection (EOF or reset) within the deadline.
  bool WaitClosed() {
    const auto deadline = Clock::now() + kDeadline;
    while (Fill(deadline)) {
    }
    return eof_;
  }

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  bool Fill(Clock::time_point deadline) {
    if (fd_ < 0 || eof_) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char chunk[16384];
    const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  int error_ = 0;
  bool eof_ = false;
  std::string buffer_;
};

std::string Post(const std::string& path, const std::string& body, const std::string& extra_headers = "") {
  return "POST " + path + " HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n" + extra_headers +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// A server on 127.0.0.1:<any> with routes:
//   /json     answers {"path": ..., "body": ...} at once
//   /async    answers the same from another thread (as the engine does)
//   /stream   a chunked stream of "a", "bb", "ccc"
//   /hang     never answers; the test holds the exchange and sees OnDisconnect
class HttpServerTest : public ::testing::Test {
 protected:
  void Start(HttpServerOptions options = {}) {
    options.host = "127.0.0.1";
    options.port = 0;
    options.io_threads = 2;  // connections on strands of a shared pool
    server_ = std::make_unique<HttpServer>(options, [this](HttpRequest&& request, std::shared_ptr<HttpExchange> ex) {
      Handle(std::move(request), std::move(ex));
    });
    ASSERT_TRUE(server_->Listen().ok());
    ASSERT_GT(server_->port(), 0);
    run_thread_ = std::thread([this] {
      server_->Run();
      run_returned_.store(true);
    });
  }

  void TearDown() override {
    {
      std::lock_guard lock(mu_);
      hung_.clear();  // an exchange keeps its connection alive
    }
    for (auto& t : workers_) t.join();
    if (run_thread_.joinable()) {
      if (!run_returned_.load()) server_->Stop(2.0);
      run_thread_.join();
    }
    server_.reset();
  }

  void Handle(HttpRequest&& request, std::shared_ptr<HttpExchange> ex) {
    const std::string answer = R"({"path":")" + request.path + R"(","body":")" + request.body + R"("})";
    if (request.path == "/json") return ex->Respond(200, "application/json", answer, {{"X-Test", "yes"}});
    if (request.path == "/async") {
      std::lock_guard lock(mu_);
      workers_.emplace_back([ex, answer] { ex->Respond(200, "application/json", answer); });
      return;
    }
    if (request.path == "/stream") {
      ex->StartStream(200, "text/event-stream");
      for (const char* part : {"a", "bb", "ccc"}) ex->Write(part);
      return ex->End();
    }
    if (request.path == "/hang") {
      ex->OnDisconnect([this] {
        std::lock_guard lock(mu_);
        ++disconnects_;
        cv_.notify_all();
      });
      std::lock_guard lock(mu_);
      hung_.push_back(std::move(ex));
      cv_.notify_all();
      return;
    }
    ex->Respond(404, "text/plain", "no such route");
  }

  size_t hung() {
    std::lock_guard lock(mu_);
    return hung_.size();
  }
  int disconnects() {
    std::lock_guard lock(mu_);
    return disconnects_;
  }
  std::shared_ptr<HttpExchange> hung_exchange(size_t i) {
    std::lock_guard lock(mu_);
    return hung_.at(i);
  }

  std::unique_ptr<HttpServer> server_;
  std::thread run_thread_;
  std::atomic<bool> run_returned_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<HttpExchange>> hung_;
  std::vector<std::thread> workers_;
  int disconnects_ = 0;
};

TEST_F(HttpServerTest, KeepAliveServesTwoRequestsOnOneConnection) {
  Start();
  Client c(server_->port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send(Post("/json", "one")));
  auto r = c.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type"), "application/json");
  EXPECT_EQ(r->header("connection"), "keep-alive");
  EXPECT_EQ(r->header("x-test"), "yes");
  EXPECT_EQ(r->body, R"({"path":"/json","body":"one"})");
  ASSERT_TRUE(c.Send(Post("/async?x=1", "two")));
  r = c.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, R"({"path":"/async","body":"two"})");
  EXPECT_EQ(server_->open_connections(), 1);
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  Start();
  Client c(server_->port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send(Post("/json", "first") + Post("/async", "second") + Post("/json", "third")));
  for (const char* want : {R"({"path":"/json","body":"first"})", R"({"path":"/async","body":"second"})",
                           R"({"path":"/json","body":"third"})"}) {
    auto r = c.Read();
    ASSERT_TRUE(r) << want;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, want);
  }
}

TEST_F(HttpServerTest, ContentLengthOverTheLimitIs413) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  Start(options);
  {
    Client c(server_->port());
    ASSERT_TRUE(c.Send(Post("/json", std::string(1024, 'x'))));  // at the limit: fine
    auto r = c.Read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  Client c(server_->port());
  const std::string body(1025, 'x');
  ASSERT_TRUE(c.Send(Post("/json", body)));
  auto r = c.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_NE(r->body.find("too large"), std::string::npos) << r->body;
  EXPECT_TRUE(c.WaitClosed());
}

TEST_F(HttpServerTest, ChunkedBodyOverTheLimitIs413) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  Start(options);
  const std::string head = "POST /json HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n";
  {
    Client c(server_->port());  // within the limit, in two chunks
    ASSERT_TRUE(c.Send(head + "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"));
    auto r = c.Read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, R"({"path":"/json","body":"abcde"})");
  }
  {
    Client c(server_->port());  // one chunk larger than the limit
    ASSERT_TRUE(c.Send(head + "800\r\n" + std::string(0x800, 'x') + "\r\n0\r\n\r\n"));
    auto r = c.Read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_EQ(r->header("connection"), "close");
    EXPECT_TRUE(c.WaitClosed());
  }
  Client c(server_->port());  // small chunks adding up to more than the limit
  std::string chunks;
  for (int i = 0; i < 5; ++i) chunks += "100\r\n" + std::string(256, 'y') + "\r\n";
  ASSERT_TRUE(c.Send(head + chunks + "0\r\n\r\n"));
  auto r = c.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_TRUE(c.WaitClosed());
}

TEST_F(HttpServerTest, MalformedRequestsAre400) {
  Start();
  for (const char* bad : {"THIS IS NOT HTTP\r\n\r\n", "GET /x HTTP/1.1\r\nNo colon here\r\n\r\n",
                          "POST /json HTTP/1.1\r\nContent-Length: twelve\r\n\r\n",
                          "POST /json HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}) {
    SCOPED_TRACE(bad);
    Client c(server_->port());
    ASSERT_TRUE(c.Send(bad));
    auto r = c.Read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_NE(r->body.find("malformed"), std::string::npos) << r->body;
    EXPECT_TRUE(c.WaitClosed());
  }
}

TEST_F(HttpServerTest, StreamIsChunkedAndEndsWithTheZeroChunk) {
  Start();
  Client c(server_->port());
  ASSERT_TRUE(c.Send(Post("/stream", "{}")));
  auto r = c.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("transfer-encoding"), "chunked");
  EXPECT_EQ(r->header("content-type"), "text/event-stream");
  EXPECT_EQ(r->header("content-length"), "");
  EXPECT_EQ(r->raw_body, "1\r\na\r\n2\r\nbb\r\n3\r\nccc\r\n0\r\n\r\n");
  EXPECT_EQ(r->chunks, (std::vector<std::string>{"a", "bb", "ccc", ""}));
  // The connection stays usable after the stream.
  ASSERT_TRUE(c.Send(Post("/json", "after")));
  r = c.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, R"({"path":"/json","body":"after"})");
}

TEST_F(HttpServerTest, ClosingTheSocketFiresOnDisconnect) {
  Start();
  Client c(server_->port());
  ASSERT_TRUE(c.Send(Post("/hang", "{}")));
  ASSERT_TRUE(WaitFor([&] { return hung() == 1; }));
  EXPECT_EQ(disconnects(), 0);
  c.Close();
  std::unique_lock lock(mu_);
  EXPECT_TRUE(cv_.wait_for(lock, std::chrono::seconds(2), [&] { return disconnects_ == 1; }));
  lock.unlock();
  // Answering now is ignored (the connection is gone), and fires nothing more.
  hung_exchange(0)->Respond(200, "application/json", "{}");
  hung_exchange(0)->OnDisconnect([this] {
    std::lock_guard l(mu_);
    ++disconnects_;
  });  // registered after the client left: runs at once
  EXPECT_TRUE(WaitFor([&] { return disconnects() == 2; }));
}

TEST_F(HttpServerTest, AnsweredRequestsDoNotFireOnDisconnect) {
  Start();
  Client c(server_->port());
  ASSERT_TRUE(c.Send(Post("/hang", "{}")));
  ASSERT_TRUE(WaitFor([&] { return hung() == 1; }));
  hung_exchange(0)->Respond(200, "application/json", "{}");
  auto r = c.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  c.Close();
  ASSERT_TRUE(WaitFor([&] { return server_->open_connections() == 1; }));  // the exchange holds it
  {
    std::lock_guard lock(mu_);
    hung_.clear();
  }
  ASSERT_TRUE(WaitFor([&] { return server_->open_connections() == 0; }));
  EXPECT_EQ(disconnects(), 0);
}

TEST_F(HttpServerTest, ConnectionsOverTheLimitGet503) {
  HttpServerOptions options;
  options.max_connections = 2;
  Start(options);
  Client a(server_->port()), b(server_->port());
  ASSERT_TRUE(a.connected() && b.connected());
  ASSERT_TRUE(WaitFor([&] { return server_->open_connections() == 2; }));
  Client extra(server_->port());
  ASSERT_TRUE(extra.connected());  // the kernel accepts; the server answers 503 unasked
  auto r = extra.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_NE(r->body.find("too many connections"), std::string::npos);
  EXPECT_TRUE(extra.WaitClosed());
  extra.Close();
  // The first two are served, and once one leaves a new one is too.
  ASSERT_TRUE(a.Send(Post("/json", "a")));
  r = a.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  b.Close();
  ASSERT_TRUE(WaitFor([&] { return server_->open_connections() == 1; }));
  Client c(server_->port());
  ASSERT_TRUE(c.Send(Post("/json", "c")));
  r = c.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpServerTest, StopAcceptingDrainsThenStopMakesRunReturn) {
  Start();
  const int port = server_->port();
  Client idle(port);
  ASSERT_TRUE(idle.Send(Post("/json", "x")));
  ASSERT_TRUE(idle.Read());
  Client busy(port);
  ASSERT_TRUE(busy.Send(Post("/hang", "{}")));
  ASSERT_TRUE(WaitFor([&] { return hung() == 1; }));

  server_->StopAccepting();
  EXPECT_TRUE(idle.WaitClosed()) << "idle keep-alive connections close";
  // No new connections (the listener closes shortly after StopAccepting).
  EXPECT_TRUE(WaitFor([&] {
    Client late(port);
    return !late.connected() || late.WaitClosed();
  }));
  // The answer in flight goes on, then its connection closes.
  hung_exchange(0)->Respond(200, "application/json", R"({"late":true})");
  auto r = busy.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, R"({"late":true})");
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_TRUE(busy.WaitClosed());
  busy.Close();  // the server discards what a closed-for-writing client still sends, until it closes
  {
    std::lock_guard lock(mu_);
    hung_.clear();
  }
  const auto start = Clock::now();
  server_->Stop(5.0);
  EXPECT_TRUE(WaitFor([&] { return run_returned_.load(); }));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3)) << "Stop waits only for the connections";
  EXPECT_EQ(server_->open_connections(), 0);
}

TEST_F(HttpServerTest, StopGivesUpOnAnswersThatNeverEnd) {
  Start();
  Client busy(server_->port());
  ASSERT_TRUE(busy.Send(Post("/hang", "{}")));
  ASSERT_TRUE(WaitFor([&] { return hung() == 1; }));
  const auto start = Clock::now();
  server_->Stop(0.2);
  EXPECT_TRUE(WaitFor([&] { return run_returned_.load(); }));
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(150));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
}

}  // namespace
}  // namespace tetra::serving
