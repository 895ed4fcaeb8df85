#include "transport/socket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif
#ifndef SO_EE_ORIGIN_ZEROCOPY
#define SO_EE_ORIGIN_ZEROCOPY 5
#endif
#ifndef SO_EE_CODE_ZEROCOPY_COPIED
#define SO_EE_CODE_ZEROCOPY_COPIED 1
#endif

namespace tetra::transport {
namespace {

constexpr int kMaxIov = 1024;  // IOV_MAX on Linux

std::string ErrnoText(int error) { return std::strerror(error); }

void SetIoTimeout(int fd, std::chrono::milliseconds io_timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(io_timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((io_timeout.count() % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

void SetNoDelay(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Drops the first n bytes of iov (n at most its total).
void Advance(std::span<iovec>& iov, size_t n) {
  while (n > 0 && !iov.empty()) {
    if (n >= iov.front().iov_len) {
      n -= iov.front().iov_len;
      iov = iov.subspan(1);
    } else {
      iov.front().iov_base = static_cast<uint8_t*>(iov.front().iov_base) + n;
      iov.front().iov_len -= n;
      n = 0;
    }
  }
  while (!iov.empty() && iov.front().iov_len == 0) iov = iov.subspan(1);
}

size_t TotalBytes(std::span<const iovec> iov) {
  size_t total = 0;
  for (const iovec& v : iov) total += v.iov_len;
  return total;
}

// 0: ready; else an error after timeout (negative: wait forever).
Status WaitReadable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    const int r = poll(&p, 1, timeout.count() < 0 ? -1 : static_cast<int>(timeout.count()));
    if (r > 0) return Status::Ok();
    if (r == 0) return Status::WithCode(StatusCode::kUnavailable, fmt::format("no data for {} ms", timeout.count()));
    if (errno != EINTR) return Status::WithCode(StatusCode::kUnavailable, "poll: " + ErrnoText(errno));
  }
}

}  // namespace

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = other.release();
  }
  return *this;
}

void Socket::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void Socket::Shutdown() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

StatusOr<Socket> ConnectTcp(const std::string& host, int port, std::chrono::milliseconds timeout,
                            std::chrono::milliseconds io_timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return Status::WithCode(StatusCode::kUnavailable, fmt::format("{}:{}: {}", host, port, gai_strerror(rc)));
  }
  std::string last_error = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    Socket s(socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol));
    if (!s.is_open()) {
      last_error = ErrnoText(errno);
      continue;
    }
    int rc = connect(s.fd(), a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{s.fd(), POLLOUT, 0};
      rc = poll(&p, 1, static_cast<int>(timeout.count()));
      if (rc == 0) {
        last_error = fmt::format("connect timed out after {} ms", timeout.count());
        continue;
      }
      int error = 0;
      socklen_t length = sizeof(error);
      getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &error, &length);
      rc = error == 0 ? 0 : -1;
      errno = error;
    }
    if (rc != 0) {
      last_error = ErrnoText(errno);
      continue;
    }
    fcntl(s.fd(), F_SETFL, fcntl(s.fd(), F_GETFL) & ~O_NONBLOCK);
    SetNoDelay(s.fd());
    SetIoTimeout(s.fd(), io_timeout);
    freeaddrinfo(found);
    return s;
  }
  freeaddrinfo(found);
  return Status::WithCode(StatusCode::kUnavailable, fmt::format("connect {}:{}: {}", host, port, last_error));
}

StatusOr<Socket> ListenTcp(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return Status::Errorf("listen {}:{}: {}", host, port, gai_strerror(rc));
  }
  std::string last_error = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    Socket s(socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!s.is_open()) continue;
    const int one = 1;
    setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(s.fd(), a->ai_addr, a->ai_addrlen) != 0 || listen(s.fd(), 128) != 0) {
      last_error = ErrnoText(errno);
      continue;
    }
    freeaddrinfo(found);
    return s;
  }
  freeaddrinfo(found);
  return Status::Errorf("listen {}:{}: {}", host, port, last_error);
}

int LocalPort(const Socket& socket) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (getsockname(socket.fd(), reinterpret_cast<sockaddr*>(&address), &length) != 0) return -1;
  if (address.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&address)->sin_port);
  if (address.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&address)->sin6_port);
  return -1;
}

StatusOr<Socket> AcceptTcp(const Socket& listener, std::chrono::milliseconds io_timeout) {
  for (;;) {
    const int fd = accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      SetNoDelay(fd);
      SetIoTimeout(fd, io_timeout);
      return Socket(fd);
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    return Status::WithCode(StatusCode::kUnavailable, "accept: " + ErrnoText(errno));
  }
}

