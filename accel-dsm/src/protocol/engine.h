// A node's coherence engine: pure protocol logic, single-threaded, with no
// userfaultfd and no network of its own (both come through Env), so every
// transition and race can be driven by unit tests.
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include "protocol/cache.h"
#include "protocol/context.h"
#include "protocol/directory.h"
#include "protocol/rehome.h"

namespace aggvm::dsm {

struct EngineOptions {
  NodeId self = 0;
  uint16_t n_nodes = 1;
  uint64_t resident_cap_pages = 0;  // 0: no cap
  uint64_t timeout_ns = 5'000'000'000;
};

class Engine {
 public:
  Engine(const EngineOptions& opts, const PageSpace& space, Env& env);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // A thread faulted on page.  Throws DsmError when coherence is lost.
  void on_fault(PageKey page, Access access, int tid, uint64_t now_ns);
  // Asks for page as a fault of access would, with no thread waiting on it
  // (a fetch ahead of use): the grant maps it here and wakes no one.
  void fetch(PageKey page, Access access, uint64_t now_ns) { on_fault(page, access, kNoThread, now_ns); }
  // Asks for read-only snapshots of pages [first, first + count) of one
  // region that nobody writes meanwhile (protocol/peek.h).
  // Returns how many it asked for.
  // With copy_to, into a private buffer instead (Cache::peek).
  uint64_t peek(PageKey first, uint64_t count, uint64_t now_ns, std::byte* copy_to = nullptr,
                bool* copied = nullptr);
  // Gives up what a fetch (or a peek) brought of pages [first, first + count) of one
  // region and nothing here used since (Cache::release_fetched); returns
  // how many pages it gave up.
  uint64_t release(PageKey first, uint64_t count, uint64_t now_ns);
  // A validated coherence message from a peer.  Invalid ones are reported
  // through Env::rejected; throws DsmError when coherence is lost.
  void on_message(const Message& m, uint64_t now_ns);
  // Throws DsmError(ETIMEDOUT) if a peer missed its deadline.
  void check_timeouts(uint64_t now_ns);
  // Starts moving the home of pages r, all homed here, to node `to`
  // (protocol/rehome.h); moving_home() is true until it is done.
  void rehome(const PageRange& r, NodeId to, uint64_t now_ns);
  // Throws the DsmError rehome() would refuse the move with (EINVAL,
  // EBUSY), changing nothing.
  void check_rehome(const PageRange& r, NodeId to) const { rehomer_.check(r, to); }
  bool moving_home() const { return rehomer_.moving_out(); }
  uint64_t home_moves_done() const { return rehomer_.moves_done(); }
  // Evacuation: drops this node's copies of pages homed elsewhere (Shared
  // ones dropped, Modified ones written back), with at most max_in_flight
  // evictions in flight.  Returns the copies and evictions still left.
  uint64_t shed_copies(size_t max_in_flight, uint64_t now_ns);
  // Which node this node asks for page p.
  NodeId home(PageKey p) const { return ctx_.home(p); }
  const HomeMap& homes() const { return ctx_.homes; }
  // A joining node takes the homes node 0 knows, before it serves anything.
  void adopt_homes(HomeMap homes) { ctx_.homes = std::move(homes); }
  // The nodes not in the cluster now (EngineContext::gone).
  void set_gone(NodeSet gone) { ctx_.gone = gone; }

  const Cache& cache() const { return cache_; }
  const Directory& directory() const { return directory_; }
  const EngineCounters& counters() const { return ctx_.counters; }
  // Nothing in flight, here or queued to this node itself.
  bool idle() const {
    return cache_.requests_in_flight() == 0 && directory_.transactions() == 0 && local_.empty() &&
           rehomer_.idle();
  }

 private:
  struct LocalMessage {
    Message msg;
    std::vector<std::byte> payload;
  };
  void send(const Message& m);
  void dispatch(const Message& m);
  void drain_local();

  EngineContext ctx_;
  Cache cache_;
  Directory directory_;
  Rehomer rehomer_;
  std::deque<LocalMessage> local_;  // messages this node sent itself
};

}  // namespace aggvm::dsm
