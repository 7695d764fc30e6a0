// dsm-worker: one node of a DSM cluster running a workload, through the C
// API (as QEMU uses it).  Started by the multi-process tests, the
// benchmark and the demo, one per host namespace.  Prints "result" lines.
//
// Exit codes: 0 pass, 1 workload check failed, 2 bad usage or start-up
// error, 3 the cluster failed (peer lost, timeout) and it was reported.
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "aggvm/dsm.h"
#include "bench_floor.h"
#include "node/cpu_latency.h"

std::atomic<uint64_t> g_pongs{0};

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kPage = AGGVM_DSM_PAGE_SIZE;

struct Options {
  int node = 0;
  std::vector<std::string> addresses;
  std::string secret_file;
  std::string cluster = "aggvm-test";
  uint64_t region_mib = 256;
  uint64_t cap_mib = 0;
  uint32_t timeout_ms = 3000;
  std::string mode = "torture";
  std::string ucx_transports;  // empty: the library's default (tcp)
  std::string frames = "sealed";  // frame protection: sealed (AES-256-GCM) | plain
  uint32_t spin_us = 0;           // the service thread's polling before it sleeps
  int64_t cpu_latency_us = -1;  // held on the host while the node runs; -1: leave it be
  int threads = 2;
  uint64_t ops = 2000;
  uint64_t iterations = 100000;
  uint64_t seed = 1;
  uint32_t rehome_ms = 0;  // torture: move the home of a run of pages this often (0: never)
  std::vector<int> late;   // nodes that join the running cluster later
  uint32_t start_delay_ms = 0;
};

[[noreturn]] void die(int code, const std::string& msg) {
  std::fprintf(stderr, "dsm-worker: %s\n", msg.c_str());
  std::fflush(stdout);
  _exit(code);
}

// The cluster as seen by one node: region, C API handle, a barrier.
class Cluster {
 public:
  explicit Cluster(const Options& o) : o_(o) {
    size_ = o.region_mib << 20;
    base_ = static_cast<std::byte*>(
        mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (base_ == MAP_FAILED) die(2, "mmap of the region failed");
    std::ifstream f(o.secret_file, std::ios::binary);
    std::string secret((std::istreambuf_iterator<char>(f)), {});
    if (!f && secret.empty()) die(2, "cannot read secret file " + o.secret_file);
    const uint16_t n = static_cast<uint16_t>(o.addresses.size());
    std::vector<const char*> addrs;
    for (const auto& a : o.addresses) addrs.push_back(a.c_str());
    // Guest NUMA layout: the region split evenly, each node present at
    // start homes one slice, in order of ids.
    uint64_t late = 0;
    for (int l : o.late) late |= uint64_t{1} << l;
    std::vector<uint16_t> at_start;
    for (uint16_t i = 0; i < n; ++i)
      if (!(late >> i & 1)) at_start.push_back(i);
    std::vector<AggvmDsmHomeRange> homes;
    const uint64_t slice = (size_ / at_start.size()) & ~(kPage - 1);
    for (size_t k = 0; k < at_start.size(); ++k)
      homes.push_back({k * slice, k + 1 == at_start.size() ? size_ : (k + 1) * slice, at_start[k]});
    AggvmDsmOptions opts{};
    opts.self = static_cast<uint16_t>(o.node);
    opts.n_nodes = n;
    opts.addresses = addrs.data();
    opts.secret = reinterpret_cast<const uint8_t*>(secret.data());
    opts.secret_len = secret.size();
    opts.cluster_name = o.cluster.c_str();
    opts.home_ranges = homes.data();
    opts.n_home_ranges = homes.size();
    opts.resident_cap_bytes = o.cap_mib << 20;
    opts.timeout_ms = o.timeout_ms;
    opts.ucx_transports = o.ucx_transports.empty() ? nullptr : o.ucx_transports.c_str();
    opts.frame_protection = o.frames == "plain" ? AGGVM_DSM_FRAMES_PLAIN : AGGVM_DSM_FRAMES_SEALED;
    opts.late_nodes = late;
    opts.service_spin_us = o.spin_us;
    opts.limit_cpu_latency = o.cpu_latency_us >= 0;
    opts.cpu_latency_us = static_cast<uint32_t>(std::max<int64_t>(o.cpu_latency_us, 0));
    // The hooks an embedder (QEMU) relies on: both on the service thread.
    opts.opaque = this;
    opts.on_service_thread = [](void* self, int starting) {
      auto* c = static_cast<Cluster*>(self);
      if (starting) {
        c->service_tid_ = static_cast<int>(gettid());
        c->service_started_++;
      } else {
        c->service_ended_ += c->service_tid_ == static_cast<int>(gettid());
      }
    };
    opts.on_page_change = [](void* self, uint64_t, uint64_t len) {
      auto* c = static_cast<Cluster*>(self);
      c->page_changes_ += len / kPage;
      c->page_changes_off_thread_ += c->service_tid_ != static_cast<int>(gettid());
    };
    char* err = nullptr;
    dsm_ = aggvm_dsm_new(&opts, &err);
    if (!dsm_) die(2, fmt::format("configuration rejected: {}", err));
    // Benchmark ping-pong: node 0 answers pings, others count pongs.
    aggvm_dsm_register_service(dsm_, 7, [](void* self, uint16_t from, const void* data, size_t len) {
          auto* c = static_cast<Cluster*>(self);
          if (c->o_.node == 0) {
            aggvm_dsm_send_service(c->dsm_, from, 7, data, len, nullptr);
          } else {
            g_pongs.fetch_add(1);
            g_pongs.notify_all();
          }
        }, this, &err);
    std::this_thread::sleep_for(std::chrono::milliseconds(o.start_delay_ms));
    if (aggvm_dsm_add_region(dsm_, "ram", 0, base_, size_, &err) != 0 || aggvm_dsm_start(dsm_, &err) != 0)
      die(2, fmt::format("start failed: {}", err));
    std::printf("dsm-worker: node %d started (%zu nodes, %lu MiB)\n", o.node, o.addresses.size(),
                static_cast<unsigned long>(o.region_mib));
    if (o.cpu_latency_us >= 0) std::printf("cpu-latency: held_us=%d\n", aggvm::dsm::CpuLatencyRequest::current());
    std::fflush(stdout);
    // Report a failure of the cluster from a thread of its own: the others
    // may be blocked in faults that will never be resolved.
    watcher_ = std::thread([this] {
      char* msg = nullptr;
      while (!done_) {
        if (int rc = aggvm_dsm_wait_failure(dsm_, 50, &msg); rc != 0) {
          std::printf("dsm-worker: node %d: cluster failure (%s): %s\n", o_.node, strerror(-rc), msg);
          die(3, "stopping after a cluster failure");
        }
      }
    });
  }

  ~Cluster() {
    done_ = true;
    watcher_.join();
    aggvm_dsm_free(dsm_);
    std::printf("hooks: node=%d service_thread_started=%d ended=%d page_changes=%lu off_thread=%lu\n", o_.node,
                service_started_.load(), service_ended_.load(), static_cast<unsigned long>(page_changes_.load()),
                static_cast<unsigned long>(page_changes_off_thread_.load()));
    std::fflush(stdout);
  }

  void stop() {
    char* err = nullptr;
    if (aggvm_dsm_stop(dsm_, &err) != 0) die(3, fmt::format("stop failed: {}", err));
  }

  template <typename T>
  T* at(uint64_t offset) { return reinterpret_cast<T*>(base_ + offset); }
  uint64_t size() const { return size_; }
  int nodes() const { return static_cast<int>(o_.addresses.size()); }
  int self() const { return o_.node; }
  int threads() const { return o_.threads; }
  AggvmDsm* dsm() { return dsm_; }
  // This node left the cluster (aggvm_dsm_leave): no stop barrier.
  void left() { left_ = true; }
  bool has_left() const { return left_; }

  // All nodes meet here; the counter lives in DSM memory (page 0).
  void barrier(uint64_t generation) {
    auto* counter = at<std::atomic<uint64_t>>(0);
    counter->fetch_add(1);
    const uint64_t target = generation * static_cast<uint64_t>(nodes());
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (counter->load() < target) {
      if (Clock::now() > deadline) die(1, "barrier timed out");
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

 private:
  const Options& o_;
  std::byte* base_ = nullptr;
  uint64_t size_ = 0;
  AggvmDsm* dsm_ = nullptr;
  std::atomic<bool> done_{false};
  bool left_ = false;
  std::thread watcher_;
  std::atomic<int> service_tid_{0}, service_started_{0}, service_ended_{0};
  std::atomic<uint64_t> page_changes_{0}, page_changes_off_thread_{0};
};

AggvmDsmNodeStats node_stats(Cluster& c) {
  AggvmDsmNodeStats s{};
  aggvm_dsm_node_stats(c.dsm(), &s);
  return s;
}

// Faults this node's threads took so far, read and write.
uint64_t fault_count(Cluster& c) {
  const AggvmDsmNodeStats s = node_stats(c);
  return s.faults.read_faults + s.faults.write_faults;
}

void print_stats(Cluster& c) {
  const AggvmDsmNodeStats s = node_stats(c);
  std::printf("stats: node=%d read_faults=%lu write_faults=%lu local_faults=%lu bytes_sent=%lu "
              "bytes_received=%lu invalidations=%lu evictions=%lu writebacks=%lu resident_pages=%lu "
              "resident_peak_pages=%lu rejected=%lu\n",
              c.self(), s.faults.read_faults, s.faults.write_faults, s.faults.local_faults, s.bytes_sent,
              s.bytes_received, s.invalidations_received, s.evictions, s.writebacks, s.resident_pages,
              s.resident_peak_pages, s.messages_rejected);
}

// ---- torture: atomic counters and checksummed records -------------------

constexpr uint64_t kCounters = 64;
constexpr uint64_t kCounterOffset = kPage;            // pages 1-8: one counter per 512 bytes
constexpr uint64_t kSlotStride = 16 * kPage;          // records every 16 pages
struct Record {
  std::atomic<uint32_t> lock;
  uint32_t writer;
  uint64_t version;
  uint64_t seq;
  uint64_t payload[500];
  uint64_t checksum;
};
static_assert(sizeof(Record) <= kPage);

uint64_t checksum(const Record& r) {
  uint64_t h = 1469598103934665603ull ^ r.version ^ (uint64_t{r.writer} << 32) ^ r.seq;
  for (uint64_t v : r.payload) h = (h ^ v) * 1099511628211ull;
  return h;
}

// While the torture runs: every period, a run of up to 64 pages this node
// homes (as it knows) moves to another node, so that the counters and
// records keep changing home under the threads that fault on them.
class HomeMover {
 public:
  HomeMover(Cluster& c, const Options& o) : c_(c), o_(o) {
    if (o.rehome_ms) thread_ = std::thread([this] { run(); });
  }
  ~HomeMover() { stop(); }
  void stop() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // After every node stopped moving: every move in has landed too.
  void report() const {
    if (!o_.rehome_ms) return;
    AggvmDsmNodeStats s{};
    aggvm_dsm_node_stats(c_.dsm(), &s);
    std::printf("rehome: node=%d moves=%lu pages=%lu refused=%lu rehomed_out=%lu rehomed_in=%lu redirects=%lu\n",
                c_.self(), static_cast<unsigned long>(moves_), static_cast<unsigned long>(pages_),
                static_cast<unsigned long>(refused_), static_cast<unsigned long>(s.rehomed_out_pages),
                static_cast<unsigned long>(s.rehomed_in_pages), static_cast<unsigned long>(s.redirects));
  }

 private:
  void run() {
    std::mt19937_64 rng(o_.seed * 7919 + static_cast<uint64_t>(c_.self()));
    const uint64_t pages = c_.size() / kPage;
    while (!done_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(o_.rehome_ms));
      // Hot pages (the barrier, the counters, the first records) most often.
      const uint64_t first = rng() % 2 ? rng() % 64 : rng() % pages;
      uint64_t end = first;
      while (end < pages && end - first < 64 && aggvm_dsm_home_of(c_.dsm(), end * kPage) == c_.self()) ++end;
      if (end == first) continue;
      const auto to = static_cast<uint16_t>((c_.self() + 1 + rng() % (c_.nodes() - 1)) % c_.nodes());
      char* err = nullptr;
      const int rc = aggvm_dsm_rehome(c_.dsm(), first * kPage, (end - first) * kPage, to, &err);
      if (rc == 0) {
        ++moves_;
        pages_ += end - first;
      } else if (rc == -EBUSY) {
        ++refused_;  // pages still moving here
      } else {
        die(3, fmt::format("node {}: moving pages {}..{} to node {}: {}", c_.self(), first, end, to, err));
      }
      aggvm_dsm_free_error(err);
    }
  }

  Cluster& c_;
  const Options& o_;
  std::atomic<bool> done_{false};
  uint64_t moves_ = 0, pages_ = 0, refused_ = 0;
  std::thread thread_;
};

// Each thread: increments random counters and rewrites random records
// under their lock, checking each record's checksum before it writes.
void torture_threads(Cluster& c, const Options& o, std::atomic<int>& torn) {
  const uint64_t first_slot = 16 * kPage;  // after the counters
  const uint64_t slots = (c.size() - first_slot) / kSlotStride;
  std::vector<std::thread> threads;
  for (int t = 0; t < o.threads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(o.seed * 1000 + static_cast<uint64_t>(c.self()) * 64 + t);
      const uint32_t me = static_cast<uint32_t>(c.self() * 64 + t + 1);
      for (uint64_t i = 0; i < o.ops; ++i) {
        c.at<std::atomic<uint64_t>>(kCounterOffset + (rng() % kCounters) * 512)->fetch_add(1);
        Record& r = *c.at<Record>(first_slot + (rng() % slots) * kSlotStride);
        uint32_t unlocked = 0;
        while (!r.lock.compare_exchange_weak(unlocked, me)) {
          unlocked = 0;
          sched_yield();
        }
        if (r.version != 0 && r.checksum != checksum(r)) torn++;
        r.version++;
        r.writer = me;
        r.seq = i;
        for (uint64_t k = 0; k < std::size(r.payload); ++k) r.payload[k] = rng();
        r.checksum = checksum(r);
        r.lock.store(0);
      }
    });
  }
  for (auto& th : threads) th.join();
}

