#include "fault/userfaultfd.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "aggvm/dsm.h"
#include "error.h"

namespace aggvm::dsm {

namespace {

constexpr uint64_t kFeatures = UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_PAGEFAULT_FLAG_WP;

int open_userfaultfd() {
  // Not UFFD_USER_MODE_ONLY: KVM resolves guest accesses in the kernel.
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd >= 0) return fd;
  if (errno != EPERM) fail_errno("userfaultfd");
  // Unprivileged userfaultfd is off: /dev/userfaultfd grants it to its group.
  const int dev = ::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev < 0) fail_errno("userfaultfd: syscall refused (vm.unprivileged_userfaultfd=0) and /dev/userfaultfd");
  fd = ::ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
  const int saved = errno;
  ::close(dev);
  errno = saved;
  if (fd < 0) fail_errno("USERFAULTFD_IOC_NEW");
  return fd;
}

// The features this kernel offers: UFFDIO_API on a throw-away descriptor
// (a descriptor takes one UFFDIO_API only, and asking for an unknown
// feature fails it).
uint64_t offered_features() {
  const int fd = open_userfaultfd();
  uffdio_api api{};
  api.api = UFFD_API;
  const bool ok = ::ioctl(fd, UFFDIO_API, &api) == 0;
  ::close(fd);
  return ok ? api.features : 0;
}

}  // namespace

Userfaultfd::Userfaultfd() : fd_(open_userfaultfd()) {
  const uint64_t poison = offered_features() & UFFD_FEATURE_POISON;
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = kFeatures | poison;
  if (::ioctl(fd_, UFFDIO_API, &api) != 0) {
    const int saved = errno;
    ::close(fd_);
    errno = saved;
    fail_errno("UFFDIO_API (thread ids and write-protect faults need Linux 5.7+)");
  }
  if ((api.ioctls & (uint64_t{1} << _UFFDIO_REGISTER)) == 0) {
    ::close(fd_);
    fail(ENOSYS, "userfaultfd cannot register ranges");
  }
  can_poison_ = poison != 0 && (api.features & UFFD_FEATURE_POISON) != 0;
}

Userfaultfd::~Userfaultfd() {
  if (fd_ >= 0) ::close(fd_);
}

void Userfaultfd::register_range(void* host, size_t len) {
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(host);
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(fd_, UFFDIO_REGISTER, &reg) != 0)
    fail_errno(fmt::format("UFFDIO_REGISTER of {} bytes at {} (anonymous private memory needed)",
                           len, host));
  const uint64_t need = (uint64_t{1} << _UFFDIO_COPY) | (uint64_t{1} << _UFFDIO_WRITEPROTECT) |
                        (uint64_t{1} << _UFFDIO_WAKE);
  if ((reg.ioctls & need) != need) fail(ENOTSUP, "userfaultfd range lacks copy/write-protect ioctls");
  if ((reg.ioctls & (uint64_t{1} << _UFFDIO_POISON)) == 0) can_poison_ = false;
}

void Userfaultfd::unregister_range(void* host, size_t len) {
  uffdio_range range{reinterpret_cast<uint64_t>(host), len};
  if (::ioctl(fd_, UFFDIO_UNREGISTER, &range) != 0) fail_errno("UFFDIO_UNREGISTER");
}

size_t Userfaultfd::read_events(std::span<FaultEvent> out) {
  uffd_msg msgs[64];
  const size_t want = std::min(out.size(), std::size(msgs));
  const ssize_t n = ::read(fd_, msgs, want * sizeof(uffd_msg));
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return 0;
    fail_errno("read(userfaultfd)");
  }
  size_t count = 0;
  for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
    const uffd_msg& m = msgs[i];
    if (m.event != UFFD_EVENT_PAGEFAULT) continue;
    const uint64_t flags = m.arg.pagefault.flags;
    out[count++] = FaultEvent{
        .address = m.arg.pagefault.address & ~uint64_t{AGGVM_DSM_PAGE_SIZE - 1},
        .write = (flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0,
        .wp = (flags & UFFD_PAGEFAULT_FLAG_WP) != 0,
        .tid = static_cast<int>(m.arg.pagefault.feat.ptid),
    };
  }
  return count;
}

void Userfaultfd::copy(void* dst, const void* src, size_t len, bool writable) {
  uffdio_copy c{};
  c.dst = reinterpret_cast<uint64_t>(dst);
  c.src = reinterpret_cast<uint64_t>(src);
  c.len = len;
  c.mode = writable ? 0 : UFFDIO_COPY_MODE_WP;
  while (::ioctl(fd_, UFFDIO_COPY, &c) != 0) {
    if (errno == EAGAIN) {  // the mm changed under us: retry the rest
      c.dst += c.copy > 0 ? c.copy : 0;
      c.src += c.copy > 0 ? c.copy : 0;
      c.len -= c.copy > 0 ? c.copy : 0;
      c.copy = 0;
      continue;
    }
    fail_errno(fmt::format("UFFDIO_COPY to {}", dst));
  }
}

void Userfaultfd::write_protect(void* addr, size_t len, bool protect) {
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<uint64_t>(addr);
  wp.range.len = len;
  wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  if (::ioctl(fd_, UFFDIO_WRITEPROTECT, &wp) != 0)
    fail_errno(fmt::format("UFFDIO_WRITEPROTECT {} at {}", protect ? "set" : "clear", addr));
}

size_t Userfaultfd::poison(void* addr, size_t len) {
  if (!can_poison_) fail(ENOTSUP, "this kernel cannot poison userfaultfd ranges (UFFDIO_POISON needs Linux 6.6+)");
  uffdio_poison p{};
  p.range.start = reinterpret_cast<uint64_t>(addr);
  p.range.len = len;
  size_t ioctls = 1;
  while (::ioctl(fd_, UFFDIO_POISON, &p) != 0) {
    if (errno != EAGAIN && errno != EEXIST)
      fail_errno(fmt::format("UFFDIO_POISON of {} bytes at {:#x}", p.range.len, p.range.start));
    // EAGAIN: the mm changed under us; EEXIST: a page is mapped after all
    // (it keeps its content).  Either way poison the rest.
    uint64_t done = p.updated > 0 ? static_cast<uint64_t>(p.updated) : 0;
    if (errno == EEXIST) done += AGGVM_DSM_PAGE_SIZE;
    if (done >= p.range.len) break;
    p.range.start += done;
    p.range.len -= done;
    p.updated = 0;
    ++ioctls;
  }
  return ioctls;
}

void Userfaultfd::wake(void* addr, size_t len) {
  uffdio_range range{reinterpret_cast<uint64_t>(addr), len};
  if (::ioctl(fd_, UFFDIO_WAKE, &range) != 0) fail_errno("UFFDIO_WAKE");
}

}  // namespace aggvm::dsm
