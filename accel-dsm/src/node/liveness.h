// Which peers have gone silent.
//
// A peer that is frozen (SIGSTOP, a hung host, a cut link that leaves TCP
// up) keeps its socket: nothing fails until a message to it goes
// unanswered, and an idle guest may send none for hours.  Every node
// therefore sends each peer a heartbeat several times per timeout, and a
// peer from which nothing at all arrived for a whole timeout has failed.
// Pure: the caller passes the time, so tests need no clock.
#pragma once

#include <chrono>
#include <optional>
#include <vector>

#include "protocol/types.h"

namespace aggvm::dsm {

class PeerLiveness {
 public:
  using Clock = std::chrono::steady_clock;

  // Heartbeats go out every timeout / kBeatsPerTimeout.
  static constexpr int kBeatsPerTimeout = 4;

  PeerLiveness(NodeId self, uint16_t n_nodes, std::chrono::milliseconds timeout, Clock::time_point now);

  // Something (any frame) came from peer.
  void heard(NodeId peer, Clock::time_point now);
  // Whether heartbeats are due; if so, the next ones are due an interval on.
  bool beat_due(Clock::time_point now);
  // The peer heard from longest ago, if it was silent for more than the
  // timeout; peers in `ignore` (those leaving) are never blamed.
  std::optional<NodeId> silent_peer(Clock::time_point now, const NodeSet& ignore) const;
  // How long peer has been silent.
  std::chrono::milliseconds silence(NodeId peer, Clock::time_point now) const;

  std::chrono::milliseconds interval() const { return interval_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  NodeId self_;
  std::chrono::milliseconds timeout_;
  std::chrono::milliseconds interval_;
  std::vector<Clock::time_point> last_heard_;
  Clock::time_point next_beat_;
};

}  // namespace aggvm::dsm
