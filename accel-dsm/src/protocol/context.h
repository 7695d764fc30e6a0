// State shared by the requester (Cache) and home (Directory) halves of a
// node's engine.
#pragma once

#include <deque>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "error.h"
#include "protocol/env.h"
#include "protocol/page_space.h"

namespace aggvm::dsm {

// A failure one peer is to blame for (it timed out, broke the protocol or
// was lost): the node reports that peer's id with the failure.
class PeerError : public DsmError {
 public:
  PeerError(int err, NodeId node, const std::string& what) : DsmError(err, what), node_(node) {}
  NodeId node() const noexcept { return node_; }

 private:
  NodeId node_;
};

// Throws PeerError(err, node, "<formatted message>").
template <typename... Args>
[[noreturn]] void fail_peer(NodeId node, int err, fmt::format_string<Args...> format, Args&&... args) {
  throw PeerError(err, node, fmt::format(format, std::forward<Args>(args)...));
}

// A message rejected as invalid in the current state; the sender is logged
// and the node goes on.
class Rejected : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct EngineCounters {
  uint64_t evictions = 0;
  uint64_t writebacks = 0;
  uint64_t invalidations_received = 0;
  uint64_t spurious_faults = 0;
  uint64_t exclusive_grants = 0;   // reads of migratory pages granted Exclusive (home side)
  uint64_t silent_upgrades = 0;    // writes to Exclusive pages, upgraded here without a message
  uint64_t rejected = 0;
  uint64_t redirects = 0;          // requests asked again of a page's new home
  uint64_t rehomed_out_pages = 0;  // pages whose home moved from this node
  uint64_t rehomed_in_pages = 0;   // pages whose home moved to this node
  uint64_t snapshots = 0;          // pages a peek mapped here (protocol/peek.h)
  uint64_t peeks_refused = 0;      // pages a peek then asked for as usual
  uint64_t copied = 0;             // pages a peek copied into a caller's buffer
  uint64_t peeks_answered = 0;     // pages this node answered a peek with (data or zero)
};

struct EngineContext {
  NodeId self = 0;
  uint16_t n_nodes = 1;
  const PageSpace* space = nullptr;
  // This node's view of the homes: the space's at start, changed by
  // re-homing (protocol/rehome.h).
  HomeMap homes{{}, 1};
  // Nodes not in the cluster now: not joined yet, or left.  They hold
  // nothing and are told nothing.
  NodeSet gone;
  Env* env = nullptr;
  uint64_t timeout_ns = 0;
  uint64_t now_ns = 0;  // time of the event being handled
  EngineCounters counters;
  // Sends a message; to this node itself it is queued and handled after the
  // current event, like one from the network.
  std::function<void(const Message&)> send;

  NodeId home(PageKey p) const { return homes.home_of(space->gpa(p)); }
  // Sends this node's message of type about page to node `to`.
  void send_to(MsgType type, NodeId to, PageKey page, uint32_t txn, uint16_t flags = 0,
               std::span<const std::byte> payload = {}) const {
    send(Message{.type = type, .flags = flags, .src = self, .dst = to, .txn = txn, .page = page,
                 .payload = payload});
  }
};

}  // namespace aggvm::dsm
