// Floors for make bench-dsm, measured in the same run as the faults: the
// local cost of one userfaultfd fault resolved with UFFDIO_COPY (no
// network: a handler thread in this process), and the percentiles every
// figure is reported with.  The raw fabric floor is dsm-ucx-floor.
#pragma once

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace aggvm::bench {

struct Percentiles {
  double p50 = 0, p99 = 0;
};

// Nearest-rank percentiles of samples (microseconds, say); zeros if empty.
inline Percentiles percentiles(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  auto rank = [&](double q) {
    const auto k = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::clamp<size_t>(k, 1, v.size()) - 1];
  };
  return {rank(0.50), rank(0.99)};
}

namespace detail {

[[noreturn]] inline void fail_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

class Fd {
 public:
  explicit Fd(int fd, const char* what) : fd_(fd) {
    if (fd_ < 0) fail_errno(what);
  }
  ~Fd() { ::close(fd_); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

class Mapping {
 public:
  explicit Mapping(size_t len) : len_(len) {
    ptr_ = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ptr_ == MAP_FAILED) fail_errno("mmap");
  }
  ~Mapping() { ::munmap(ptr_, len_); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  char* data() const { return static_cast<char*>(ptr_); }
  size_t size() const { return len_; }

 private:
  void* ptr_;
  size_t len_;
};

}  // namespace detail

// Percentiles of the microseconds a thread takes to fault on a MISSING
// page that another thread resolves with UFFDIO_COPY of 4 KiB.  The fd is
// non-blocking (a blocking userfaultfd always polls as POLLERR, so a
// handler would end up blocked in read() after the last fault) and the
// handler is stopped through an eventfd in its poll set, so shutdown does
// not race.  A handler error unregisters the range, which wakes the
// faulting thread (its page then reads as zero), and is thrown here.
// With `polling`, the handler never sleeps (poll with no timeout, as the
// DSM's service thread does when it spins): the floor of a DSM that polls.
inline Percentiles local_uffd_fault_us(size_t faults, bool polling = false) {
  constexpr size_t kPage = 4096;
  constexpr char kFill = 1;
  if (faults == 0) return {};
  detail::Mapping region(faults * kPage);
  detail::Fd uffd(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)), "userfaultfd");
  detail::Fd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd");
  uffdio_api api{.api = UFFD_API, .features = 0, .ioctls = 0};
  if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0) detail::fail_errno("UFFDIO_API");
  uffdio_register reg{};
  reg.range = {reinterpret_cast<uint64_t>(region.data()), region.size()};
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (::ioctl(uffd.get(), UFFDIO_REGISTER, &reg) != 0) detail::fail_errno("UFFDIO_REGISTER");

  std::atomic<int> handler_errno{0};
  std::string handler_what;  // written before handler_errno, read after
  std::thread handler([&] {
    alignas(kPage) char src[kPage];
    std::memset(src, kFill, sizeof src);
    auto fail = [&](const char* what) {
      handler_what = what;
      handler_errno.store(errno ? errno : EIO);
      (void)::ioctl(uffd.get(), UFFDIO_UNREGISTER, &reg.range);  // wakes the faulter
    };
    for (;;) {
      pollfd p[2] = {{uffd.get(), POLLIN, 0}, {stop.get(), POLLIN, 0}};
      const int ready = ::poll(p, 2, polling ? 0 : -1);
      if (ready == 0) continue;
      if (ready < 0) {
        if (errno == EINTR) continue;
        return fail("poll");
      }
      if (p[1].revents) return;  // stop: every fault was taken and resolved
      if (p[0].revents & (POLLERR | POLLHUP)) return fail("userfaultfd poll error");
      uffd_msg m;
      const ssize_t n = ::read(uffd.get(), &m, sizeof m);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;  // another wake-up took it
      if (n != static_cast<ssize_t>(sizeof m)) return fail("read userfaultfd");
      if (m.event != UFFD_EVENT_PAGEFAULT) continue;
      uffdio_copy c{};
      c.dst = m.arg.pagefault.address & ~uint64_t{kPage - 1};
      c.src = reinterpret_cast<uint64_t>(src);
      c.len = kPage;
      for (;;) {
        if (::ioctl(uffd.get(), UFFDIO_COPY, &c) == 0) break;
        if (errno == EAGAIN) {  // the mm was changing: retry the whole copy
          c.copy = 0;
          continue;
        }
        if (errno == EEXIST) {  // already resolved: just wake the faulter
          uffdio_range wake{c.dst, kPage};
          if (::ioctl(uffd.get(), UFFDIO_WAKE, &wake) == 0) break;
        }
        return fail("UFFDIO_COPY");
      }
    }
  });
  std::vector<double> us;
  us.reserve(faults);
  bool wrong_data = false;
  for (size_t i = 0; i < faults && handler_errno.load() == 0; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const char v = *static_cast<volatile char*>(region.data() + i * kPage);
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    wrong_data |= v != kFill && handler_errno.load() == 0;
  }
  const uint64_t one = 1;
  const bool stopped = ::write(stop.get(), &one, sizeof one) == sizeof one;
  if (!stopped) {
    // Cannot tell the handler to stop; unregistering does not either, so
    // there is no clean way out of this process state.
    std::perror("local_uffd_fault_us: eventfd write");
    std::abort();
  }
  handler.join();
  if (const int e = handler_errno.load())
    throw std::system_error(e, std::generic_category(), "uffd handler: " + handler_what);
  if (wrong_data) throw std::runtime_error("uffd fault read data the handler did not copy");
  return percentiles(std::move(us));
}

}  // namespace aggvm::bench
