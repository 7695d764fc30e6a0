// The requester half of a node's engine: this node's copy of every page,
// the faults waiting on them, and eviction under the resident cap.
//
// A node has at most one request in flight per page (read, write, evict or
// writeback); faults arriving meanwhile join the waiters of that request.
#pragma once

#include <array>
#include <limits>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "protocol/context.h"

namespace aggvm::dsm {

// The pages eviction may pick, oldest first: one entry per page, O(1) to
// add, remove and take, memory O(pages listed).  Slots are pooled and
// linked by index; a hash index finds a page's slot.
class VictimList {
 public:
  void push_back(PageKey p);
  // Forgets p; nothing happens when it is not listed.
  void remove(PageKey p);
  bool contains(PageKey p) const { return index_.count(p.raw()) != 0; }
  size_t size() const { return index_.size(); }
  // The oldest of the first `limit` pages for which pred holds.
  template <typename Pred>
  std::optional<PageKey> find(Pred pred, size_t limit = std::numeric_limits<size_t>::max()) const {
    for (size_t s = head_; s != kNil && limit > 0; s = slots_[s].next, --limit)
      if (pred(PageKey::from_raw(slots_[s].key))) return PageKey::from_raw(slots_[s].key);
    return std::nullopt;
  }

 private:
  static constexpr size_t kNil = std::numeric_limits<size_t>::max();
  struct Slot {
    uint64_t key = 0;
    size_t prev = kNil;
    size_t next = kNil;
  };
  std::vector<Slot> slots_;
  std::vector<size_t> free_;
  std::unordered_map<uint64_t, size_t> index_;
  size_t head_ = kNil;
  size_t tail_ = kNil;
};

class Cache {
 public:
  enum class Pending : uint8_t { kNone, kRead, kWrite, kEvict, kWriteback, kPeek };

  Cache(EngineContext& ctx, uint64_t cap_pages);

  void on_fault(PageKey page, Access access, int tid);
  void on_grant(const Message& m);
  void on_invalidate(const Message& m);
  void on_fetch(const Message& m);
  void on_eviction_ack(const Message& m);  // EvictAck or WritebackAck
  // The node asked is no longer the page's home: ask the home again.
  void on_redirect(const Message& m);

  // Snapshot reads (protocol/peek.h).  Asks for a read-only snapshot of
  // each page of [first, first + count) of one region that this node
  // neither holds nor has asked for, a run of pages per message to each
  // page's home.  The caller promises that no node writes them until the
  // snapshots are dropped (release_fetched()): the homes change no state
  // for them.  A snapshot is not a copy the directory knows of; a write
  // here drops it and asks for the page as usual.  A page the answer
  // refuses is asked for as a fetch ahead of use would (Engine::fetch).
  // Returns how many pages it asked for.
  //
  // With copy_to, the answers go into a private buffer instead: page
  // first + i's data into copy_to + i pages (zeros for a page never
  // written), copied[i] set once it is there, and nothing is mapped or
  // kept here, so the promise is not needed: each page is as its home or
  // owner held it when it answered.  A refused page is fetched as usual
  // (copied[i] stays false: read it from the mapping); a page not asked
  // for (held here, or asked for already) is left to the caller alike.
  uint64_t peek(PageKey first, uint64_t count, std::byte* copy_to = nullptr, bool* copied = nullptr);
  void on_peek_resp(const Message& m);
  bool snapshot(PageKey page) const { return entry(page).snapshot; }
  uint64_t snapshot_pages() const { return snapshots_; }

  // Re-homing (protocol/rehome.h).  This node is home of page from now on:
  // a copy it holds is the home's copy, which eviction must never drop.
  void became_home(PageKey page);
  // The old home hands its copies of the pages of r over: copies[i] holds
  // page r.first + i's data where held[i]; the pages are unmapped in one go
  // (Env::drop_range) before this returns, so before anything about them
  // is sent.
  using PageCopy = std::array<std::byte, kPageSize>;
  void give_up_home_copies(const PageRange& r, std::vector<PageCopy>& copies, std::vector<bool>& held);

  // The home keeps its copy of a page in this node's mapping.
  void install_home_copy(PageKey page, PageView data);
  void read_page(PageKey page, PageBuffer out);

