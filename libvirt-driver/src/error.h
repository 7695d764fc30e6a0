// Errors of the libvirt driver: one exception type with its context.  What
// it says reaches `virsh start` (through the domain log) or the daemon's
// log, so it names the host, the element or the option at fault.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace aggvm::libvirt {

class DriverError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw DriverError(fmt::format(format, std::forward<Args>(args)...));
}

// Throws DriverError "<context>: <strerror(errno)>".
[[noreturn]] void fail_errno(const std::string& context);

}  // namespace aggvm::libvirt
