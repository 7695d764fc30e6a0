// Errors of libaggvm-dsm: exceptions that carry an errno and their context.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace aggvm::dsm {

class DsmError : public std::runtime_error {
 public:
  DsmError(int err, const std::string& what) : std::runtime_error(what), err_(err) {}
  // Positive errno value describing the failure class.
  int err() const noexcept { return err_; }

 private:
  int err_;
};

// Throws DsmError(err, "<formatted message>").
template <typename... Args>
[[noreturn]] void fail(int err, fmt::format_string<Args...> format, Args&&... args) {
  throw DsmError(err, fmt::format(format, std::forward<Args>(args)...));
}

// Throws DsmError for the current errno: "<context>: <strerror>".
[[noreturn]] void fail_errno(const std::string& context);

}  // namespace aggvm::dsm
