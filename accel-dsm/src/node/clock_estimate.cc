#include "node/clock_estimate.h"

#include <algorithm>
#include <limits>

namespace aggvm::dsm {

std::optional<ClockOffset> estimate_clock_offset(std::span<const ClockProbe> probes) {
  if (probes.empty()) return std::nullopt;
  int64_t lo = std::numeric_limits<int64_t>::min();
  int64_t hi = std::numeric_limits<int64_t>::max();
  int64_t best_rtt = std::numeric_limits<int64_t>::max();
  for (const ClockProbe& p : probes) {
    if (p.received < p.sent) return std::nullopt;  // our own clock went back
    lo = std::max(lo, p.peer - p.received);
    hi = std::min(hi, p.peer - p.sent);
    best_rtt = std::min(best_rtt, p.received - p.sent);
  }
  if (lo > hi) return std::nullopt;
  const int64_t offset = std::clamp<int64_t>(0, lo, hi);
  return ClockOffset{offset, std::max(offset - lo, hi - offset), best_rtt};
}

}  // namespace aggvm::dsm