// Reads every counter and record back: the totals must be exact.
bool torture_exact(Cluster& c, uint64_t expected, int torn, const char* what) {
  const uint64_t first_slot = 16 * kPage;
  const uint64_t slots = (c.size() - first_slot) / kSlotStride;
  uint64_t total = 0, versions = 0, bad = 0;
  for (uint64_t k = 0; k < kCounters; ++k) total += c.at<std::atomic<uint64_t>>(kCounterOffset + k * 512)->load();
  for (uint64_t s = 0; s < slots; ++s) {
    Record& r = *c.at<Record>(first_slot + s * kSlotStride);
    versions += r.version;
    if (r.version && r.checksum != checksum(r)) ++bad;
  }
  const bool pass = total == expected && versions == expected && bad == 0 && torn == 0;
  std::printf("result: %s nodes=%d threads=%d counter_total=%lu records=%lu expected=%lu torn=%lu status=%s\n", what,
              c.nodes(), c.threads(), total, versions, expected, bad + static_cast<uint64_t>(torn),
              pass ? "pass" : "fail");
  return pass;
}

int torture(Cluster& c, const Options& o) {
  std::atomic<int> torn{0};
  HomeMover mover(c, o);
  const auto t0 = Clock::now();
  torture_threads(c, o, torn);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  mover.stop();  // no move while node 0 reads everything back
  c.barrier(1);
  mover.report();
  int rc = 0;
  const uint64_t expected = static_cast<uint64_t>(c.nodes()) * o.threads * o.ops;
  if (c.self() == 0) {
    rc = torture_exact(c, expected, torn, "torture") ? 0 : 1;
  } else if (torn) {
    std::printf("result: torture node=%d torn=%d status=fail\n", c.self(), torn.load());
    rc = 1;
  }
  std::printf("torture: node=%d ops_per_s=%.0f\n", c.self(), 2.0 * o.threads * o.ops / secs);
  c.barrier(2);  // node 0 has read everything
  return rc;
}

