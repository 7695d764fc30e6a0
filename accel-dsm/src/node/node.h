// One node of a DSM cluster: the service thread that reads userfaultfd,
// drives the protocol engine and the fabric, and never takes a lock that a
// thread touching guest memory could hold.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <condition_variable>
#include <deque>
#include <future>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "aggvm/dsm.h"
#include "error.h"
#include "fault/userfaultfd.h"
#include "node/cpu_latency.h"
#include "node/liveness.h"
#include "node/stats.h"
#include "protocol/engine.h"
#include "transport/fabric.h"

namespace aggvm::dsm::pb {
class Welcome;
}

namespace aggvm::dsm {

struct NodeConfig {
  NodeId self = 0;
  uint16_t n_nodes = 1;
  std::vector<std::string> addresses;
  SecretBytes secret;  // wiped when freed
  std::string cluster_name;
  std::vector<HomeRange> homes;
  uint64_t resident_cap_bytes = 0;
  std::chrono::milliseconds timeout{5000};
  // How long the service thread polls after its last event before it
  // sleeps (AggvmDsmOptions.service_spin_us).
  std::chrono::microseconds service_spin{0};
  // While the node runs, hold the host's CPU wake-up latency at this bound
  // (AggvmDsmOptions.cpu_latency_us; cpu_latency.h); unset: leave it be.
  std::optional<uint32_t> cpu_latency_us;
  // Nodes that join the running cluster later (never node 0); they home
  // nothing at start.  A late node's start() joins: node 0 admits it.
  NodeSet late;
  std::string transports = "tcp";
  FrameProtection frame_protection = FrameProtection::kAesGcm;
  // node: the peer to blame, or -1 when no single peer is (a local error).
  std::function<void(int err, int node, const std::string& message)> on_failure;
  // On the service thread, after the node dropped its copy of a page and
  // before it tells any peer so.
  std::function<void(uint64_t gpa, uint64_t len)> on_page_change;
  // As on_page_change, for copies given up while no one changed the pages
  // (release()); empty: on_page_change is called for them.
  std::function<void(uint64_t gpa, uint64_t len)> on_page_release;
  // On the service thread as it starts (true) and as it ends (false), so
  // that the embedder can register it with its own runtime.
  std::function<void(bool starting)> on_service_thread;
};

using ServiceHandler = std::function<void(NodeId from, std::span<const std::byte> data)>;

// What users of the node's fabric (calls) must know to stop waiting at once.
struct NodeListener {
  // The node stopped, was abandoned or failed: no more answers will come.
  // err is ECANCELED for a stop, else the failure's errno.
  std::function<void(int err, const std::string& why)> finished;
  // A peer said goodbye: it is leaving and will answer nothing new.
  std::function<void(NodeId peer)> peer_leaving;
};

class Node final : private Env, private FabricSink {
 public:
  // Validates the configuration; throws DsmError(EINVAL) naming the problem.
  explicit Node(NodeConfig config);
  ~Node() override;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  void add_region(std::string name, uint64_t gpa, void* host, uint64_t size);
  void register_service(uint16_t channel, ServiceHandler handler);
  // Before start(); listeners are called on the service thread or in stop().
  void add_listener(NodeListener listener);
  void start();
  // Barrier with every peer, then stops serving.  A peer that does not say
  // goodbye within the timeout fails it (ETIMEDOUT naming the node).
  void stop();
  // Stops serving at once, without a barrier, and lets go of guest memory:
  // threads blocked on a fault resume on whatever the memory holds.  For a
  // node whose guest is stopped because the cluster failed.
  void abandon();

  // For a failed node: stops serving without a barrier and poisons every
  // page not held valid here (UFFDIO_POISON), keeping userfaultfd armed.
  // Throws DsmError(ENOTSUP) when the kernel cannot poison.
  void poison_lost();

  // The embedder learnt of a failure first (a peer said it leaves): the
  // node fails now, blaming node (-1: none), unless it failed already.
  void declare_failure(int err, int node, const std::string& message) { fail_node(err, node, message); }
  // The failure, once the node has failed; waits up to timeout for one.
  std::optional<DsmError> wait_failure(std::chrono::milliseconds timeout);
  NodeId self() const { return cfg_.self; }
  // The peer blamed for the failure, or -1 (no failure, or no single peer).
  int failed_node() const;
  // The peer said goodbye: it is stopping.
  bool peer_leaving(NodeId peer) const {
    return peer < kMaxNodes && (leaving_.load(std::memory_order_acquire) >> peer) & 1;
  }
  void send_service(NodeId to, uint16_t channel, std::span<const std::byte> data);

