// What the protocol engine asks of the node it runs on.  The real node
// implements it with userfaultfd and the fabric; unit tests with a model.
#pragma once

#include <span>
#include <string_view>

#include "protocol/message.h"
#include "protocol/types.h"

namespace aggvm::dsm {

using PageView = std::span<const std::byte, kPageSize>;
using PageBuffer = std::span<std::byte, kPageSize>;

// The waiter of a page asked for with no thread blocked on it (a fetch
// ahead of use: Engine::fetch).
inline constexpr int kNoThread = -1;

// A thread blocked on a page, as the fault reader saw it.
struct Waiter {
  int tid = 0;
  uint64_t start_ns = 0;
  Access access = Access::kRead;
};

class Env {
 public:
  virtual ~Env() = default;

  // Sends to another node; the payload is copied before return.
  virtual void send(const Message& m) = 0;

  // Maps a page that was Invalid (zeroes when data is empty) and wakes its
  // waiters; writable=false maps it write-protected.
  virtual void install(PageKey page, std::span<const std::byte> data, bool writable) = 0;
  // Shared -> Modified: lifts write protection and wakes waiters.
  virtual void set_writable(PageKey page) = 0;
  // Modified -> Shared: no thread can write the page after it returns.
  virtual void write_protect(PageKey page) = 0;
  // As write_protect() on count pages from first on (one region), in one
  // go where the node can.
  virtual void write_protect_range(PageKey first, uint64_t count) {
    for (uint64_t i = 0; i < count; ++i) write_protect(PageKey(first.region(), first.index() + i));
  }
  // As install() on count pages from first on (one region), read-only,
  // from count pages of data in a row, in one go where the node can.
  virtual void install_range(PageKey first, uint64_t count, std::span<const std::byte> data) {
    for (uint64_t i = 0; i < count; ++i)
      install(PageKey(first.region(), first.index() + i), data.subspan(i * kPageSize, kPageSize), false);
  }
  // Copies a mapped page out.
  virtual void read(PageKey page, PageBuffer out) = 0;
  // Unmaps a page: the next access faults.
  virtual void drop(PageKey page) = 0;
  // Unmaps count pages from first on (one region): as drop() on each, in
  // one go where the node can (one system call for a whole range).
  virtual void drop_range(PageKey first, uint64_t count) {
    for (uint64_t i = 0; i < count; ++i) drop(PageKey(first.region(), first.index() + i));
  }
  // Unmaps count pages from first on whose copy this node gives up while
  // no one changed them (Cache::release_fetched): as drop_range(), but the
  // node's user need not treat the pages as changed.
  virtual void release_range(PageKey first, uint64_t count) { drop_range(first, count); }
  // Wakes threads waiting on a page already mapped.
  virtual void wake(PageKey page) = 0;

  // A waiting thread's fault was resolved.
  virtual void resolved(PageKey page, const Waiter& w, NodeId home, uint64_t now_ns) = 0;
  // A message was rejected; the node goes on serving.
  virtual void rejected(NodeId from, std::string_view why) = 0;
};

}  // namespace aggvm::dsm
