#include "internal/fd.h"

#include <fcntl.h>

#include <cerrno>
#include <system_error>

namespace aggvm::harness::internal {

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  return Pipe{Fd(fds[0]), Fd(fds[1])};
}

}  // namespace aggvm::harness::internal