  // Moves the home of guest pages [gpa, gpa + size), every one registered
  // and homed on this node, to node `to` while every node goes on using
  // them (protocol/rehome.h), and waits until the new home serves them.
  // Throws DsmError: EINVAL (bad range or node), EBUSY (pages still moving
  // here), ECANCELED (the node stops), or the node's failure.  Each step
  // of the move is bounded by the node's timeout.
  void rehome(uint64_t gpa, uint64_t size, NodeId to);
  // Brings every page of guest range [gpa, gpa + size) here, readable or
  // (access kWrite) writable, with up to kFetchWindow requests in flight
  // and no thread faulting, and waits until each was granted.  Throws
  // DsmError: EINVAL (bad range), ECANCELED (the node stops), or the
  // node's failure; each request is bounded by the node's timeout.
  void fetch(uint64_t gpa, uint64_t size, Access access);
  // The same for several ranges in one call, every page of every range
  // asked for before any grant is waited for.  Returns how many pages it
  // asked for (0: all were held here).
  uint64_t fetch(std::span<const AggvmDsmRange> ranges, Access access);
  // Maps here a read-only snapshot of every page of [gpa, gpa + size) not
  // held here, a run of pages per message to each home, no directory state
  // changed (protocol/peek.h), and waits until each was answered.  The
  // caller promises that no node writes the range until release() drops
  // the snapshots.  Returns how many pages it asked for (0: all were
  // here).  Throws as fetch() does.
  uint64_t peek(uint64_t gpa, uint64_t size);
  // The same for several ranges in one call, all of them asked for before
  // any is waited for: a device's scattered buffers cost one round of
  // messages, not one per buffer.  Each range is checked before anything
  // is asked for.
  uint64_t peek(std::span<const AggvmDsmRange> ranges);
  // Copies the ranges, one after the other, into buf (their total size),
  // coherent and without keeping anything here: a page held here is read
  // from guest RAM (a fault, if it is taken away meanwhile), any other is
  // asked of its home as a peek is, the answer copied into buf and not
  // mapped, so its owner keeps its copy and writes on without a fault.  A
  // device reading a guest's buffer once (a disk write, a packet to send)
  // costs one round of messages and leaves no copy to give back.  Returns
  // how many pages it asked for.  Throws as fetch() does.
  uint64_t read(std::span<const AggvmDsmRange> ranges, std::span<std::byte> buf);
  // Whether every page of the ranges is mapped here for access, as the
  // page table shows now (mapped_here()).  Throws EINVAL for a bad range.
  bool mapped_here(std::span<const AggvmDsmRange> ranges, Access access) const {
    return mapped_here(page_ranges(ranges), access);
  }
  // Gives up the copies fetch() brought here in [gpa, gpa + size) that no
  // thread here faulted on since, of pages homed elsewhere, owned ones with
  // their data (Cache::release_fetched), and returns once each is unmapped
  // and its home told (the acks come later).  Throws as fetch() does.
  void release(uint64_t gpa, uint64_t size);
  void release(std::span<const AggvmDsmRange> ranges);
  // The node this node asks for the page at gpa: its home, as known here.
  NodeId home_of(uint64_t gpa) const;
  std::vector<HomeRange> home_ranges() const;
  // Evacuation, step 1: drops every copy this node holds of pages homed
  // elsewhere, writing back those it holds Modified, and waits for their
  // homes' acks.  ETIMEDOUT when copies still come back (threads here
  // keep faulting) one timeout after the last progress.
  void drop_copies();
  // Evacuation, last step: leaves the running cluster for good.  The node
  // must hold nothing (no page homed here, no copy, no request in flight:
  // EBUSY otherwise).  It says goodbye, flushes what it sent and stops
  // serving; its guest memory is plain memory afterwards.  The peers go on
  // without it: calls to it end at once, and it is never blamed.
  void leave();