bool EnableZeroCopy(const Socket& socket) {
  const int one = 1;
  return setsockopt(socket.fd(), SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) == 0;
}

Status WriteAll(const Socket& socket, std::span<iovec> iov, bool zerocopy, uint32_t* zerocopy_calls, bool more) {
  Advance(iov, 0);
  while (!iov.empty()) {
    msghdr message{};
    message.msg_iov = iov.data();
    message.msg_iovlen = std::min<size_t>(iov.size(), kMaxIov);
    const ssize_t n =
        sendmsg(socket.fd(), &message, MSG_NOSIGNAL | (zerocopy ? MSG_ZEROCOPY : 0) | (more ? MSG_MORE : 0));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (zerocopy && errno == ENOBUFS) {  // over the socket's optmem limit: copy this call
        zerocopy = false;
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return Status::WithCode(StatusCode::kUnavailable, "send: the peer stopped reading (timed out)");
      }
      return Status::WithCode(StatusCode::kUnavailable, "send: " + ErrnoText(errno));
    }
    if (zerocopy && zerocopy_calls != nullptr) ++*zerocopy_calls;
    Advance(iov, static_cast<size_t>(n));
  }
  return Status::Ok();
}

Status DrainZeroCopyCompletions(const Socket& socket, std::chrono::milliseconds wait, uint32_t* completed,
                                bool* copied) {
  if (wait.count() > 0) {
    pollfd p{socket.fd(), 0, 0};  // POLLERR is always reported
    if (poll(&p, 1, static_cast<int>(wait.count())) < 0 && errno != EINTR) {
      return Status::WithCode(StatusCode::kUnavailable, "poll: " + ErrnoText(errno));
    }
  }
  for (;;) {
    alignas(cmsghdr) char control[128];
    msghdr message{};
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    if (recvmsg(socket.fd(), &message, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return Status::Ok();
      return Status::WithCode(StatusCode::kUnavailable, "zerocopy completions: " + ErrnoText(errno));
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
      const bool is_recverr = (c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
                              (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR);
      if (!is_recverr) continue;
      sock_extended_err error;
      std::memcpy(&error, CMSG_DATA(c), sizeof(error));
      if (error.ee_origin != SO_EE_ORIGIN_ZEROCOPY) continue;
      *completed += error.ee_data - error.ee_info + 1;  // calls [ee_info, ee_data]
      if (error.ee_code & SO_EE_CODE_ZEROCOPY_COPIED) *copied = true;
    }
  }
}

StatusOr<size_t> ReadAtLeast(const Socket& socket, std::span<iovec> iov, size_t min_bytes,
                             std::chrono::milliseconds first_byte_timeout, std::chrono::milliseconds io_timeout) {
  const size_t total = TotalBytes(iov);
  size_t done = 0;
  Advance(iov, 0);
  while (done < min_bytes) {
    // Read what is there without blocking; wait (with the timeout) only when nothing is.
    msghdr message{};
    message.msg_iov = iov.data();
    message.msg_iovlen = std::min<size_t>(iov.size(), kMaxIov);
    const ssize_t n = recvmsg(socket.fd(), &message, MSG_DONTWAIT);
    if (n == 0) {
      return Status::WithCode(StatusCode::kUnavailable,
                              fmt::format("connection closed with {} of {} bytes received", done, min_bytes));
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        TETRA_RETURN_IF_ERROR(WaitReadable(socket.fd(), done == 0 ? first_byte_timeout : io_timeout)
                                  .WithPrefix(fmt::format("receive ({} of {} bytes): ", done, min_bytes)));
        continue;
      }
      if (errno == EINTR) continue;
      return Status::WithCode(StatusCode::kUnavailable, "receive: " + ErrnoText(errno));
    }
    done += static_cast<size_t>(n);
    Advance(iov, static_cast<size_t>(n));
  }
  (void)total;
  return done;
}

Status ReadExact(const Socket& socket, std::span<iovec> iov, std::chrono::milliseconds first_byte_timeout,
                 std::chrono::milliseconds io_timeout) {
  return ReadAtLeast(socket, iov, TotalBytes(iov), first_byte_timeout, io_timeout).status();
}

Status DiscardExact(const Socket& socket, uint64_t n, std::chrono::milliseconds io_timeout) {
  static thread_local std::vector<uint8_t> sink(1 << 16);
  while (n > 0) {
    iovec v{sink.data(), static_cast<size_t>(std::min<uint64_t>(n, sink.size()))};
    TETRA_RETURN_IF_ERROR(ReadExact(socket, std::span<iovec>(&v, 1), io_timeout, io_timeout));
    n -= std::min<uint64_t>(n, sink.size());
  }
  return Status::Ok();
}

}  // namespace tetra::transport
