// RAII userfaultfd: registration of guest memory for MISSING and
// write-protect faults, and the ioctls that resolve them.
//
// Mirrors what QEMU's postcopy (migration/postcopy-ram.c) and background
// snapshot (migration/ram.c) do with the same kernel mechanism.
#pragma once

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>
#include <span>

// UFFDIO_POISON (Linux 6.6) is newer than the headers of some distributions
// (Debian 12 has 6.1): the kernel ABI, defined here when they lack it.
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)  // after MOVE 0x05, WRITEPROTECT 0x06, CONTINUE 0x07
#endif
#ifndef UFFDIO_POISON
struct uffdio_poison {
  struct uffdio_range range;
#define UFFDIO_POISON_MODE_DONTWAKE ((__u64)1 << 0)
  __u64 mode;
  __s64 updated;  // pages' bytes poisoned, or a negative errno
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

namespace aggvm::dsm {

struct FaultEvent {
  uint64_t address;  // page-aligned host address
  bool write;        // a write access (MISSING or write-protect)
  bool wp;           // a write to a write-protected page
  int tid;
};

class Userfaultfd {
 public:
  // Opens a userfaultfd with thread ids and write-protect faults enabled,
  // and poisoning when the kernel offers it.  Throws DsmError when the
  // kernel lacks a feature that is needed.
  Userfaultfd();
  ~Userfaultfd();
  Userfaultfd(const Userfaultfd&) = delete;
  Userfaultfd& operator=(const Userfaultfd&) = delete;

  int fd() const { return fd_; }

  // Registers [host, host + len) for MISSING and write-protect faults.
  void register_range(void* host, size_t len);
  void unregister_range(void* host, size_t len);

  // Reads pending fault events (non-blocking); returns how many were read.
  size_t read_events(std::span<FaultEvent> out);

  // Maps a copy of src at dst; write-protected unless writable.  Wakes waiters.
  void copy(void* dst, const void* src, size_t len, bool writable);
  // Sets or clears write protection on [addr, addr + len); clearing wakes waiters.
  void write_protect(void* addr, size_t len, bool protect);
  void wake(void* addr, size_t len);

  // Whether poison() works: UFFD_FEATURE_POISON was granted.
  bool can_poison() const { return can_poison_; }
  // Marks the unmapped range [addr, addr + len) poisoned and wakes its
  // waiters: any access then raises SIGBUS (BUS_MCEERR_AR), and the kernel
  // reading it fails with EFAULT.  Mapped pages in it are left as they
  // are.  Returns the number of ioctls made.
  size_t poison(void* addr, size_t len);

 private:
  int fd_ = -1;
  bool can_poison_ = false;
};

}  // namespace aggvm::dsm