  // Node 0: while held, no late node is admitted (it waits); homes must
  // not move while a node joins (it would miss the change), so whoever
  // moves them holds admissions first.  Holding throws EBUSY naming the
  // node while one is joining (admitted, not yet connected to everyone).
  void hold_admissions(bool hold);

  AggvmDsmNodeStats stats() const;
  // A peer's figures from its last heartbeat; false before the first.
  bool peer_stats(NodeId node, AggvmDsmPeerStats* out) const;
  bool thread_stats(int tid, AggvmDsmFaultStats* out) const { return faults_.thread_faults(tid, out); }
  std::vector<int> fault_threads() const { return faults_.threads(); }
  std::vector<AggvmDsmGranuleFaults> thread_granules(int tid) const { return faults_.thread_granules(tid); }

 private:
  struct Region {
    std::string name;
    uint64_t gpa;
    std::byte* host;
    uint64_t size;
  };
  struct Fetch {
    std::vector<PageRange> ranges;
    Access access = Access::kRead;
    bool release = false;           // release(), not fetch()
    bool peek = false;              // peek(), not fetch()
    // read(): peeks answered into copy_to (buf_page[i]: the buffer's page
    // for ranges[i].first), copied[] set for each page that got there.
    std::byte* copy_to = nullptr;
    bool* copied = nullptr;
    std::vector<uint64_t> buf_page;
    size_t range = 0;               // the range and page asked for next
    uint64_t next = 0;
    std::vector<PageKey> in_flight;  // asked for, not granted yet
    uint64_t asked = 0;              // pages asked for (released) so far
    std::promise<uint64_t> done;     // their number
  };
  struct Outgoing {
    NodeId to;
    uint16_t channel;
    std::vector<std::byte> data;
  };

  // Env
  void send(const Message& m) override;
  void install(PageKey page, std::span<const std::byte> data, bool writable) override;
  void install_range(PageKey first, uint64_t count, std::span<const std::byte> data) override;
  void set_writable(PageKey page) override;
  void write_protect(PageKey page) override;
  void write_protect_range(PageKey first, uint64_t count) override;
  void read(PageKey page, PageBuffer out) override;
  void drop(PageKey page) override;
  void drop_range(PageKey first, uint64_t count) override;
  void release_range(PageKey first, uint64_t count) override;
  void wake(PageKey page) override;
  void resolved(PageKey page, const Waiter& w, NodeId home, uint64_t now_ns) override;
  void rejected(NodeId from, std::string_view why) override;
  // FabricSink
  void on_frame(NodeId from, const WireHeader& h, std::span<const std::byte> payload) override;
  void on_peer_lost(NodeId peer, const std::string& why) override;
  void on_rejected(const std::string& who, const std::string& why) override;
  void on_peer_joined(NodeId peer) override;

  void join();
  void on_welcome(NodeId from, const pb::Welcome& welcome);
  void mark_gone(NodeId peer);
  void said_goodbye(NodeId peer);
  void serve_admissions();

  void run();
  bool serve_faults();
  void sync_counters();
  void serve_commands();
  void send_goodbyes();
  void send_control(NodeId to, const std::string& bytes);
  void check_liveness(std::chrono::steady_clock::time_point now);
  void serve_home_moves();
  void serve_drop_copies();
  std::vector<PageRange> page_ranges(std::span<const AggvmDsmRange> ranges) const;
  uint64_t run_fetch(Fetch f, std::string_view what);  // fetch(), peek(), release(): queued, waited for
  bool serve_fetches();
  bool held_for(PageKey page, Access access) const;
  bool mapped_here(const std::vector<PageRange>& ranges, Access access) const;
  void end_fetches(const DsmError& why);
  // From another thread: puts a request in slot (under cmd_mu_) for the
  // service thread and wakes it; the future is its answer.  Throws the
  // node's failure, ENOTCONN, ECANCELED (stopping), EBUSY (slot taken).
  std::future<void> ask_service_thread(std::optional<std::promise<void>>& slot, const char* busy);
  // From another thread: throws the node's failure, if it has failed.
  void throw_if_failed() const;
  // Wakes the service thread from its wait (the eventfd).
  void wake_service();
  void serve_leave();
  bool goodbyes_read();
  uint64_t pages_homed_here() const;
  void end_home_moves(const DsmError& why);
  std::vector<PageRange> page_ranges(uint64_t gpa, uint64_t size) const;
  void fail_node(int err, int node, const std::string& message);
  void notify_finished(int err, const std::string& why);
  void check_stop_deadline();
  std::byte* host(PageKey page) const { return regions_[page.region()].host + page.index() * kPageSize; }
  std::string describe_configuration() const;
  static uint64_t now_ns();