  PageState state(PageKey page) const { return entry(page).state; }
  Pending pending(PageKey page) const { return entry(page).pending; }
  // The content of a page this node is writing back (unmapped, its last
  // Modified copy held until the home acks), or nullptr.
  const std::byte* writeback_copy(PageKey page) const {
    auto it = ops_.find(page);
    return it != ops_.end() && it->second.writeback ? it->second.writeback->data() : nullptr;
  }
  // Pages eviction may pick: exactly the resident pages homed elsewhere.
  size_t victims() const { return victims_.size(); }
  // Evicts one of them (a Shared copy first, else the oldest); false when
  // none can go now (each has a request in flight).
  bool evict_one();
  // Gives up, as eviction does, each of pages [first, first + count) of one
  // region that is homed elsewhere, that a fetch ahead of use mapped here,
  // and that no thread of this node faulted on since; returns their number.
  // A Shared copy is dropped and the home told; an owned one (fetched for
  // writing, and written since or not) goes home with its data.  For a
  // reader or writer that went through a range once (the migration stream,
  // saving or restoring): what it fetched does not stay here.  Snapshots
  // (peek()) in the range are dropped here, no one told.
  uint64_t release_fetched(PageKey first, uint64_t count);
  // Bytes of per-page state kept for every page of the guest.
  static constexpr size_t kBytesPerPage = 1;
  uint64_t resident_pages() const { return resident_; }
  uint64_t resident_peak_pages() const { return resident_peak_; }
  size_t requests_in_flight() const { return ops_.size(); }
  // Throws DsmError(ETIMEDOUT) naming the first request past its deadline.
  void check_timeouts() const;

 private:
  // One byte a page: this node's copy of every page of a multi-TB guest.
  struct Entry {
    PageState state : 2 = PageState::kInvalid;
    Pending pending : 3 = Pending::kNone;
    // Mapped for a fetch ahead of use alone (Engine::fetch): release_fetched() may give it up.
    bool fetched : 1 = false;
    // Mapped read-only by peek(), unknown to the page's home (state kInvalid).
    bool snapshot : 1 = false;
  };
  static_assert(sizeof(Entry) == kBytesPerPage);
  struct Op {
    std::vector<Waiter> waiters;
    uint64_t deadline_ns = 0;
    bool counts_install = false;  // the request will map the page: counted against the cap
    // The node the request went to: an EvictAck, WritebackAck or Redirect
    // comes from it, even when the page's home has moved meanwhile.
    NodeId asked = kNoNode;
    std::unique_ptr<std::array<std::byte, kPageSize>> writeback;  // data kept until acked
    // A peek into a private buffer (peek()'s copy_to): where the answer
    // goes, and the flag that says it went.
    std::byte* copy_to = nullptr;
    bool* copied = nullptr;
  };

  Entry& entry(PageKey p) { return entries_[p.region()][p.index()]; }
  const Entry& entry(PageKey p) const { return entries_[p.region()][p.index()]; }
  NodeId home(PageKey p) const { return ctx_.home(p); }
  void expect_from_home(const Message& m) const;

  void request(PageKey page, Entry& e, Op& op, Access access);
  void mapped(PageKey page, Entry& e, PageState state);  // Invalid -> state
  void unmapped(PageKey page, Entry& e);                 // -> Invalid
  void forget(PageKey page, Entry& e);                   // unmapped, the page already dropped
  void lose_copy(PageKey page, Entry& e);                // unmapped, an upgrade in flight now installs
  void upgrade_installs(PageKey page, Entry& e);         // lose_copy()'s part after unmapped()
  void request_for_waiters(PageKey page, Entry& e);
  void make_room();
  void send_peek(PageKey first, uint64_t count, NodeId to);
  void snapshot_answered(PageKey page, uint16_t answer, NodeId from);
  void drop_snapshots(PageKey first, uint64_t count);  // each of them a snapshot
  void copy_answered(PageKey page, Entry& e, Op& op, uint16_t answer);

  void evict(PageKey page, Entry& e);
  void send_evict(PageKey page, Entry& e);  // a Shared copy, unmapped already
  // An owned copy's data into its write-back buffer; no thread may write
  // the page now (write-protected).
  Op& copy_out(PageKey page);
  // An owned copy, unmapped already, its data in op.writeback.
  void send_writeback(PageKey page, Entry& e, Op& op);

  EngineContext& ctx_;
  uint64_t cap_pages_;  // 0: no cap
  std::vector<std::vector<Entry>> entries_;
  std::unordered_map<PageKey, Op, PageKeyHash> ops_;
  VictimList victims_;  // mapped pages homed elsewhere, oldest first
  uint64_t resident_ = 0;
  uint64_t resident_peak_ = 0;
  uint64_t installs_in_flight_ = 0;
  uint64_t snapshots_ = 0;  // pages with Entry::snapshot
};

}  // namespace aggvm::dsm
