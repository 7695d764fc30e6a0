// Owned file descriptor: closed exactly once, never leaked on an exception path.
#pragma once

#include <unistd.h>

#include <utility>

namespace aggvm::harness::internal {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    // close() errors on a descriptor we own carry no actionable information
    // (the fd is gone either way), so they are deliberately not reported.
    if (fd_ >= 0) (void)::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// A pipe whose both ends are close-on-exec.
struct Pipe {
  Fd read;
  Fd write;
};
Pipe make_pipe();  // throws std::system_error

}  // namespace aggvm::harness::internal
