// The physical floor of a remote fault, measured in the same run as the
// faults themselves: the local cost of one userfaultfd fault resolved with
// UFFDIO_COPY (no network, a handler thread in this process).
#pragma once

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

namespace aggvm::bench {

// Median microseconds for a thread to take a MISSING fault that another
// thread resolves with UFFDIO_COPY of a 4 KiB page.
inline double local_uffd_fault_p50_us(size_t faults) {
  const size_t page = 4096, len = faults * page;
  auto* region = static_cast<char*>(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (region == MAP_FAILED) throw std::runtime_error("mmap");
  const int uffd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC));
  if (uffd < 0) throw std::runtime_error("userfaultfd");
  uffdio_api api{.api = UFFD_API, .features = 0, .ioctls = 0};
  uffdio_register reg{};
  reg.range = {reinterpret_cast<uint64_t>(region), len};
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg)) throw std::runtime_error("uffd setup");
  std::atomic<bool> stop{false};
  std::thread handler([&] {
    alignas(4096) static thread_local char src[4096] = {1};
    while (!stop) {
      pollfd p{uffd, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      uffd_msg m;
      if (read(uffd, &m, sizeof m) != sizeof m || m.event != UFFD_EVENT_PAGEFAULT) continue;
      uffdio_copy c{};
      c.dst = m.arg.pagefault.address & ~uint64_t{4095};
      c.src = reinterpret_cast<uint64_t>(src);
      c.len = 4096;
      ioctl(uffd, UFFDIO_COPY, &c);
    }
  });
  std::vector<double> us;
  for (size_t i = 0; i < faults; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    volatile char v = region[i * page];
    (void)v;
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  stop = true;
  handler.join();
  close(uffd);
  munmap(region, len);
  std::nth_element(us.begin(), us.begin() + us.size() / 2, us.end());
  return us[us.size() / 2];
}

}  // namespace aggvm::bench