  NodeConfig cfg_;
  std::unique_ptr<ClusterKey> key_;
  std::vector<Region> regions_;
  std::map<uintptr_t, uint32_t> region_by_host_;
  std::unique_ptr<PageSpace> space_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Userfaultfd> uffd_;
  std::optional<CpuLatencyRequest> cpu_latency_;
  std::unique_ptr<Fabric> fabric_;
  std::map<uint16_t, ServiceHandler> services_;
  std::vector<NodeListener> listeners_;  // fixed once started
  std::thread thread_;
  int wake_fd_ = -1;
  int pagemap_fd_ = -1;
  // AGGVM_DSM_FAULT_LOG: one line per fault (service thread only).
  std::unique_ptr<FILE, int (*)(FILE*)> fault_log_{nullptr, &std::fclose};
  int epoll_fd_ = -1;
  bool started_ = false;
  bool poisoned_ = false;

  std::mutex cmd_mu_;
  std::vector<Outgoing> outgoing_;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> abandon_{false};
  struct HomeMove {
    std::vector<PageRange> ranges;  // one per region touched, moved in turn
    NodeId to = 0;
    std::promise<void> done;
  };
  std::deque<HomeMove> home_moves_;  // waiting, under cmd_mu_
  std::optional<HomeMove> home_move_;  // service thread: the one in progress
  std::deque<Fetch> fetch_requests_;   // waiting, under cmd_mu_
  std::optional<Fetch> fetch_;         // service thread: the one in progress
  bool ending_moves_ = false;          // under cmd_mu_: refuse new ones
  // drop_copies() and leave(): asked under cmd_mu_, taken by the service thread.
  std::optional<std::promise<void>> drop_request_, drop_;
  std::chrono::steady_clock::time_point drop_deadline_{};
  uint64_t drop_left_ = 0;
  std::optional<std::promise<void>> leave_request_, left_;

  // The engine's home map as other threads may read it.
  mutable std::mutex homes_mu_;
  std::optional<HomeMap> homes_;
  uint64_t homes_changes_ = 0;  // service thread: the engine's map when copied

  // Service thread only.
  bool stopping_ = false;
  std::chrono::steady_clock::time_point stop_deadline_{};
  NodeSet goodbyes_;
  NodeSet awaiting_goodbye_acks_;   // peers yet to read our goodbye
  NodeSet closed_after_goodbye_;    // peers gone after their goodbye
  std::chrono::steady_clock::time_point goodbyes_deadline_{};
  // Joining (a late node's start()): node 0's welcome, once it came.
  bool joining_ = false;
  std::optional<std::pair<NodeSet, std::vector<HomeRange>>> welcome_;
  // Node 0: late nodes authenticated and not yet welcomed; welcomed and
  // not yet joined (under cmd_mu_, with admissions_held_).
  NodeSet to_welcome_, welcomed_;
  bool admissions_held_ = false;
  // Set once connected (the fabric's frames reach on_frame before that too).
  std::optional<PeerLiveness> liveness_;
  std::atomic<uint64_t> leaving_{0};  // peers that said goodbye, for other threads
  std::atomic<bool> finished_notified_{false};

  mutable std::mutex fail_mu_;
  std::condition_variable fail_cv_;
  std::optional<DsmError> failure_;
  int failed_node_ = -1;
  bool finished_ = false;

  FaultStatistics faults_;
  mutable std::mutex stats_mu_;
  AggvmDsmNodeStats counters_{};
  struct PeerFigures {
    AggvmDsmPeerStats stats{};
    std::chrono::steady_clock::time_point when{};
    bool known = false;
  };
  std::vector<PeerFigures> peer_figures_;  // by node id, under stats_mu_
};

}  // namespace aggvm::dsm
