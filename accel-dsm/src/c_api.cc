// The C API of libaggvm-dsm (include/aggvm/dsm.h) over aggvm::dsm::Node.
#include <algorithm>
#include <cstring>
#include <new>
#include <span>

#include "aggvm/dsm.h"
#include "c_api_guard.h"
#include "node/calls.h"
#include "node/clock.h"
#include "node/node.h"

using aggvm::dsm::DsmError;
using aggvm::dsm::Calls;
using aggvm::dsm::ClockService;
using aggvm::dsm::Node;

struct AggvmDsm {
  std::unique_ptr<Node> node;
  std::unique_ptr<Calls> calls;
  std::unique_ptr<ClockService> clocks;
  uint32_t timeout_ms;
};

using aggvm::dsm::guarded;
using aggvm::dsm::set_error;

extern "C" {

AggvmDsm* aggvm_dsm_new(const AggvmDsmOptions* opts, char** errmsg) {
  if (!opts) {
    set_error(errmsg, "no options");
    return nullptr;
  }
  AggvmDsm* dsm = nullptr;
  guarded(errmsg, [&] {
    aggvm::dsm::NodeConfig cfg;
    cfg.self = opts->self;
    cfg.n_nodes = opts->n_nodes;
    if (opts->n_nodes > AGGVM_DSM_MAX_NODES)
      aggvm::dsm::fail(EINVAL, "cluster of {} nodes: at most {} are supported", opts->n_nodes,
                       AGGVM_DSM_MAX_NODES);
    if (!opts->addresses) aggvm::dsm::fail(EINVAL, "no node addresses given");
    for (uint16_t i = 0; i < opts->n_nodes; ++i) {
      if (!opts->addresses[i]) aggvm::dsm::fail(EINVAL, "no address for node {}", i);
      cfg.addresses.emplace_back(opts->addresses[i]);
    }
    if (!opts->secret) aggvm::dsm::fail(EINVAL, "no cluster secret given");
    cfg.secret.assign(opts->secret, opts->secret + opts->secret_len);
    cfg.cluster_name = opts->cluster_name ? opts->cluster_name : "";
    for (size_t i = 0; i < opts->n_home_ranges; ++i) {
      const AggvmDsmHomeRange& r = opts->home_ranges[i];
      cfg.homes.push_back({r.gpa_start, r.gpa_end, r.node});
    }
    cfg.resident_cap_bytes = opts->resident_cap_bytes;
    cfg.late = aggvm::dsm::NodeSet(opts->late_nodes);
    cfg.timeout = std::chrono::milliseconds(opts->timeout_ms ? opts->timeout_ms : 5000);
    cfg.service_spin = std::chrono::microseconds(opts->service_spin_us);
    if (opts->limit_cpu_latency) {
      aggvm::dsm::CpuLatencyRequest::check_bound(opts->cpu_latency_us);  // refused now, not at start
      cfg.cpu_latency_us = opts->cpu_latency_us;
    }
    cfg.transports = opts->ucx_transports ? opts->ucx_transports : "tcp";
    if (opts->frame_protection != AGGVM_DSM_FRAMES_SEALED && opts->frame_protection != AGGVM_DSM_FRAMES_PLAIN)
      aggvm::dsm::fail(EINVAL, "frame_protection {} is neither SEALED (0) nor PLAIN (1)", opts->frame_protection);
    cfg.frame_protection = opts->frame_protection == AGGVM_DSM_FRAMES_PLAIN ? aggvm::dsm::FrameProtection::kNone
                                                                           : aggvm::dsm::FrameProtection::kAesGcm;
    if (opts->on_failure) {
      auto cb = opts->on_failure;
      void* opaque = opts->opaque;
      cfg.on_failure = [cb, opaque](int err, int node, const std::string& msg) {
        cb(opaque, -err, node, msg.c_str());
      };
    }
    if (opts->on_page_change) {
      auto cb = opts->on_page_change;
      void* opaque = opts->opaque;
      cfg.on_page_change = [cb, opaque](uint64_t gpa, uint64_t len) { cb(opaque, gpa, len); };
    }
    if (opts->on_page_release) {
      auto cb = opts->on_page_release;
      void* opaque = opts->opaque;
      cfg.on_page_release = [cb, opaque](uint64_t gpa, uint64_t len) { cb(opaque, gpa, len); };
    }
    if (opts->on_service_thread) {
      auto cb = opts->on_service_thread;
      void* opaque = opts->opaque;
      cfg.on_service_thread = [cb, opaque](bool starting) { cb(opaque, starting); };
    }
    const auto timeout_ms = static_cast<uint32_t>(cfg.timeout.count());
    auto node = std::make_unique<Node>(std::move(cfg));
    auto calls = std::make_unique<Calls>(*node);
    auto clocks = std::make_unique<ClockService>(*calls);
    dsm = new AggvmDsm{std::move(node), std::move(calls), std::move(clocks), timeout_ms};
  });
  return dsm;
}

int aggvm_dsm_add_region(AggvmDsm* dsm, const char* name, uint64_t gpa, void* host, uint64_t size,
                         char** errmsg) {
  return guarded(errmsg, [&] { dsm->node->add_region(name ? name : "", gpa, host, size); });
}

int aggvm_dsm_start(AggvmDsm* dsm, char** errmsg) {
  return guarded(errmsg, [&] { dsm->node->start(); });
}

int aggvm_dsm_stop(AggvmDsm* dsm, char** errmsg) {
  return guarded(errmsg, [&] { dsm->node->stop(); });
}

int aggvm_dsm_abandon(AggvmDsm* dsm, char** errmsg) {
  return guarded(errmsg, [&] { dsm->node->abandon(); });
}

void aggvm_dsm_free(AggvmDsm* dsm) {
  if (!dsm) return;
  dsm->node->abandon();  // before the calls' handlers go away
  delete dsm;
}

int aggvm_dsm_wait_failure(AggvmDsm* dsm, uint32_t timeout_ms, char** errmsg) {
  auto failure = dsm->node->wait_failure(std::chrono::milliseconds(timeout_ms));
  if (!failure) return 0;
  set_error(errmsg, failure->what());
  return -failure->err();
}

int aggvm_dsm_failed_node(AggvmDsm* dsm) { return dsm->node->failed_node(); }

int aggvm_dsm_declare_failure(AggvmDsm* dsm, int err, int node, const char* message) {
  const int e = err < 0 ? -err : err;
  return guarded(nullptr, [&] { dsm->node->declare_failure(e ? e : EIO, node, message ? message : "failure"); });
}

int aggvm_dsm_rehome(AggvmDsm* dsm, uint64_t gpa, uint64_t size, uint16_t to, char** errmsg) {
  return guarded(errmsg, [&] { dsm->node->rehome(gpa, size, to); });
}

int aggvm_dsm_home_of(AggvmDsm* dsm, uint64_t gpa) { return dsm->node->home_of(gpa); }

size_t aggvm_dsm_home_ranges(AggvmDsm* dsm, AggvmDsmHomeRange* out, size_t max) {
  const auto all = dsm->node->home_ranges();
  for (size_t i = 0; i < all.size() && i < max; ++i)
    out[i] = {.gpa_start = all[i].gpa_start, .gpa_end = all[i].gpa_end, .node = all[i].node};
  return all.size();
}

int aggvm_dsm_fetch(AggvmDsm* dsm, uint64_t gpa, uint64_t size, int write, char** errmsg) {
  return guarded(errmsg, [&] {
    dsm->node->fetch(gpa, size, write ? aggvm::dsm::Access::kWrite : aggvm::dsm::Access::kRead);
  });
}

int aggvm_dsm_peek(AggvmDsm* dsm, uint64_t gpa, uint64_t size, uint64_t* asked, char** errmsg) {
  return guarded(errmsg, [&] {
    const uint64_t n = dsm->node->peek(gpa, size);
    if (asked) *asked = n;
  });
}

int aggvm_dsm_release(AggvmDsm* dsm, uint64_t gpa, uint64_t size, char** errmsg) {
  return guarded(errmsg, [&] { dsm->node->release(gpa, size); });
}

int aggvm_dsm_fetch_ranges(AggvmDsm* dsm, const AggvmDsmRange* ranges, size_t n, int write, uint64_t* asked,
                           char** errmsg) {
  return guarded(errmsg, [&] {
    const uint64_t k =
        dsm->node->fetch(std::span(ranges, n), write ? aggvm::dsm::Access::kWrite : aggvm::dsm::Access::kRead);
    if (asked) *asked = k;
  });
}

int aggvm_dsm_peek_ranges(AggvmDsm* dsm, const AggvmDsmRange* ranges, size_t n, uint64_t* asked, char** errmsg) {
  return guarded(errmsg, [&] {
    const uint64_t k = dsm->node->peek(std::span(ranges, n));
    if (asked) *asked = k;
  });
}

int aggvm_dsm_read_ranges(AggvmDsm* dsm, const AggvmDsmRange* ranges, size_t n, void* buf, size_t buf_size,
                          uint64_t* asked, char** errmsg) {
  return guarded(errmsg, [&] {
    const uint64_t k = dsm->node->read(std::span(ranges, n), std::span(static_cast<std::byte*>(buf), buf_size));
    if (asked) *asked = k;
  });
}

int aggvm_dsm_ranges_here(AggvmDsm* dsm, const AggvmDsmRange* ranges, size_t n, int write, char** errmsg) {
  bool here = false;
  const int ret = guarded(errmsg, [&] {
    here = dsm->node->mapped_here(std::span(ranges, n), write ? aggvm::dsm::Access::kWrite : aggvm::dsm::Access::kRead);
  });
  return ret < 0 ? ret : here;
}

int aggvm_dsm_release_ranges(AggvmDsm* dsm, const AggvmDsmRange* ranges, size_t n, char** errmsg) {
  return guarded(errmsg, [&] { dsm->node->release(std::span(ranges, n)); });
}

int aggvm_dsm_drop_copies(AggvmDsm* dsm, char** errmsg) {
  return guarded(errmsg, [&] { dsm->node->drop_copies(); });
}

int aggvm_dsm_leave(AggvmDsm* dsm, char** errmsg) {
  return guarded(errmsg, [&] { dsm->node->leave(); });
}

int aggvm_dsm_hold_admissions(AggvmDsm* dsm, int hold, char** errmsg) {
  return guarded(errmsg, [&] { dsm->node->hold_admissions(hold != 0); });
}

int aggvm_dsm_peer_left(AggvmDsm* dsm, uint16_t peer) { return dsm->node->peer_leaving(peer) ? 1 : 0; }

int aggvm_dsm_cancel_calls(AggvmDsm* dsm, int err) {
  return guarded(nullptr, [&] {
    const int e = err < 0 ? -err : err;
    dsm->calls->cancel_all(e ? e : ECANCELED, fmt::format("call cancelled on node {}: {}", dsm->node->self(),
                                                          std::strerror(e ? e : ECANCELED)));
  });
}

int aggvm_dsm_poison_lost(AggvmDsm* dsm, char** errmsg) {
  return guarded(errmsg, [&] { dsm->node->poison_lost(); });
}

void aggvm_dsm_free_error(char* errmsg) { free(errmsg); }

int aggvm_dsm_node_stats(AggvmDsm* dsm, AggvmDsmNodeStats* out) {
  *out = dsm->node->stats();
  return 0;
}

int aggvm_dsm_peer_stats(AggvmDsm* dsm, uint16_t node, AggvmDsmPeerStats* out) {
  return dsm->node->peer_stats(node, out) ? 0 : -ENOENT;
}

int aggvm_dsm_thread_stats(AggvmDsm* dsm, int tid, AggvmDsmFaultStats* out) {
  return dsm->node->thread_stats(tid, out) ? 0 : -ENOENT;
}

size_t aggvm_dsm_thread_granule_faults(AggvmDsm* dsm, int tid, AggvmDsmGranuleFaults* out, size_t max) {
  const auto all = dsm->node->thread_granules(tid);
  std::copy_n(all.begin(), std::min(all.size(), max), out);
  return all.size();
}

size_t aggvm_dsm_fault_threads(AggvmDsm* dsm, int* tids, size_t max) {
  const auto all = dsm->node->fault_threads();
  for (size_t i = 0; i < all.size() && i < max; ++i) tids[i] = all[i];
  return all.size();
}

int aggvm_dsm_register_service(AggvmDsm* dsm, uint16_t channel, AggvmDsmServiceHandler handler,
                               void* opaque, char** errmsg) {
  return guarded(errmsg, [&] {
    if (!handler) aggvm::dsm::fail(EINVAL, "no handler for service channel {}", channel);
    dsm->node->register_service(channel, [handler, opaque](uint16_t from, std::span<const std::byte> d) {
      handler(opaque, from, d.data(), d.size());
    });
  });
}

int aggvm_dsm_send_service(AggvmDsm* dsm, uint16_t to, uint16_t channel, const void* data, size_t len,
                           char** errmsg) {
  return guarded(errmsg, [&] {
    dsm->node->send_service(to, channel, std::span(static_cast<const std::byte*>(data), len));
  });
}

int aggvm_dsm_register_call(AggvmDsm* dsm, uint16_t channel, AggvmDsmCallHandler handler, void* opaque,
                            char** errmsg) {
  return guarded(errmsg, [&] {
    if (!handler) aggvm::dsm::fail(EINVAL, "no handler for call channel {}", channel);
    dsm->calls->handle(channel, [handler, opaque](uint16_t from, uint64_t id, std::span<const std::byte> d) {
      handler(opaque, from, id, d.data(), d.size());
    });
  });
}

int aggvm_dsm_call(AggvmDsm* dsm, uint16_t to, uint16_t channel, const void* request, size_t request_len,
                   void* reply, size_t reply_cap, size_t* reply_len, uint32_t timeout_ms, char** errmsg) {
  return guarded(errmsg, [&] {
    const size_t n = dsm->calls->call(
        to, channel, std::span(static_cast<const std::byte*>(request), request_len),
        std::span(static_cast<std::byte*>(reply), reply_cap),
        std::chrono::milliseconds(timeout_ms ? timeout_ms : dsm->timeout_ms));
    if (reply_len) *reply_len = n;
  });
}

int aggvm_dsm_reply(AggvmDsm* dsm, uint16_t to, uint64_t call_id, int status, const void* data, size_t len,
                    char** errmsg) {
  return guarded(errmsg, [&] {
    dsm->calls->reply(to, call_id, status, std::span(static_cast<const std::byte*>(data), len));
  });
}

int aggvm_dsm_measure_clocks(AggvmDsm* dsm, uint16_t peer, unsigned probes, AggvmDsmPeerClocks* out,
                             char** errmsg) {
  return guarded(errmsg, [&] {
    const auto m = dsm->clocks->measure(peer, probes, std::chrono::milliseconds(dsm->timeout_ms));
    out->tsc = {m.tsc.offset, m.tsc.error, m.tsc.best_rtt};
    out->monotonic = {m.monotonic.offset, m.monotonic.error, m.monotonic.best_rtt};
  });
}

}  // extern "C"
