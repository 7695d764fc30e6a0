#include "node/liveness.h"

#include <algorithm>

#include "error.h"

namespace aggvm::dsm {

PeerLiveness::PeerLiveness(NodeId self, uint16_t n_nodes, std::chrono::milliseconds timeout, Clock::time_point now)
    : self_(self),
      timeout_(timeout),
      interval_(std::max(std::chrono::milliseconds(1), timeout / kBeatsPerTimeout)),
      last_heard_(n_nodes, now),
      next_beat_(now) {
  if (timeout.count() <= 0) fail(EINVAL, "peer timeout of {} ms: it must be positive", timeout.count());
  if (self >= n_nodes) fail(EINVAL, "node {} is not in a cluster of {} nodes", self, n_nodes);
}

void PeerLiveness::heard(NodeId peer, Clock::time_point now) {
  if (peer < last_heard_.size()) last_heard_[peer] = std::max(last_heard_[peer], now);
}

bool PeerLiveness::beat_due(Clock::time_point now) {
  if (now < next_beat_) return false;
  next_beat_ = now + interval_;
  return true;
}

std::optional<NodeId> PeerLiveness::silent_peer(Clock::time_point now, const NodeSet& ignore) const {
  std::optional<NodeId> worst;
  for (NodeId n = 0; n < last_heard_.size(); ++n) {
    if (n == self_ || ignore.test(n) || now - last_heard_[n] <= timeout_) continue;
    if (!worst || last_heard_[n] < last_heard_[*worst]) worst = n;
  }
  return worst;
}

std::chrono::milliseconds PeerLiveness::silence(NodeId peer, Clock::time_point now) const {
  if (peer >= last_heard_.size()) return {};
  return std::chrono::duration_cast<std::chrono::milliseconds>(now - last_heard_[peer]);
}

}  // namespace aggvm::dsm
