// Moving the home of a range of pages to another node while every node
// goes on faulting on them (issue 10: evacuation, joins, and the scheduler
// moving memory toward the vCPUs that use it).
//
// The old home H drives the move of range R to the new home N:
//
//   1. H holds R: requests for its pages queue, unstarted, and H waits
//      until no transaction on R is active.
//   2. HomePrepare -> N.  N takes R into its home map, makes empty
//      directory entries held the same way (requests that reach N early
//      wait there), and answers HomePrepareAck.
//   3. HomeChange -> every other node, which takes R into its map and
//      answers HomeChangeAck.  From now on every node asks N, and N only
//      hears from nodes that know it is home.
//   4. H takes R into its map, hands N each entry (owner, sharers,
//      touched) with H's own copy if it holds one (dropping it), answers
//      the requests it held with Redirect (their senders ask N), and
//      sends HomeDone with the number of entries.
//   5. N, once it has them all, serves R and answers HomeDoneAck.
//
// No message order is assumed between any two nodes: each step starts
// only after the answers that make it safe, so a node never hears from N
// about R before it knows N is home, and requests that cross the move are
// redirected or held, never lost.  Sequential consistency is the
// directory's own: one transaction per page, and none runs on R while
// its entries are in flight.
#pragma once

#include <optional>
#include <vector>

#include "protocol/cache.h"
#include "protocol/context.h"
#include "protocol/directory.h"

namespace aggvm::dsm {

class Rehomer {
 public:
  Rehomer(EngineContext& ctx, Cache& cache, Directory& directory);

  // This node, home of every page of r, starts moving them to node `to`.
  // Throws DsmError: EINVAL (bad range or node, a page homed elsewhere),
  // EBUSY (a move out of this node is in progress).
  void start(const PageRange& r, NodeId to);
  // What start() would refuse, changing nothing.
  void check(const PageRange& r, NodeId to) const;
  // A move out of this node is in progress.
  bool moving_out() const { return out_.has_value(); }
  // Moves out of this node completed so far.
  uint64_t moves_done() const { return moves_done_; }
  // Nothing in progress, out or in.
  bool idle() const { return !out_ && in_.empty(); }

  void on_message(const Message& m);
  // Goes on with the move out once what it waits for has happened.
  void progress();
  void check_timeouts() const;

 private:
  enum class Phase { kDraining, kPreparing, kChanging, kTransferring };
  struct Out {
    PageRange range;
    NodeId to = 0;
    uint32_t id = 0;
    Phase phase = Phase::kDraining;
    NodeSet awaiting;  // nodes whose answer the phase waits for
    uint64_t deadline_ns = 0;
  };
  struct In {
    PageRange range;
    NodeId from = 0;
    uint32_t id = 0;
    uint64_t received = 0;
    std::optional<uint64_t> expected;
    uint64_t deadline_ns = 0;
  };

  void on_prepare(const Message& m);
  void on_change(const Message& m);
  void on_ack(const Message& m, Phase phase);
  void on_entry(const Message& m);
  void on_done(const Message& m);
  void transfer();
  void finish_in(std::vector<In>::iterator it);

  // The range a HomePrepare or HomeChange names, checked against this
  // node's map: every page homed on `from`.  Throws Rejected.
  PageRange range_of(const Message& m, const HomeRangeWire& w) const;
  bool homed_on(const PageRange& r, NodeId node) const;
  void assign(const PageRange& r, NodeId node);
  In& incoming(const Message& m);

  EngineContext& ctx_;
  Cache& cache_;
  Directory& directory_;
  std::optional<Out> out_;
  std::vector<In> in_;  // moves into this node, at most one per old home
  uint32_t next_id_ = 1;
  uint64_t moves_done_ = 0;
};

}  // namespace aggvm::dsm
