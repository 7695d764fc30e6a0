// How far a peer's clock is from ours, from probe round trips.
//
// A probe reads our clock (sent), the peer's clock while it answers, and ours
// again (received).  The peer read its clock somewhere inside our
// [sent, received], so the offset peer - ours lies in
// [peer - received, peer - sent].  Every probe gives such an interval; the
// true offset lies in all of them, so their intersection is the tightest
// bound (tighter than Cristian's best single round trip).  Within it we pick
// the value nearest zero: on hosts that share one clock (several nodes on one
// machine) that is exactly zero, and anywhere else it is as good as any other
// point of the interval.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace aggvm::dsm {

struct ClockProbe {
  int64_t sent;      // our clock before asking
  int64_t peer;      // the peer's clock as it answered
  int64_t received;  // our clock once the answer was in
};

struct ClockOffset {
  int64_t offset;   // peer clock minus ours
  int64_t error;    // |true offset - offset| <= error
  int64_t best_rtt;  // shortest round trip, in our clock's units
};

// Returns nothing when there is no probe or the intervals do not meet: the
// two clocks do not run at one rate (or one of them jumped) while probing.
std::optional<ClockOffset> estimate_clock_offset(std::span<const ClockProbe> probes);

}  // namespace aggvm::dsm
