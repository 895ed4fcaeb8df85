// Status and StatusOr<T>: the error type for everything whose input can be bad
// (files, JSON, user flags, sockets). Invariants use TETRA_CHECK instead.
// Value types; safe to move between threads.
#pragma once

#include <fmt/format.h>

#include <string>
#include <utility>
#include <variant>

namespace tetra {

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  // The message names the thing and the problem, e.g.
  // "model.gguf: tensor 'blk.3.ffn_up_exps' ends past the end of the file".
  static Status Error(std::string message) { return Status(std::move(message)); }
  template <typename... Args>
  static Status Errorf(fmt::format_string<Args...> format, Args&&... args) {
    return Status(fmt::format(format, std::forward<Args>(args)...));
  }

  bool ok() const { return !is_error_; }
  const std::string& message() const { return message_; }
  // Prefixes the message with context ("file.gguf: " + message).
  Status WithPrefix(const std::string& prefix) const {
    return ok() ? *this : Status(prefix + message_);
  }

 private:
  explicit Status(std::string message) : is_error_(true), message_(std::move(message)) {}
  bool is_error_ = false;
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
