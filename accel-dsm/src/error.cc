#include "error.h"

#include <cstring>

namespace aggvm::dsm {

void fail_errno(const std::string& context) {
  const int saved = errno;
  throw DsmError(saved, fmt::format("{}: {}", context, std::strerror(saved)));
}

}  // namespace aggvm::dsm
