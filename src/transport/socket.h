// TCP sockets for the KV transport: an owned descriptor, connect and listen
// with timeouts, and the two I/O loops everything else uses: gathered writes
// (sendmsg over iovecs, optionally MSG_ZEROCOPY) and scattered exact reads
// (readv straight into the caller's regions). POSIX only; one thread per
// socket direction at a time.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace tetra::transport {

// Owns a file descriptor; closes it when destroyed.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& other) noexcept : fd_(other.release()) {}
  Socket& operator=(Socket&& other) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() { Close(); }

  int fd() const { return fd_; }
  bool is_open() const { return fd_ >= 0; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Close();
  // Wakes any thread blocked on this socket (shutdown both directions); the
  // descriptor stays open until Close.
  void Shutdown();

 private:
  int fd_ = -1;
};

// A TCP connection to host:port within timeout, TCP_NODELAY set; writes that
// make no progress for io_timeout fail with EAGAIN.
StatusOr<Socket> ConnectTcp(const std::string& host, int port, std::chrono::milliseconds timeout,
                            std::chrono::milliseconds io_timeout);
// A listening socket on host:port (port 0: any free port; see LocalPort).
StatusOr<Socket> ListenTcp(const std::string& host, int port);
int LocalPort(const Socket& socket);
// The next connection, or an error when the listener is shut down.
StatusOr<Socket> AcceptTcp(const Socket& listener, std::chrono::milliseconds io_timeout);

// Asks the kernel for MSG_ZEROCOPY sends on this socket; false where it is
// not supported (then sends copy).
bool EnableZeroCopy(const Socket& socket);

// Writes every byte of iov (which it advances; the array is consumed).
// zerocopy: send with MSG_ZEROCOPY; *zerocopy_calls counts the sendmsg calls
// that did (each gets one completion, see DrainZeroCopyCompletions). The
// bytes must then stay unchanged until their completions arrive (so never
// a stack buffer). more: MSG_MORE, the next write continues this segment.
Status WriteAll(const Socket& socket, std::span<iovec> iov, bool zerocopy, uint32_t* zerocopy_calls,
                bool more = false);

// Reads zerocopy completions from the socket's error queue without
// blocking (or waiting up to wait when wait > 0): *completed becomes one
// past the highest completed call. *copied is set when the kernel copied
// instead (loopback does).
Status DrainZeroCopyCompletions(const Socket& socket, std::chrono::milliseconds wait, uint32_t* completed,
                                bool* copied);

// Fills every byte of iov from the socket. When the first byte must wait,
// it waits up to first_byte_timeout (negative: forever), then each further
// wait up to io_timeout. Error on EOF (naming how many bytes were missing),
// timeout or a socket error.
Status ReadExact(const Socket& socket, std::span<iovec> iov, std::chrono::milliseconds first_byte_timeout,
                 std::chrono::milliseconds io_timeout);

// Fills at least the first min_bytes of iov (and as much of the rest as
// has arrived, without waiting for it): the bytes read. Timeouts as ReadExact.
StatusOr<size_t> ReadAtLeast(const Socket& socket, std::span<iovec> iov, size_t min_bytes,
                             std::chrono::milliseconds first_byte_timeout, std::chrono::milliseconds io_timeout);

// Reads and drops n bytes (a payload nobody expects).
Status DiscardExact(const Socket& socket, uint64_t n, std::chrono::milliseconds io_timeout);

}  // namespace tetra::transport
