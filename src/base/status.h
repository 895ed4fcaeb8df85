// Status and StatusOr<T>: the error type for everything whose input can be bad
// (files, JSON, user flags, sockets). Invariants use TETRA_CHECK instead.
// Value types; safe to move between threads.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace tetra {

// What kind of failure a Status is, for callers that act on it (a scheduler
// that waits when the KV pool is exhausted, a server mapping errors to HTTP
// statuses). Most errors are kInvalid: bad input, named in the message.
enum class StatusCode : uint8_t {
  kOk,
  kInvalid,            // bad input: files, flags, requests
  kResourceExhausted,  // out of a bounded resource (KV blocks, slots); may succeed later
  kCancelled,          // the caller gave up (abort, disconnect, shutdown)
  kUnavailable,        // not ready or shutting down
  kInternal,           // a failure that is not the caller's (a kernel threw)
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  // The message names the thing and the problem, e.g.
  // "model.gguf: tensor 'blk.3.ffn_up_exps' ends past the end of the file".
  static Status Error(std::string message) { return Status(StatusCode::kInvalid, std::move(message)); }
  template <typename... Args>
  static Status Errorf(fmt::format_string<Args...> format, Args&&... args) {
    return Status(StatusCode::kInvalid, fmt::format(format, std::forward<Args>(args)...));
  }
  // An error of a given kind (not kOk).
  static Status WithCode(StatusCode code, std::string message) { return Status(code, std::move(message)); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  bool is_resource_exhausted() const { return code_ == StatusCode::kResourceExhausted; }
  const std::string& message() const { return message_; }
  // Prefixes the message with context ("file.gguf: " + message).
  Status WithPrefix(const std::string& prefix) const {
    return ok() ? *this : Status(code_, prefix + message_);
  }

 private:
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : value_(std::move(status)) {}  // NOLINT: implicit by design
  StatusOr(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(value_); }
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(value_); }
  T& value() & { return std::get<T>(value_); }
  const T& value() const& { return std::get<T>(value_); }
  T&& value() && { return std::get<T>(std::move(value_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<Status, T> value_;
};

}  // namespace tetra

#define TETRA_CONCAT_INNER(a, b) a##b
#define TETRA_CONCAT(a, b) TETRA_CONCAT_INNER(a, b)

#define TETRA_RETURN_IF_ERROR(expr)                  \
  do {                                               \
    ::tetra::Status tetra_status_ = (expr);          \
    if (!tetra_status_.ok()) return tetra_status_;   \
  } while (0)

#define TETRA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

#define TETRA_ASSIGN_OR_RETURN(lhs, expr) \
  TETRA_ASSIGN_OR_RETURN_IMPL(TETRA_CONCAT(tetra_statusor_, __LINE__), lhs, expr)
