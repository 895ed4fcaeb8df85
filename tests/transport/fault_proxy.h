// A TCP proxy for transport tests that sits between a sender and a receiver
// and misbehaves on the sender-to-receiver direction as told: flips a byte,
// closes the connection after some bytes (truncation, a peer dying
// mid-transfer), or delays every forwarded piece. Receiver-to-sender bytes
// pass untouched. One thread per direction per connection; test use only.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "transport/socket.h"

namespace tetra::transport::testing {

struct Faults {
  int64_t flip_byte_at = -1;    // offset in a connection's upstream bytes whose byte is inverted
  int64_t close_after = -1;     // upstream bytes forwarded before both sides are closed
  std::chrono::milliseconds delay{0};  // before each forwarded piece
  int connections = 1 << 30;    // how many connections (in accept order) the faults hit
};

class FaultProxy {
 public:
  FaultProxy(int target_port, Faults faults) : target_port_(target_port), faults_(faults) {
    listener_ = ListenTcp("127.0.0.1", 0).value();
    port_ = LocalPort(listener_);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~FaultProxy() {
    stopping_ = true;
    listener_.Shutdown();
    acceptor_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : connections_) {
      c->client.Shutdown();
      c->server.Shutdown();
    }
    for (auto& c : connections_) {
      c->up.join();
      c->down.join();
    }
  }
  int port() const { return port_; }
  void set_faults(Faults faults) {
    std::lock_guard<std::mutex> lock(mu_);
    faults_ = faults;
    accepted_ = 0;
  }

 private:
  struct Connection {
    Socket client, server;
    std::thread up, down;
  };

  void AcceptLoop() {
    while (!stopping_) {
      auto client = AcceptTcp(listener_, std::chrono::milliseconds(10000));
      if (!client.ok()) return;
      auto server = ConnectTcp("127.0.0.1", target_port_, std::chrono::milliseconds(2000), std::chrono::milliseconds(10000));
      if (!server.ok()) continue;
      auto c = std::make_unique<Connection>();
      c->client = std::move(*client);
      c->server = std::move(*server);
      std::lock_guard<std::mutex> lock(mu_);
      const Faults f = accepted_++ < faults_.connections ? faults_ : Faults{};
      Connection* raw = c.get();
      c->up = std::thread([raw, f] { Pump(raw->client, raw->server, f, raw); });
      c->down = std::thread([raw] { Pump(raw->server, raw->client, Faults{}, raw); });
      connections_.push_back(std::move(c));
    }
  }

  static void Pump(Socket& from, Socket& to, Faults f, Connection* c) {
    std::vector<uint8_t> buffer(1 << 16);
    int64_t forwarded = 0;
    for (;;) {
      const ssize_t n = ::recv(from.fd(), buffer.data(), buffer.size(), 0);
      if (n <= 0) break;
      int64_t count = n;
      if (f.close_after >= 0 && forwarded + count > f.close_after) count = f.close_after - forwarded;
      if (f.flip_byte_at >= forwarded && f.flip_byte_at < forwarded + count) buffer[f.flip_byte_at - forwarded] ^= 0xff;
      if (f.delay.count() > 0) std::this_thread::sleep_for(f.delay);
      int64_t sent = 0;
      while (sent < count) {
        const ssize_t w = ::send(to.fd(), buffer.data() + sent, static_cast<size_t>(count - sent), MSG_NOSIGNAL);
        if (w <= 0) break;
        sent += w;
      }
      forwarded += sent;
      if (sent < count || (f.close_after >= 0 && forwarded >= f.close_after)) break;
    }
    c->client.Shutdown();
    c->server.Shutdown();
  }

  const int target_port_;
  Socket listener_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  Faults faults_;
  int accepted_ = 0;
  std::vector<std::unique_ptr<Connection>> connections_;
};

}  // namespace tetra::transport::testing
