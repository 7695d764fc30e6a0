#include "node/clock.h"

#include <x86intrin.h>

#include <cstring>
#include <ctime>
#include <vector>

#include "error.h"

namespace aggvm::dsm {

HostClocks read_host_clocks() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  _mm_lfence();  // rdtsc may otherwise run ahead of what came before
  const int64_t tsc = static_cast<int64_t>(__rdtsc());
  return {tsc, ts.tv_sec * 1'000'000'000LL + ts.tv_nsec};
}

ClockService::ClockService(Calls& calls) : calls_(calls) {
  calls_.handle_reserved(kProbeChannel, [this](NodeId from, uint64_t id, std::span<const std::byte>) {
    const HostClocks now = read_host_clocks();
    calls_.reply(from, id, 0, std::as_bytes(std::span(&now, 1)));
  });
}

PeerClocks ClockService::measure(NodeId peer, unsigned probes, std::chrono::milliseconds timeout) {
  if (probes == 0) fail(EINVAL, "no clock probe asked of node {}", peer);
  std::vector<ClockProbe> tsc, mono;
  tsc.reserve(probes);
  mono.reserve(probes);
  for (unsigned i = 0; i < probes; ++i) {
    HostClocks theirs;
    const HostClocks sent = read_host_clocks();
    const size_t n = calls_.call(peer, kProbeChannel, {}, std::as_writable_bytes(std::span(&theirs, 1)), timeout);
    const HostClocks received = read_host_clocks();
    if (n != sizeof theirs) fail(EPROTO, "node {} answered a clock probe with {} bytes", peer, n);
    tsc.push_back({sent.tsc, theirs.tsc, received.tsc});
    mono.push_back({sent.monotonic_ns, theirs.monotonic_ns, received.monotonic_ns});
  }
  const auto tsc_offset = estimate_clock_offset(tsc);
  const auto mono_offset = estimate_clock_offset(mono);
  if (!tsc_offset) fail(ERANGE, "the TSC of node {} does not keep pace with this node's", peer);
  if (!mono_offset) fail(ERANGE, "the monotonic clock of node {} does not keep pace with this node's", peer);
  return {*tsc_offset, *mono_offset, probes};
}

}  // namespace aggvm::dsm
