#include "node/cpu_latency.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <limits>

#include "error.h"

namespace aggvm::dsm {

void CpuLatencyRequest::check_bound(uint32_t max_us) {
  constexpr auto kMax = static_cast<uint32_t>(std::numeric_limits<int32_t>::max());
  if (max_us > kMax) fail(EINVAL, "CPU wake-up latency of {} us is out of range (at most {})", max_us, kMax);
}

CpuLatencyRequest::CpuLatencyRequest(uint32_t max_us, const std::string& device) {
  check_bound(max_us);
  fd_ = ::open(device.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd_ < 0) fail_errno(fmt::format("holding the host's CPU wake-up latency at {} us: opening {}", max_us, device));
  const int32_t value = static_cast<int32_t>(max_us);
  if (::write(fd_, &value, sizeof value) != static_cast<ssize_t>(sizeof value)) {
    const int err = errno;
    ::close(fd_);
    errno = err;
    fail_errno(fmt::format("holding the host's CPU wake-up latency at {} us: writing {}", max_us, device));
  }
}

CpuLatencyRequest::~CpuLatencyRequest() {
  if (fd_ >= 0) ::close(fd_);  // withdraws the request
}

int32_t CpuLatencyRequest::current(const std::string& device) {
  const int fd = ::open(device.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_errno("opening " + device);
  int32_t value = 0;
  const ssize_t n = ::read(fd, &value, sizeof value);
  const int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(sizeof value)) {
    errno = n < 0 ? err : EIO;
    fail_errno("reading " + device);
  }
  return value;
}

}  // namespace aggvm::dsm
