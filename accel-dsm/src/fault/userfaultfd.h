// RAII userfaultfd: registration of guest memory for MISSING and
// write-protect faults, and the ioctls that resolve them.
//
// Mirrors what QEMU's postcopy (migration/postcopy-ram.c) and background
// snapshot (migration/ram.c) do with the same kernel mechanism.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace aggvm::dsm {

struct FaultEvent {
  uint64_t address;  // page-aligned host address
  bool write;        // a write access (MISSING or write-protect)
  bool wp;           // a write to a write-protected page
  int tid;
};

class Userfaultfd {
 public:
  // Opens a userfaultfd with thread ids and write-protect faults enabled.
  // Throws DsmError when the kernel lacks a feature.
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

 private:
  int fd_ = -1;
};

}  // namespace aggvm::dsm