// Moves the home of every run of pages homed here in [first, end), 4 MiB
// at most a move, to the node target() names for each move.  Returns the
// pages moved; *moves counts the moves.
template <typename Target>
uint64_t rehome_runs(Cluster& c, uint64_t first, uint64_t end, Target target, uint64_t* moves = nullptr) {
  constexpr uint64_t kChunk = 1024;  // 4 MiB a move
  uint64_t moved = 0;
  char* err = nullptr;
  for (uint64_t p = first; p < end;) {
    if (aggvm_dsm_home_of(c.dsm(), p * kPage) != c.self()) {
      ++p;
      continue;
    }
    uint64_t q = p + 1;
    while (q < end && q - p < kChunk && aggvm_dsm_home_of(c.dsm(), q * kPage) == c.self()) ++q;
    const uint16_t to = target();
    if (aggvm_dsm_rehome(c.dsm(), p * kPage, (q - p) * kPage, to, &err) != 0)
      die(1, fmt::format("rehome of pages {}..{} to node {}: {}", p, q, to, err));
    moved += q - p;
    if (moves) ++*moves;
    p = q;
  }
  return moved;
}

// ---- evacuate: the last node empties itself and leaves, the others go on -

// Every node runs the torture; the last one then drops its copies, moves
// the home of every page it homes to the other nodes in turn, and leaves
// the cluster, while node 0 reads everything back (during the evacuation)
// and again once the node has left.
int evacuate(Cluster& c, const Options& o) {
  std::atomic<int> torn{0};
  torture_threads(c, o, torn);
  const int leaver = c.nodes() - 1;
  const uint64_t expected = static_cast<uint64_t>(c.nodes()) * o.threads * o.ops;
  auto* arrived = c.at<std::atomic<uint64_t>>(0);
  arrived->fetch_add(1);
  if (c.self() == leaver) {
    char* err = nullptr;
    AggvmDsmNodeStats before{}, after{};
    aggvm_dsm_node_stats(c.dsm(), &before);
    const auto t0 = Clock::now();
    if (aggvm_dsm_drop_copies(c.dsm(), &err) != 0) die(1, fmt::format("drop_copies: {}", err));
    const auto t1 = Clock::now();
    uint64_t moves = 0;
    // To the other nodes in turn.
    const uint64_t moved = rehome_runs(
        c, 0, c.size() / kPage, [&] { return static_cast<uint16_t>(moves % (c.nodes() - 1)); }, &moves);
    const auto t2 = Clock::now();
    aggvm_dsm_node_stats(c.dsm(), &after);
    if (aggvm_dsm_leave(c.dsm(), &err) != 0) die(1, fmt::format("leave: {}", err));
    c.left();
    const auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    std::printf("result: evacuate node=%d dropped_copies_ms=%.1f writebacks=%lu pages_rehomed=%lu moves=%lu "
                "rehome_ms=%.1f mib_s=%.1f torn=%d status=%s\n",
                c.self(), ms(t0, t1), static_cast<unsigned long>(after.writebacks - before.writebacks),
                static_cast<unsigned long>(moved), static_cast<unsigned long>(moves), ms(t1, t2),
                moved * kPage / 1048576.0 / (ms(t1, t2) / 1000.0), torn.load(), torn ? "fail" : "pass");
    return torn ? 1 : 0;
  }
  // The others: everything is read back while the last node evacuates,
  // and again once it has left (its pages live elsewhere now).
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (arrived->load() < static_cast<uint64_t>(c.nodes()))
    if (Clock::now() > deadline) die(1, "the nodes did not all finish the torture");
  bool pass = true;
  if (c.self() == 0) pass = torture_exact(c, expected, torn, "during");
  while (!aggvm_dsm_peer_left(c.dsm(), static_cast<uint16_t>(leaver))) {
    if (Clock::now() > deadline) die(1, fmt::format("node {} did not leave", leaver));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (c.self() == 0) pass = torture_exact(c, expected, torn, "after") && pass;
  AggvmDsmNodeStats s{};
  aggvm_dsm_node_stats(c.dsm(), &s);
  std::printf("evacuate: node=%d rehomed_in=%lu\n", c.self(), static_cast<unsigned long>(s.rehomed_in_pages));
  // The survivors meet before they stop: node 0 has read everything.
  arrived->fetch_add(1);
  while (arrived->load() < static_cast<uint64_t>(2 * c.nodes() - 1))
    if (Clock::now() > deadline) die(1, "the remaining nodes did not meet");
  return pass ? 0 : 1;
}

// ---- join: a node joins the running cluster, takes homes, another leaves -

// Nodes 0 and 1 start; node 2 (late) joins while they run.  Before it
// does, node 0 moves some of its homes to node 1, admissions held, so that
// the joiner must learn the homes from node 0's welcome, not from the
// configuration.  The joiner reads back everything node 0 wrote and
// writes a new generation; node 0 moves homes to it, node 1 moves all its
// homes to it and leaves; node 0 reads the new generation back.  Then,
// node 1 gone, node 2 moves homes back to node 0 (the move must not wait
// for the node that left), and node 0 reads everything again.  Control
// words live in page 0 (homed on node 0).
uint64_t join_value(uint64_t page, uint64_t generation) { return page * 0x9E3779B97F4A7C15ull ^ generation; }

uint64_t join_check(Cluster& c, uint64_t generation) {
  uint64_t bad = 0;
  for (uint64_t p = 1; p < c.size() / kPage; ++p)
    bad += *c.at<volatile uint64_t>(p * kPage + 64) != join_value(p, generation);
  return bad;
}

void join_fill(Cluster& c, uint64_t generation) {
  for (uint64_t p = 1; p < c.size() / kPage; ++p) *c.at<volatile uint64_t>(p * kPage + 64) = join_value(p, generation);
}

// Moves the home of every run of pages homed here in [first, end) to `to`.
uint64_t join_rehome(Cluster& c, uint64_t first, uint64_t end, uint16_t to) {
  return rehome_runs(c, first, end, [to] { return to; });
}

void join_hold(Cluster& c, bool hold) {
  char* err = nullptr;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (aggvm_dsm_hold_admissions(c.dsm(), hold, &err) != 0) {  // EBUSY while a node joins
    if (Clock::now() > deadline) die(1, fmt::format("hold admissions: {}", err));
    aggvm_dsm_free_error(err);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

int join(Cluster& c, const Options&) {
  if (c.nodes() != 3) die(2, "join: 3 nodes, node 2 late");
  auto* phase = c.at<std::atomic<uint64_t>>(0);
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  auto wait_phase = [&](uint64_t at_least) {
    while (phase->load() < at_least) {
      if (Clock::now() > deadline) die(1, fmt::format("phase {} never came (at {})", at_least, phase->load()));
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  };
  const uint64_t pages = c.size() / kPage;
  AggvmDsmNodeStats s{};
  if (c.self() == 0) {
    join_hold(c, true);
    join_fill(c, 1);
    const uint64_t early = join_rehome(c, pages / 4, pages / 2, 1);  // the joiner's configuration says node 0
    join_hold(c, false);
    phase->store(1);
    std::printf("join: node 0 wrote generation 1, moved %lu of its homes to node 1 before the join\n",
                static_cast<unsigned long>(early));
    wait_phase(2);  // node 2 joined, checked generation 1 and wrote generation 2
    join_hold(c, true);
    const uint64_t to_joiner = join_rehome(c, 1, pages / 4, 2);
    join_hold(c, false);
    phase->store(3);
    while (!aggvm_dsm_peer_left(c.dsm(), 1)) {  // node 1 moves its homes to node 2 and leaves
      if (Clock::now() > deadline) die(1, "node 1 did not leave");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    uint64_t bad = join_check(c, 2);
    phase->store(4);
    wait_phase(5);  // node 2 moved homes back here, node 1 gone
    bad += join_check(c, 2);
    aggvm_dsm_node_stats(c.dsm(), &s);
    std::printf("result: join node=0 moved_to_joiner=%lu redirects=%lu bad=%lu status=%s\n",
                static_cast<unsigned long>(to_joiner), static_cast<unsigned long>(s.redirects),
                static_cast<unsigned long>(bad), bad ? "fail" : "pass");
    phase->store(6);
    return bad ? 1 : 0;
  }
  if (c.self() == 1) {
    wait_phase(3);
    char* err = nullptr;
    if (aggvm_dsm_drop_copies(c.dsm(), &err) != 0) die(1, fmt::format("drop_copies: {}", err));
    const uint64_t moved = join_rehome(c, 1, pages, 2);
    if (aggvm_dsm_leave(c.dsm(), &err) != 0) die(1, fmt::format("leave: {}", err));
    c.left();
    std::printf("result: join node=1 moved_to_joiner=%lu left=1 status=pass\n", static_cast<unsigned long>(moved));
    return 0;
  }
  // Node 2, joined: its configuration says node 0 homes [pages/4, pages/2);
  // node 1 does, since before the join.
  const uint64_t bad = (wait_phase(1), join_check(c, 1));
  join_fill(c, 2);
  phase->store(2);
  wait_phase(4);
  // Node 1 has left: a move of homes now must not wait for it.
  const uint64_t back = join_rehome(c, pages / 2, pages, 0);
  std::printf("join: node 2 moved %lu homes to node 0 after node 1 left\n", static_cast<unsigned long>(back));
  phase->store(5);
  wait_phase(6);
  aggvm_dsm_node_stats(c.dsm(), &s);
  std::printf("result: join node=2 checked=%lu bad=%lu rehomed_in=%lu status=%s\n",
              static_cast<unsigned long>(pages - 1), static_cast<unsigned long>(bad),
              static_cast<unsigned long>(s.rehomed_in_pages), bad ? "fail" : "pass");
  return bad ? 1 : 0;
}

// ---- litmus tests: store buffering and message passing -----------------

// Instances are spread over 16 pages per variable so that each round
// interleaves the two hosts at many points.
constexpr uint64_t kLitmusPages = 16;
uint64_t litmus_slot(uint64_t base, uint64_t k) {
  return base + (k % kLitmusPages) * kPage + (k / kLitmusPages) * 64;
}

int litmus(Cluster& c, const Options& o, bool store_buffering) {
  if (c.nodes() < 2) die(2, "litmus needs two nodes");
  const uint64_t batch = kLitmusPages * (kPage / 64);  // 1024 instances per round
  const uint64_t rounds = (o.iterations + batch - 1) / batch;
  // x in node 0's slice, y in node 1's: each variable homed on a different host.
  const uint64_t slice = (c.size() / c.nodes()) & ~(kPage - 1);
  const uint64_t xs = 64 * kPage, ys = slice + 64 * kPage;
  const uint64_t results = slice + 256 * kPage;  // r values of node 1, read by node 0
  auto* go = c.at<std::atomic<uint64_t>>(slice + 255 * kPage);  // rounds node 1 has started
  uint64_t forbidden = 0, seen[4] = {0, 0, 0, 0};
  std::vector<uint8_t> mine(batch);
  uint64_t gen = 0;
  for (uint64_t round = 0; round < rounds; ++round) {
    if (c.self() == 0)
      for (uint64_t k = 0; k < batch; ++k) {
        c.at<std::atomic<uint64_t>>(litmus_slot(xs, k))->store(0);
        c.at<std::atomic<uint64_t>>(litmus_slot(ys, k))->store(0);
      }
    c.barrier(++gen);
    // Start together: the barrier lets node 0 (its counter's home) go
    // first, and it would finish its round before node 1 left, so the
    // hosts' instances would never overlap (SB showed 01 only).  Node 0
    // waits for node 1's go, one fault away.
    if (c.self() == 1) go->store(round + 1);
    if (c.self() == 0) {
      const auto deadline = Clock::now() + std::chrono::seconds(60);
      while (go->load() < round + 1)
        if (Clock::now() > deadline) die(1, "litmus start timed out");
    }
    if (c.self() <= 1) {
      for (uint64_t k = 0; k < batch; ++k) {
        auto* x = c.at<std::atomic<uint64_t>>(litmus_slot(xs, k));
        auto* y = c.at<std::atomic<uint64_t>>(litmus_slot(ys, k));
        if (store_buffering) {  // node 0: x=1; r=y   node 1: y=1; r=x
          (c.self() == 0 ? x : y)->store(1, std::memory_order_seq_cst);
          mine[k] = static_cast<uint8_t>((c.self() == 0 ? y : x)->load(std::memory_order_seq_cst));
        } else if (c.self() == 0) {  // node 0: x=1 (data); y=1 (flag)
          x->store(1, std::memory_order_release);
          y->store(1, std::memory_order_release);
        } else {  // node 1: r1=flag; r2=data
          const uint64_t flag = y->load(std::memory_order_acquire);
          const uint64_t data = x->load(std::memory_order_acquire);
          mine[k] = static_cast<uint8_t>(flag << 1 | data);
        }
      }
      if (c.self() == 1) std::memcpy(c.at<uint8_t>(results), mine.data(), batch);
    }
    c.barrier(++gen);
    if (c.self() == 0) {
      const uint8_t* theirs = c.at<uint8_t>(results);
      for (uint64_t k = 0; k < batch && round * batch + k < o.iterations; ++k) {
        if (store_buffering) {
          const int outcome = mine[k] << 1 | theirs[k];
          seen[outcome]++;
          if (outcome == 0) ++forbidden;  // r0 == 0 && r1 == 0
        } else {
          seen[theirs[k] & 3]++;
          if (theirs[k] == 2) ++forbidden;  // flag seen, data not
        }
      }
    }
  }
  c.barrier(++gen);
  if (c.self() != 0) return 0;
  std::printf("result: litmus=%s iterations=%lu outcomes=[00:%lu 01:%lu 10:%lu 11:%lu] forbidden=%lu status=%s\n",
              store_buffering ? "sb" : "mp", o.iterations, seen[0], seen[1], seen[2], seen[3], forbidden,
              forbidden == 0 ? "pass" : "fail");
  return forbidden == 0 ? 0 : 1;
}

// ---- aggregation: more memory than one node may hold ---------------------

uint64_t resident_pages_of(Cluster& c) {
  std::vector<unsigned char> vec(c.size() / kPage);
  if (mincore(c.at<void>(0), c.size(), vec.data()) != 0) return 0;
  uint64_t n = 0;
  for (unsigned char v : vec) n += v & 1;
  return n;
}

int aggregate(Cluster& c, const Options& o) {
  const uint64_t pages = c.size() / kPage;
  const uint64_t cap_pages = (o.cap_mib << 20) / kPage;
  // The kernel's view, sampled while pages come and go.  A scan is not
  // atomic (it may see a page before it is dropped and its replacement
  // after it is installed), so it is reported, and the exact checks are
  // the engine's own peak and the kernel's count at quiescent points.
  std::atomic<bool> done{false};
  std::atomic<uint64_t> sampled{0};
  std::thread sampler([&] {
    while (!done) {
      sampled = std::max<uint64_t>(sampled, resident_pages_of(c));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  auto pattern = [](uint64_t page, uint64_t word) { return (page * 0x9e3779b97f4a7c15ull) ^ word; };
  // Each node writes a third of the pages, spread over every home.
  for (uint64_t p = 8 + static_cast<uint64_t>(c.self()); p < pages; p += static_cast<uint64_t>(c.nodes())) {
    auto* w = c.at<uint64_t>(p * kPage);
    for (uint64_t k = 0; k < kPage / 8; k += 64) w[k] = pattern(p, k);
  }
  c.barrier(1);
  uint64_t quiescent = resident_pages_of(c);
  uint64_t bad = 0;
  for (uint64_t p = 8; p < pages; ++p) {
    auto* w = c.at<uint64_t>(p * kPage);
    for (uint64_t k = 0; k < kPage / 8; k += 64)
      if (w[k] != pattern(p, k)) ++bad;
  }
  done = true;
  sampler.join();
  quiescent = std::max(quiescent, resident_pages_of(c));
  c.barrier(2);
  AggvmDsmNodeStats s{};
  aggvm_dsm_node_stats(c.dsm(), &s);
  const bool ok = bad == 0 && s.resident_peak_pages <= cap_pages && quiescent <= cap_pages;
  std::printf("result: aggregate node=%d region_pages=%lu cap_pages=%lu peak_resident_pages=%lu "
              "kernel_resident_pages=%lu kernel_sampled_max=%lu bad_words=%lu writebacks=%lu evictions=%lu "
              "status=%s\n",
              c.self(), pages, cap_pages, s.resident_peak_pages, quiescent, sampled.load(), bad, s.writebacks,
              s.evictions, ok ? "pass" : "fail");
  return ok ? 0 : 1;
}

// ---- pattern pages: fetch and peek --------------------------------------

// The word a pattern test writes at word `word` of page `page` in `round`.
uint64_t round_pattern(uint64_t page, uint64_t word, uint64_t round) {
  return (page * 0x9e3779b97f4a7c15ull) ^ word ^ (round << 56);
}

// Writes round's pattern to every 64th word of each page of [first, end)
// for which mine(page) holds.
template <typename Mine>
void fill_pattern(Cluster& c, uint64_t first, uint64_t end, uint64_t round, Mine mine) {
  for (uint64_t p = first; p < end; ++p) {
    if (!mine(p)) continue;
    auto* w = c.at<uint64_t>(p * kPage);
    for (uint64_t k = 0; k < kPage / 8; k += 64) w[k] = round_pattern(p, k, round);
  }
}

// Words of pages [first, end) that do not hold round_of(page)'s pattern.
template <typename RoundOf>
uint64_t bad_pattern_words(Cluster& c, uint64_t first, uint64_t end, RoundOf round_of) {
  uint64_t bad = 0;
  for (uint64_t p = first; p < end; ++p) {
    const auto* w = c.at<uint64_t>(p * kPage);
    for (uint64_t k = 0; k < kPage / 8; k += 64) bad += w[k] != round_pattern(p, k, round_of(p));
  }
  return bad;
}

// Pages [first, end) of one parity, a one-page range each, as a device's
// scattered buffers come to the *_ranges calls.
std::vector<AggvmDsmRange> every_other_page(uint64_t first, uint64_t end, uint64_t parity) {
  std::vector<AggvmDsmRange> ranges;
  for (uint64_t p = first; p < end; ++p)
    if (p % 2 == parity) ranges.push_back({.gpa = p * kPage, .size = kPage});
  return ranges;
}

// ---- fetch: pages brought here ahead of use, without faults ---------------
//
// Node 1 writes every page; node 0 fetches them all for reading and must
// then read them without a fault while node 1 keeps its copies.  Node 0
// then releases the range (aggvm_dsm_release()): the copies it fetched of
// node 1's pages go, the pages a thread of node 0 faulted in before the
// fetch stay, and reading every page again brings the released ones back
// with their content.  Last, node 0 fetches them for writing, a page per
// range (aggvm_dsm_fetch_ranges(), as a device's buffers come: the odd
// pages, then the even ones), and must write them without a fault, and
// node 1 reads node 0's values back.
int fetch(Cluster& c, const Options&) {
  constexpr uint64_t kFirst = 8;  // pages 0-7 hold the barrier's counter
  const uint64_t pages = c.size() / kPage;
  auto fill = [&](uint64_t round) { fill_pattern(c, kFirst, pages, round, [](uint64_t) { return true; }); };
  auto bad_words = [&](uint64_t round) {
    return bad_pattern_words(c, kFirst, pages, [round](uint64_t) { return round; });
  };
  auto stats = [&] { return node_stats(c); };
  auto faults = [&] { return fault_count(c); };
  auto fetched = [&] { return stats().fetched_pages; };
  char* err = nullptr;
  auto fetch_all = [&](int write) {
    if (aggvm_dsm_fetch(c.dsm(), kFirst * kPage, (pages - kFirst) * kPage, write, &err) != 0)
      die(1, fmt::format("fetch (write={}): {}", write, err));
  };
  auto fetch_scattered = [&](int write) {  // the pages it asked for
    uint64_t asked = 0;
    for (uint64_t parity : {1u, 0u}) {
      const std::vector<AggvmDsmRange> ranges = every_other_page(kFirst, pages, parity);
      uint64_t n = 0;
      if (aggvm_dsm_fetch_ranges(c.dsm(), ranges.data(), ranges.size(), write, &n, &err) != 0)
        die(1, fmt::format("fetch_ranges (write={}): {}", write, err));
      asked += n;
    }
    return asked;
  };
  if (c.self() == 1) {
    fill(1);
    c.barrier(1);
    c.barrier(2);  // node 0 fetched everything for reading
    // The barrier's own fault is counted by the service thread just after
    // it wakes this one: let the count settle before the window opens.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const uint64_t f0 = faults();
    const uint64_t bad = bad_words(1);
    const uint64_t refaults = faults() - f0;
    c.barrier(3);
    c.barrier(4);  // node 0 fetched everything for writing and wrote it
    const auto t0 = Clock::now();
    const uint64_t bad_after = bad_words(2);
    const double read_back_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    c.barrier(5);  // node 0 serves the read-back until here
    const bool ok = bad == 0 && refaults == 0 && bad_after == 0;
    std::printf("result: fetch node=1 bad_words=%lu faults_reading_own_copies=%lu bad_words_after_write=%lu "
                "read_back_ms=%.1f status=%s\n",
                bad, refaults, bad_after, read_back_ms, ok ? "pass" : "fail");
    return ok ? 0 : 1;
  }
  if (c.self() != 0) return 0;
  c.barrier(1);
  // The last pages homed on node 1, faulted in by this thread before the
  // fetch: a release must leave them (they are in use here).
  constexpr uint64_t kInUse = 4;
  std::vector<uint64_t> in_use;
  for (uint64_t p = pages - 1; p >= kFirst && in_use.size() < kInUse; --p)
    if (aggvm_dsm_home_of(c.dsm(), p * kPage) == 1) in_use.push_back(p);
  uint64_t in_use_sum = 0;
  for (uint64_t p : in_use) in_use_sum += *c.at<volatile uint64_t>(p * kPage);
  // A range beyond the region is refused, with nothing asked for.
  const int einval = aggvm_dsm_fetch(c.dsm(), 0, c.size() + kPage, 0, &err);
  std::printf("fetch: beyond the region: %d %s\n", einval, err ? err : "");
  aggvm_dsm_free_error(err);
  err = nullptr;
  const uint64_t fetched0 = fetched();
  const auto t0 = Clock::now();
  fetch_all(0);
  const double read_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  const uint64_t fetched_read = fetched() - fetched0;
  uint64_t f0 = faults();
  const uint64_t bad = bad_words(1);
  const uint64_t read_faults = faults() - f0;
  // Everything is mapped here now: fetching again asks for nothing.
  const uint64_t fetched1 = fetched();
  fetch_all(0);
  const uint64_t refetched = fetched() - fetched1;
  // The page table says so too, for scattered pages in any order (read
  // in windows of host pages): here to read, not to write.
  std::vector<AggvmDsmRange> scattered = every_other_page(kFirst, pages, 1);
  const std::vector<AggvmDsmRange> even = every_other_page(kFirst, pages, 0);
  scattered.insert(scattered.begin(), even.rbegin(), even.rend());
  const int here_read = aggvm_dsm_ranges_here(c.dsm(), scattered.data(), scattered.size(), 0, nullptr);
  const int here_write = aggvm_dsm_ranges_here(c.dsm(), scattered.data(), scattered.size(), 1, nullptr);

  // Release: what the fetch brought of node 1's pages goes, the rest stays.
  auto release_all = [&] {
    const uint64_t before = stats().released_pages;
    if (aggvm_dsm_release(c.dsm(), kFirst * kPage, (pages - kFirst) * kPage, &err) != 0)
      die(1, fmt::format("release: {}", err));
    return stats().released_pages - before;
  };
  const uint64_t resident_before = stats().resident_pages;
  const uint64_t released = release_all();
  const uint64_t resident_after = stats().resident_pages;
  f0 = faults();
  for (uint64_t p : in_use) in_use_sum += *c.at<volatile uint64_t>(p * kPage);
  const uint64_t in_use_faults = faults() - f0;
  f0 = faults();
  const uint64_t bad_after_release = bad_words(1);
  // The service thread counts a fault just after it wakes the faulting
  // thread: let the last one's count land.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const uint64_t refaults_after_release = faults() - f0;
  // Faulted back by this thread: in use now, a release leaves them.
  const uint64_t released_again = release_all();
  const bool release_ok = released > 0 && released + in_use.size() <= fetched_read &&
                          resident_before - resident_after == released && in_use.size() == kInUse &&
                          in_use_faults == 0 && bad_after_release == 0 && refaults_after_release >= released &&
                          released_again == 0;
  std::printf("fetch: released=%lu resident_before=%lu resident_after=%lu in_use_faults=%lu "
              "bad_words_after_release=%lu faults_after_release=%lu released_again=%lu (sum %lu)\n",
              released, resident_before, resident_after, in_use_faults, bad_after_release,
              refaults_after_release, released_again, in_use_sum);
  c.barrier(2);
  c.barrier(3);  // node 1 read its own copies
  // One bad range among good ones: refused whole, nothing asked for.
  const std::vector<AggvmDsmRange> bad_ranges = {{.gpa = kFirst * kPage, .size = kPage},
                                                  {.gpa = kFirst * kPage + 1, .size = kPage}};
  const uint64_t fetched2 = fetched();
  uint64_t asked_bad = 1;
  const int einval_ranges =
      aggvm_dsm_fetch_ranges(c.dsm(), bad_ranges.data(), bad_ranges.size(), 1, &asked_bad, &err);
  std::printf("fetch: an unaligned range among good ones: %d %s\n", einval_ranges, err ? err : "");
  aggvm_dsm_free_error(err);
  err = nullptr;
  const bool refused_whole = einval_ranges == -EINVAL && fetched() == fetched2 && asked_bad == 1;
  const auto t1 = Clock::now();
  const uint64_t asked_write = fetch_scattered(1);
  const double write_ms = std::chrono::duration<double, std::milli>(Clock::now() - t1).count();
  f0 = faults();
  fill(2);
  const uint64_t write_faults = faults() - f0;
  c.barrier(4);
  // Node 1 reads every page back from here, about 16,000 faults (3 s on a
  // loaded 2-core machine): node 0 must not stop meanwhile, or its stop
  // waits for node 1's goodbye no longer than the peer timeout.
  c.barrier(5);
  const bool ok = einval == -EINVAL && refused_whole && asked_write > 0 && fetched_read >= pages / 2 && bad == 0 &&
                  read_faults == 0 && refetched == 0 && here_read == 1 && here_write == 0 && write_faults == 0 &&
                  release_ok;
  std::printf("result: fetch node=0 pages=%lu fetched_for_reading=%lu read_fetch_ms=%.1f read_mib_s=%.1f "
              "faults_after_read_fetch=%lu bad_words=%lu asked_again=%lu here=%d,%d write_fetch_ms=%.1f "
              "faults_after_write_fetch=%lu einval=%d release=%s status=%s\n",
              pages - kFirst, fetched_read, read_ms, (pages - kFirst) * kPage / 1048576.0 / (read_ms / 1000.0),
              read_faults, bad, refetched, here_read, here_write, write_ms, write_faults, einval == -EINVAL && refused_whole,
              release_ok ? "ok" : "wrong",
              ok ? "pass" : "fail");
  return ok ? 0 : 1;
}

// ---- read: guest pages copied into a private buffer -----------------------
//
// Three nodes; the workers write every page (homed on all three) and keep
// them Modified.  Node 0 copies them into a buffer, every other page a
// range, in reverse, as a device's scattered buffers come: the data must
// be right, nothing mapped on node 0, no snapshot left, and the workers
// must write their next round without a single fault (their copies were
// never taken).  Node 0 then reads that round the same way, plus a range
// it holds itself (read from its own mapping).  A bad range or a buffer of
// the wrong size is refused whole.
int read_into_buffer(Cluster& c, const Options&) {
  constexpr uint64_t kFirst = 8;  // pages 0-7 hold the barrier's counter
  const uint64_t pages = c.size() / kPage;
  auto writer = [&](uint64_t page) { return static_cast<int>(1 + page % (c.nodes() - 1)); };
  auto stats = [&] { return node_stats(c); };
  char* err = nullptr;
  if (c.self() != 0) {
    fill_pattern(c, kFirst, pages, 1, [&](uint64_t p) { return writer(p) == c.self(); });
    c.barrier(1);
    c.barrier(2);  // node 0 read round 1
    // The service thread counts a fault just after it wakes the faulting
    // thread: each count waits for the barrier's last one to land.
    auto settled_faults = [&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      return fault_count(c);
    };
    const uint64_t f0 = settled_faults();
    fill_pattern(c, kFirst, pages, 2, [&](uint64_t p) { return writer(p) == c.self(); });
    const uint64_t write_faults = settled_faults() - f0;
    c.barrier(3);
    c.barrier(4);  // node 0 read round 2
    std::printf("result: read node=%d faults_writing_after_read=%lu status=%s\n", c.self(), write_faults,
                write_faults == 0 ? "pass" : "fail");
    return write_faults == 0 ? 0 : 1;
  }
  std::vector<AggvmDsmRange> ranges = every_other_page(kFirst, pages, 1);
  const std::vector<AggvmDsmRange> even = every_other_page(kFirst, pages, 0);
  ranges.insert(ranges.end(), even.begin(), even.end());
  std::ranges::reverse(ranges);
  std::vector<std::byte> buf(ranges.size() * kPage);
  // Words of buf that do not hold round's pattern of the page it came from.
  auto bad_words = [&](uint64_t round) {
    uint64_t bad = 0;
    for (size_t i = 0; i < ranges.size(); ++i) {
      const uint64_t p = ranges[i].gpa / kPage;
      const auto* w = reinterpret_cast<const uint64_t*>(buf.data() + i * kPage);
      for (uint64_t k = 0; k < kPage / 8; k += 64) bad += w[k] != round_pattern(p, k, round);
    }
    return bad;
  };
  auto read = [&] {
    uint64_t asked = 0;
    if (aggvm_dsm_read_ranges(c.dsm(), ranges.data(), ranges.size(), buf.data(), buf.size(), &asked, &err) != 0)
      die(1, fmt::format("read_ranges: {}", err));
    return asked;
  };
  c.barrier(1);
  const std::vector<AggvmDsmRange> bad_range = {{.gpa = kFirst * kPage, .size = kPage},
                                                 {.gpa = c.size(), .size = kPage}};
  const int einval_range =
      aggvm_dsm_read_ranges(c.dsm(), bad_range.data(), bad_range.size(), buf.data(), 2 * kPage, nullptr, &err);
  aggvm_dsm_free_error(std::exchange(err, nullptr));
  const int einval_size =
      aggvm_dsm_read_ranges(c.dsm(), ranges.data(), ranges.size(), buf.data(), buf.size() - kPage, nullptr, &err);
  aggvm_dsm_free_error(std::exchange(err, nullptr));
  const AggvmDsmNodeStats s0 = stats();
  const auto t0 = Clock::now();
  const uint64_t asked = read();
  const double read_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  const AggvmDsmNodeStats s1 = stats();
  const uint64_t bad1 = bad_words(1);
  const uint64_t copied = s1.copied_pages - s0.copied_pages;
  // Node 0 holds at most the barrier's pages: none of those it read.
  const bool nothing_kept = s1.resident_pages < kFirst && s1.snapshot_pages == 0 &&
                            s1.fetched_pages == s0.fetched_pages;
  c.barrier(2);
  c.barrier(3);  // the workers wrote round 2
  // A page node 0 holds (a thread of it read it) is read from its mapping.
  const uint64_t held = ranges.front().gpa / kPage;
  const uint64_t bad_held = bad_pattern_words(c, held, held + 1, [](uint64_t) { return 2u; });
  // Which ranges are here, from the page table alone: the page it read,
  // not the others; a bad range refused.
  const int held_here = aggvm_dsm_ranges_here(c.dsm(), ranges.data(), 1, 0, nullptr);
  const int all_here = aggvm_dsm_ranges_here(c.dsm(), ranges.data(), ranges.size(), 0, nullptr);
  const int bad_here = aggvm_dsm_ranges_here(c.dsm(), bad_range.data(), bad_range.size(), 0, &err);
  aggvm_dsm_free_error(std::exchange(err, nullptr));
  const AggvmDsmNodeStats s2 = stats();
  const uint64_t asked2 = read();
  const uint64_t bad2 = bad_words(2);
  const AggvmDsmNodeStats s3 = stats();
  c.barrier(4);
  const bool ok = einval_range == -EINVAL && einval_size == -EINVAL && asked == ranges.size() &&
                  copied == asked && bad1 == 0 && nothing_kept && bad_held == 0 && asked2 == ranges.size() - 1 &&
                  s3.copied_pages - s2.copied_pages == asked2 && bad2 == 0 && held_here == 1 && all_here == 0 &&
                  bad_here == -EINVAL;
  std::printf("result: read node=0 pages=%zu asked=%lu copied=%lu read_ms=%.1f read_mib_s=%.1f bad_words=%lu "
              "nothing_kept=%d (resident %lu -> %lu, snapshots %lu, fetched %lu -> %lu) asked_again=%lu bad_words_round2=%lu "
              "here=%d,%d,%d einval=%d status=%s\n",
              ranges.size(), asked, copied, read_ms, ranges.size() * kPage / 1048576.0 / (read_ms / 1000.0), bad1,
              nothing_kept, s0.resident_pages, s1.resident_pages, s1.snapshot_pages, s0.fetched_pages,
              s1.fetched_pages, asked2, bad2, held_here, all_here, bad_here, einval_range == -EINVAL && einval_size == -EINVAL, ok ? "pass" : "fail");
  return ok ? 0 : 1;
}

// ---- peek: snapshots of a region nobody writes meanwhile -----------------
//
// Three nodes (or more; with two, node 1 writes every page).  Nodes 1 and
// 2 write alternate pages, so that node 0 finds
// every kind of page a snapshot read meets: homed on node 0 and owned by a
// worker, homed on a worker and owned by it, homed on one worker and owned
// by the other.  Node 0 peeks the whole region (aggvm_dsm_peek()), reads
// it without a fault, and releases it with no eviction sent.  The workers
// then write new values, which node 0 must read (no stale snapshot); node
// 0 peeks again and writes some pages itself (a write on a snapshot asks
// for the page as usual), and the workers read what node 0 wrote.  The
// first peek and release name the pages scattered, a page per range
// (aggvm_dsm_peek_ranges(), as a device's buffers come), in two calls:
// the odd pages, then the even ones; the second round takes the region
// whole.
int peek(Cluster& c, const Options&) {
  constexpr uint64_t kFirst = 8;     // pages 0-7 hold the barrier's counter
  constexpr uint64_t kWritten = 64;  // pages node 0 writes over its snapshots
  const uint64_t pages = c.size() / kPage;
  auto writer = [&](uint64_t page) { return static_cast<int>(1 + page % (c.nodes() - 1)); };
  auto round_after_node0_wrote = [](uint64_t page) { return page < kFirst + kWritten ? 3u : 2u; };
  auto fill = [&](uint64_t first, uint64_t end, uint64_t round, int who) {
    fill_pattern(c, first, end, round, [&](uint64_t p) { return who < 0 || writer(p) == who; });
  };
  auto bad_words = [&](auto round_of) { return bad_pattern_words(c, kFirst, pages, round_of); };
  auto stats = [&] { return node_stats(c); };
  auto faults = [&] { return fault_count(c); };
  char* err = nullptr;
  auto peek_all = [&] {  // the pages it asked for
    uint64_t asked = 0;
    if (aggvm_dsm_peek(c.dsm(), kFirst * kPage, (pages - kFirst) * kPage, &asked, &err) != 0)
      die(1, fmt::format("peek: {}", err));
    return asked;
  };
  auto release_all = [&] {
    if (aggvm_dsm_release(c.dsm(), kFirst * kPage, (pages - kFirst) * kPage, &err) != 0)
      die(1, fmt::format("release: {}", err));
  };
  // Every other page, a range each, the last first.
  auto scattered = [&](uint64_t parity) {
    std::vector<AggvmDsmRange> ranges = every_other_page(kFirst, pages, parity);
    std::ranges::reverse(ranges);
    return ranges;
  };
  auto peek_scattered = [&] {
    uint64_t asked = 0;
    for (uint64_t parity : {1u, 0u}) {
      const std::vector<AggvmDsmRange> ranges = scattered(parity);
      uint64_t n = 0;
      if (aggvm_dsm_peek_ranges(c.dsm(), ranges.data(), ranges.size(), &n, &err) != 0)
        die(1, fmt::format("peek_ranges: {}", err));
      asked += n;
    }
    return asked;
  };
  auto release_scattered = [&] {
    std::vector<AggvmDsmRange> ranges = scattered(1);
    const std::vector<AggvmDsmRange> even = scattered(0);
    ranges.insert(ranges.end(), even.begin(), even.end());
    if (aggvm_dsm_release_ranges(c.dsm(), ranges.data(), ranges.size(), &err) != 0)
      die(1, fmt::format("release_ranges: {}", err));
  };

  if (c.self() != 0) {
    fill(kFirst, pages, 1, c.self());
    c.barrier(1);
    c.barrier(2);  // node 0 peeked, read and released
    fill(kFirst, pages, 2, c.self());
    c.barrier(3);
    c.barrier(4);  // node 0 peeked again and wrote its pages over its snapshots
    const uint64_t bad = bad_words(round_after_node0_wrote);
    c.barrier(5);
    const AggvmDsmNodeStats s = stats();
    std::printf("result: peek node=%d bad_words=%lu peeks_answered=%lu status=%s\n", c.self(), bad,
                s.peeks_answered, bad == 0 ? "pass" : "fail");
    return bad == 0 ? 0 : 1;
  }
  c.barrier(1);
  // One bad range among good ones: refused whole, nothing asked for.
  const std::vector<AggvmDsmRange> bad_ranges = {{.gpa = kFirst * kPage, .size = kPage},
                                                  {.gpa = c.size(), .size = kPage}};
  uint64_t asked_bad = 0;
  const int einval = aggvm_dsm_peek_ranges(c.dsm(), bad_ranges.data(), bad_ranges.size(), &asked_bad, &err);
  std::printf("peek: a range beyond the region: %d %s\n", einval, err ? err : "");
  aggvm_dsm_free_error(err);
  err = nullptr;
  const AggvmDsmNodeStats s0 = stats();
  const auto t0 = Clock::now();
  const uint64_t asked = peek_scattered();
  const double peek_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  const AggvmDsmNodeStats s1 = stats();
  const uint64_t peeked = s1.peeked_pages - s0.peeked_pages, refused = s1.peeks_refused - s0.peeks_refused;
  const uint64_t page_bytes = s1.bytes_received - s0.bytes_received;  // every page was written: all data
  const double messages_per_page = double(s1.messages_sent + s1.messages_received - s0.messages_sent -
                                          s0.messages_received) / double(pages - kFirst);
  // The service thread counts a fault just after it wakes the faulting
  // thread: each count below waits for the last one to land.
  auto settled_faults = [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return faults();
  };
  uint64_t f0 = settled_faults();
  const uint64_t bad = bad_words([](uint64_t) { return 1u; });
  const uint64_t read_faults = settled_faults() - f0;
  const uint64_t asked_again = peek_all() + stats().peeked_pages - s1.peeked_pages;
  release_scattered();
  const AggvmDsmNodeStats s2 = stats();
  const uint64_t sent_on_release = s2.evictions + s2.writebacks - s1.evictions - s1.writebacks;
  const uint64_t released = s2.released_pages - s1.released_pages;
  c.barrier(2);
  c.barrier(3);  // the workers wrote round 2
  peek_all();
  f0 = settled_faults();
  fill(kFirst, kFirst + kWritten, 3, -1);
  const uint64_t write_faults = settled_faults() - f0;
  const uint64_t bad_after = bad_words(round_after_node0_wrote);
  release_all();
  const AggvmDsmNodeStats s3 = stats();
  c.barrier(4);
  c.barrier(5);  // the workers read node 0's pages back
  const bool ok = einval == -EINVAL && asked_bad == 0 && s0.peeked_pages == 0 &&
                  asked == pages - kFirst && peeked + refused == asked && refused == 0 && page_bytes >= peeked * kPage &&
                  bad == 0 && read_faults == 0 &&
                  asked_again == 0 && released == peeked && sent_on_release == 0 && s2.snapshot_pages == 0 &&
                  write_faults >= kWritten && bad_after == 0 && s3.snapshot_pages == 0;
  std::printf("result: peek node=0 pages=%lu peeked=%lu refused=%lu peek_ms=%.1f peek_mib_s=%.1f "
              "messages_per_page=%.2f page_bytes_received=%lu faults_after_peek=%lu bad_words=%lu asked_again=%lu released=%lu "
              "evictions_sent=%lu snapshots_left=%lu write_faults=%lu bad_words_after_write=%lu einval=%d status=%s\n",
              pages - kFirst, peeked, refused, peek_ms, (pages - kFirst) * kPage / 1048576.0 / (peek_ms / 1000.0),
              messages_per_page, page_bytes, read_faults, bad, asked_again, released, sent_on_release,
              s2.snapshot_pages + s3.snapshot_pages, write_faults, bad_after, einval == -EINVAL, ok ? "pass" : "fail");
  return ok ? 0 : 1;
}

// ---- bench: fault latency and throughput ---------------------------------
//
// Node 1 prints "bench: key=value ..." lines (microseconds, p50 and p99 of
// one sample per page); dsm-bench puts them beside the raw fabric floor
// (dsm-ucx-floor) measured on the same hosts in the same run.

double micros_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

void print_percentiles(const char* key, const std::vector<double>& samples) {
  const auto p = aggvm::bench::percentiles(samples);
  std::printf("bench: %s_p50_us=%.2f %s_p99_us=%.2f samples=%zu\n", key, p.p50, key, p.p99, samples.size());
}

// Node 0 is home and first writer of the pages; node 1 faults on them.
int bench(Cluster& c, const Options& o) {
  constexpr uint16_t kPingChannel = 7;
  const uint64_t n = o.iterations;  // pages per measurement
  const uint64_t read_base = 64 * kPage, write_base = read_base + n * kPage;
  const uint64_t tput_base = write_base + n * kPage;
  const uint64_t tput_pages = 4 * n;
  if (n == 0 || tput_base + tput_pages * kPage > c.size() / 2) die(2, "region too small for the benchmark");
  if (c.self() == 0) {
    for (uint64_t p = 0; p < 2 * n + tput_pages; ++p) *c.at<uint64_t>(read_base + p * kPage) = p + 1;
  }
  c.barrier(1);
  if (c.self() == 1) {
    // The library's own 4 KiB service round trip (its fabric, service
    // threads and wake-ups): not a floor, the raw one is dsm-ucx-floor's.
    std::vector<double> rtt;  // pings are answered by node 0's service handler
    std::vector<std::byte> msg(kPage, std::byte{1});
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t before = g_pongs.load();
      const auto t0 = Clock::now();
      char* err = nullptr;
      if (aggvm_dsm_send_service(c.dsm(), 0, kPingChannel, msg.data(), msg.size(), &err) != 0)
        die(1, fmt::format("ping: {}", err));
      while (g_pongs.load() == before) g_pongs.wait(before);
      rtt.push_back(micros_since(t0));
    }
    print_percentiles("service_rtt", rtt);
    try {
      const auto uffd = aggvm::bench::local_uffd_fault_us(n);
      std::printf("bench: local_uffd_fault_p50_us=%.2f local_uffd_fault_p99_us=%.2f samples=%lu\n", uffd.p50,
                  uffd.p99, static_cast<unsigned long>(n));
      const auto polled = aggvm::bench::local_uffd_fault_us(n, true);
      std::printf("bench: polled_uffd_fault_p50_us=%.2f polled_uffd_fault_p99_us=%.2f samples=%lu\n",
                  polled.p50, polled.p99, static_cast<unsigned long>(n));
    } catch (const std::exception& e) {
      die(1, fmt::format("local userfaultfd floor: {}", e.what()));
    }
    // Remote read faults: the home fetches its own modified page and sends it.
    std::vector<double> rd, wr;
    for (uint64_t i = 0; i < n; ++i) {
      const auto t0 = Clock::now();
      volatile uint64_t v = *c.at<uint64_t>(read_base + i * kPage);
      rd.push_back(micros_since(t0));
      if (v != i + 1) die(1, "read fault returned wrong data");
    }
    print_percentiles("remote_read_fault", rd);
    // Write faults on pages node 1 shares with the home: the home's copy
    // must be invalidated before the write is granted.
    for (uint64_t i = 0; i < n; ++i) (void)*c.at<volatile uint64_t>(write_base + i * kPage);
    for (uint64_t i = 0; i < n; ++i) {
      const auto t0 = Clock::now();
      *c.at<volatile uint64_t>(write_base + i * kPage) = 7;
      wr.push_back(micros_since(t0));
    }
    print_percentiles("write_invalidate_one_sharer", wr);
    // Throughput with 1 and 2 faulting threads on distinct pages.
    double tput[3] = {0, 0, 0};
    uint64_t next = 0;
    for (int threads : {1, 2}) {
      const uint64_t per = tput_pages / 4;
      std::vector<std::thread> ts;
      const auto t0 = Clock::now();
      for (int t = 0; t < threads; ++t)
        ts.emplace_back([&, t, start = next] {
          for (uint64_t p = start + t; p < start + per; p += threads)
            (void)*c.at<volatile uint64_t>(tput_base + p * kPage);
        });
      for (auto& t : ts) t.join();
      tput[threads] = per / (micros_since(t0) / 1e6);
      next += per;
    }
    std::printf("bench: faults_per_s_1_thread=%.0f faults_per_s_2_threads=%.0f\n", tput[1], tput[2]);
    std::printf("bench: done\n");
  }
  c.barrier(2);
  return 0;
}

// ---- endless: work until killed (fault tests) ---------------------------

int endless(Cluster& c, const Options& o) {
  std::vector<std::thread> threads;
  for (int t = 0; t < o.threads; ++t)
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(c.self()) * 64 + t);
      for (uint64_t i = 0;; ++i) {
        c.at<std::atomic<uint64_t>>((8 + rng() % (c.size() / kPage - 8)) * kPage)->fetch_add(1);
        if (i == 1000 && t == 0) {
          std::printf("dsm-worker: node %d working\n", c.self());
          std::fflush(stdout);
        }
      }
    });
  for (auto& th : threads) th.detach();
  std::this_thread::sleep_for(std::chrono::seconds(120));
  die(1, "endless workload was never interrupted");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"dsm-worker: one node of a DSM cluster running a workload"};
  app.add_option("--node", o.node, "this node's id")->required();
  app.add_option("--addresses", o.addresses, "host:port of every node, by id")->required()->delimiter(',');
  app.add_option("--secret-file", o.secret_file, "file holding the cluster secret")->required();
  app.add_option("--cluster", o.cluster, "cluster name");
  app.add_option("--region-mib", o.region_mib, "shared region size");
  app.add_option("--cap-mib", o.cap_mib, "resident cap per node (0: none)");
  app.add_option("--timeout-ms", o.timeout_ms, "peer timeout");
  app.add_option("--mode", o.mode, "torture | sb | mp | aggregate | bench | endless | idle | evacuate | join | fetch | peek | read")->required();
  app.add_option("--ucx-transports", o.ucx_transports, "UCX_TLS for the fabric (default: tcp)");
  app.add_option("--frames", o.frames, "frame protection: sealed (AES-256-GCM, default) | plain (trusted fabric)")
      ->check(CLI::IsMember({"sealed", "plain"}));
  app.add_option("--spin-us", o.spin_us, "microseconds the service thread polls before it sleeps");
  app.add_option("--cpu-latency-us", o.cpu_latency_us,
                 "hold the host's CPU wake-up latency at most this many microseconds while the node runs");
  app.add_option("--threads", o.threads, "faulting threads");
  app.add_option("--ops", o.ops, "operations per thread (torture)");
  app.add_option("--iterations", o.iterations, "litmus iterations; bench: faults per figure");
  app.add_option("--seed", o.seed, "random seed");
  app.add_option("--rehome-ms", o.rehome_ms, "torture: move the home of a run of pages this often (0: never)");
  app.add_option("--late", o.late, "nodes that join the running cluster later")->delimiter(',');
  app.add_option("--start-delay-ms", o.start_delay_ms, "wait this long before connecting");
  CLI11_PARSE(app, argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  int rc = 0;
  {
    Cluster c(o);
    if (o.mode == "torture") rc = torture(c, o);
    else if (o.mode == "sb") rc = litmus(c, o, true);
    else if (o.mode == "mp") rc = litmus(c, o, false);
    else if (o.mode == "aggregate") rc = aggregate(c, o);
    else if (o.mode == "endless") rc = endless(c, o);
    else if (o.mode == "bench") rc = bench(c, o);
    else if (o.mode == "idle") rc = 0;
    else if (o.mode == "evacuate") rc = evacuate(c, o);
    else if (o.mode == "join") rc = join(c, o);
    else if (o.mode == "fetch") rc = fetch(c, o);
    else if (o.mode == "peek") rc = peek(c, o);
    else if (o.mode == "read") rc = read_into_buffer(c, o);
    else die(2, "unknown mode " + o.mode);
    if (!c.has_left()) {
      print_stats(c);
      c.stop();
    }
  }
  std::printf("dsm-worker: node %d done rc=%d\n", o.node, rc);
  return rc;
}
