// Comparing this host's clocks with a peer's: the TSC and CLOCK_MONOTONIC.
//
// An aggregated guest needs one TSC and one virtual clock on every node.
// Each node answers clock probes itself, on the service thread, so the
// answer does not wait for the caller's threads; the prober turns a few
// round trips into an offset with a bound (clock_estimate.h).
#pragma once

#include <chrono>
#include <cstdint>

#include "node/calls.h"
#include "node/clock_estimate.h"

namespace aggvm::dsm {

struct HostClocks {
  int64_t tsc;           // the host's time-stamp counter
  int64_t monotonic_ns;  // CLOCK_MONOTONIC, what QEMU's clocks count from
};

// Reads both clocks, the TSC in program order (not before earlier loads).
HostClocks read_host_clocks();

struct PeerClocks {
  ClockOffset tsc;        // in TSC ticks
  ClockOffset monotonic;  // in nanoseconds
  unsigned probes;
};

class ClockService final {
 public:
  static constexpr uint16_t kProbeChannel = 0xff10;

  // Answers the peers' probes from now on; call before the node starts.
  explicit ClockService(Calls& calls);
  ClockService(const ClockService&) = delete;
  ClockService& operator=(const ClockService&) = delete;

  // Probes `peer` `probes` times, each within timeout.  Throws DsmError:
  // the call's errors, or ERANGE when the peer's clocks do not keep pace
  // with ours while probing.
  PeerClocks measure(NodeId peer, unsigned probes, std::chrono::milliseconds timeout);

 private:
  Calls& calls_;
};

}  // namespace aggvm::dsm
