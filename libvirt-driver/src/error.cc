#include "error.h"

#include <cerrno>
#include <cstring>

namespace aggvm::libvirt {

void fail_errno(const std::string& context) {
  const int saved = errno;
  throw DriverError(fmt::format("{}: {}", context, std::strerror(saved)));
}

}  // namespace aggvm::libvirt
