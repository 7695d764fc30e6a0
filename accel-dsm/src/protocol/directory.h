// The home half of a node's engine: the directory entry (owner, sharers) of
// every page homed here, and one transaction at a time per page.
//
// Invariant: when a page has no owner and was ever written, the home holds
// a Shared copy in its own mapping, so data is never lost when sharers
// drop theirs.  Pages never written have no copy anywhere: they are zero.
//
// Migratory pages.  Much of a kernel's shared data moves from node to node
// by read-modify-write: a node reads the page (a fetch from its owner, who
// keeps a Shared copy), then writes it (an upgrade that invalidates that
// copy): two faults for each move.  A write upgrade that finds exactly one
// other copy, by a node that was not the page's last writer (a producer
// writing again for its readers is not migration), marks the page
// migratory; a read of a migratory page then
// takes it from its owner whole and grants it Exclusive (cache.h), so the
// write that follows is local: one fault for each move.  An owner fetched
// from that never wrote its Exclusive copy (FetchResp kFlagClean) shows the
// page is read, not migrated: the mark goes, and reads share it again.
#pragma once

#include <array>
#include <deque>
#include <memory>
#include <unordered_map>
#include <vector>

#include "protocol/cache.h"
#include "protocol/context.h"

namespace aggvm::dsm {

// 16 bytes (the set first: 24 with the owner first, for padding).
struct DirEntry {
  NodeSet sharers;         // nodes holding it Shared
  NodeId owner = kNoNode;  // node holding the page Modified or Exclusive
  bool touched = false;    // ever granted for writing: not known to be zero
  bool migratory = false;  // reads take it whole (above)
  NodeId last_writer = kNoNode;  // the node that wrote it last, as far as the home knows
};
static_assert(sizeof(DirEntry) <= 16);

class Directory {
 public:
  Directory(EngineContext& ctx, Cache& cache);

  // ReadReq, WriteReq, Evict, Writeback.
  void on_request(const Message& m);
  void on_inv_ack(const Message& m);
  void on_fetch_resp(const Message& m);
  void on_unblock(const Message& m);

  // The entry of a page homed here; an empty one for any other page.
  const DirEntry& entry(PageKey p) const;
  // Entries kept: one per page homed on this node (none for the others).
  uint64_t entries() const { return entry_count_; }
  bool busy(PageKey p) const { return txns_.count(p) != 0; }
  // In a range whose home is moving (hold()): its entry may not be final.
  bool held(PageKey p) const;
  size_t transactions() const { return txns_.size(); }
  void check_timeouts() const;

  // Re-homing (protocol/rehome.h).
  // Requests for pages of a held range wait in their queue, unstarted.
  void hold(const PageRange& r);
  // Lets them go: queued requests start.
  void release(const PageRange& r);
  bool active_in(const PageRange& r) const;
  // Empty entries for pages now homed here.
  void add_pages(const PageRange& r);
  // Forgets pages now homed elsewhere; their queued requests are answered
  // with Redirect, so that their senders ask the new home.
  void remove_pages(const PageRange& r);
  DirEntry& mutable_entry(PageKey p) { return entry(p); }

 private:
  using PageData = std::array<std::byte, kPageSize>;
  struct Request {
    MsgType type{};
    NodeId from = 0;
    std::unique_ptr<PageData> data;  // Writeback
  };
  struct Txn {
    Request req;
    uint32_t id = 0;
    bool active = false;
    NodeSet awaiting_acks;
    NodeId awaiting_fetch = kNoNode;
    bool awaiting_unblock = false;
    bool requester_has_copy = false;
    bool zero = false;
    bool exclusive_read = false;  // a ReadReq served with a migratory page's whole ownership
    std::unique_ptr<PageData> data;
    uint64_t deadline_ns = 0;
    std::deque<Request> queue;  // requests for this page waiting their turn
  };

  // Pages [first, first + entries.size()) of a region, homed here.
  struct Segment {
    uint64_t first = 0;
    std::vector<DirEntry> entries;
  };
  const DirEntry* find(PageKey p) const;
  DirEntry& entry(PageKey p);
  Txn& active_txn(const Message& m, const char* what);
  void start(PageKey page, Txn& t);
  void finish(PageKey page);
  void grant_read(PageKey page, Txn& t);
  void grant_write(PageKey page, Txn& t);

  EngineContext& ctx_;
  Cache& cache_;
  std::vector<std::vector<Segment>> segments_;  // per region, by first page
  uint64_t entry_count_ = 0;
  std::vector<PageKey> pages_with_txns(const PageRange& r) const;

  std::unordered_map<PageKey, Txn, PageKeyHash> txns_;  // pages with a transaction
  std::vector<PageRange> held_;  // at most a few: one per move in or out
  std::vector<PageRange> moved_away_;  // homed here once: late requests get Redirect
  uint32_t next_txn_ = 1;
};

}  // namespace aggvm::dsm
