// Failure handling of libaggvm-dsm across hosts: every wait is bounded,
// calls in flight end at once, the failure names the peer to blame, and a
// failed node poisons the memory it lost instead of handing out zeros.
// Each host (network namespace) runs one dsm-probe process.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "harness.h"

namespace {

using namespace std::chrono_literals;
using aggvm::harness::Cluster;
using aggvm::harness::ClusterOptions;
using aggvm::harness::Process;

constexpr int kTimeoutMs = 2000;

std::string probe_path() {
  const char* p = std::getenv("DSM_PROBE");
  return p ? p : "tests/dsm/dsm-probe";
}

class Failure : public ::testing::Test {
 public:
  void SetUp() override {
    if (auto why = aggvm::harness::unavailable_reason()) GTEST_SKIP() << "no network namespaces: " << *why;
  }

  std::vector<Process> start(Cluster& c, const std::string& scenario, int timeout_ms = kTimeoutMs,
                             std::vector<int> wait_ready = {}) {
    std::string addresses;
    for (int i = 0; i < c.size(); ++i)
      addresses += (i ? "," : "") + c.host(i).address() + ":" + std::to_string(17500 + i);
    const auto secret = c.log_dir() / "secret";
    std::ofstream(secret) << "correct horse battery staple, 32b";
    std::vector<Process> procs;
    for (int i = 0; i < c.size(); ++i)
      procs.push_back(c.host(i).spawn({probe_path(), std::to_string(i), addresses, secret.string(),
                                       c.log_dir().string(), std::to_string(timeout_ms), scenario}));
    if (wait_ready.empty())
      for (int i = 0; i < c.size(); ++i) wait_ready.push_back(i);
    for (int i : wait_ready) EXPECT_TRUE(procs[i].wait_for_line("ready", 60s)) << procs[i].log();
    return procs;
  }

  static void go(Cluster& c, const std::string& name = "go") { std::ofstream(c.log_dir() / name) << "1"; }

  // The line "result: <prefix>..." of p, waiting for it.
  static std::string result(Process& p, const std::string& prefix, std::chrono::milliseconds timeout = 30s) {
    auto line = p.wait_for_line("^result: " + prefix, timeout);
    if (line) return *line;
    return "(no result '" + prefix + "': " + aggvm::harness::describe(p.wait(1s)) + ")\n" + p.log();
  }

  // The number after "key=" in line, or -1000000.
  static long field(const std::string& line, const std::string& key) {
    std::smatch m;
    std::regex re("(^| )" + key + "=(-?[0-9]+)");
    return std::regex_search(line, m, re) ? std::stol(m[2]) : -1000000;
  }
};

// A peer that never reaches the stop barrier (SIGSTOPped) fails it within
// the timeout, naming that node, on every node that did reach it.
TEST_F(Failure, StopBarrierTimesOutNamingTheSilentPeer) {
  Cluster c(ClusterOptions{.hosts = 3, .name = "stopbar"});
  auto procs = start(c, "stop");
  procs[1].kill(SIGSTOP);
  go(c);
  for (int i : {0, 2}) {
    const std::string r = result(procs[i], "stop", 20s);
    EXPECT_EQ(field(r, "rc"), -ETIMEDOUT) << r;
    EXPECT_LE(field(r, "ms"), kTimeoutMs + 1000) << r;
    EXPECT_GE(field(r, "ms"), kTimeoutMs - 100) << r;
    EXPECT_EQ(field(r, "failed_node"), 1) << r;
    EXPECT_EQ(field(r, "on_failure_node"), 1) << r;
    EXPECT_NE(r.find("node 1 did not say goodbye"), std::string::npos) << r;
  }
  procs[1].kill(SIGKILL);
}

// A peer frozen while nothing is in flight (its socket stays open, no page
// or call waits on it) is noticed by heartbeats within the timeout, plus
// at most a heartbeat interval, and named on every other node.
TEST_F(Failure, FrozenIdlePeerIsNamedWithinTheTimeout) {
  Cluster c(ClusterOptions{.hosts = 3, .name = "frozen"});
  auto procs = start(c, "idle");
  procs[2].kill(SIGSTOP);
  go(c);
  for (int i : {0, 1}) {
    const std::string r = result(procs[i], "idle", 20s);
    EXPECT_EQ(field(r, "failed_node"), 2) << r;
    EXPECT_EQ(field(r, "on_failure_node"), 2) << r;
    EXPECT_EQ(field(r, "on_failure_err"), -ETIMEDOUT) << r;
    // Silence counts from the last frame, at most one interval (timeout / 4)
    // before the SIGSTOP; the check runs every 20 ms.
    EXPECT_LE(field(r, "ms"), kTimeoutMs + kTimeoutMs / 4 + 1000) << r;
    EXPECT_GE(field(r, "ms"), kTimeoutMs - kTimeoutMs / 4 - 100) << r;
    EXPECT_NE(procs[i].log().find("not even a heartbeat"), std::string::npos) << procs[i].log();
  }
  procs[2].kill(SIGKILL);
}

// A call in flight ends at once when its node stops (the timeout is 5 s).
TEST_F(Failure, CallInFlightIsCancelledByStop) {
  Cluster c(ClusterOptions{.hosts = 2, .name = "callstop"});
  auto procs = start(c, "call-stop");
  go(c);
  const std::string r = result(procs[0], "call-stop ");
  EXPECT_EQ(field(r, "rc"), -ECANCELED) << r;
  EXPECT_LT(field(r, "ms"), 300 + 1000) << r;
  const std::string again = result(procs[0], "call-stop-again");
  EXPECT_EQ(field(again, "rc"), -ECANCELED) << again;
  EXPECT_LT(field(again, "ms"), 100) << again;
}

// Killing one peer fails the node: the call to another peer in flight ends
// with the failure at once, and on_failure names the killed node.
TEST_F(Failure, KilledPeerCancelsCallsAndIsNamed) {
  Cluster c(ClusterOptions{.hosts = 3, .name = "callfail"});
  auto procs = start(c, "call-fail", 5000);
  go(c);
  std::this_thread::sleep_for(300ms);
  const auto killed_at = std::chrono::steady_clock::now();
  procs[2].kill(SIGKILL);
  const std::string r = result(procs[0], "call-fail ");
  const auto noticed = std::chrono::steady_clock::now() - killed_at;
  EXPECT_EQ(field(r, "rc"), -ECONNRESET) << r;
  EXPECT_LT(noticed, 1000ms) << r;
  const std::string f = result(procs[0], "call-fail failed_node");
  EXPECT_EQ(field(f, "failed_node"), 2) << f;
  EXPECT_EQ(field(f, "on_failure_node"), 2) << f;
  EXPECT_EQ(field(f, "on_failure_err"), -ECONNRESET) << f;
  const std::string again = result(procs[0], "call-fail-again");
  EXPECT_EQ(field(again, "rc"), -ECONNRESET) << again;
  EXPECT_LT(field(again, "ms"), 100) << again;
}

TEST_F(Failure, CancelCallsEndsCallsInFlight) {
  Cluster c(ClusterOptions{.hosts = 2, .name = "callcan"});
  auto procs = start(c, "call-cancel");
  go(c);
  const std::string r = result(procs[0], "call-cancel ");
  EXPECT_EQ(field(r, "rc"), -EINTR) << r;
  EXPECT_LT(field(r, "ms"), 300 + 1000) << r;
  const std::string f = result(procs[0], "call-cancel failed_node");
  EXPECT_EQ(field(f, "failed_node"), -1) << f;
}

// A peer that said goodbye answers nothing new: calls to it end at once.
TEST_F(Failure, CallToLeavingPeerFailsAtOnce) {
  Cluster c(ClusterOptions{.hosts = 2, .name = "callleave"});
  auto procs = start(c, "call-leave");
  go(c);
  const std::string r = result(procs[0], "call-leave ");
  EXPECT_EQ(field(r, "rc"), -ESHUTDOWN) << r;
  EXPECT_LT(field(r, "ms"), 300 + 1000) << r;
  EXPECT_NE(r.find("node 1 is shutting down"), std::string::npos) << r;
  const std::string again = result(procs[0], "call-leave-again");
  EXPECT_EQ(field(again, "rc"), -ESHUTDOWN) << again;
  EXPECT_LT(field(again, "ms"), 100) << again;
  for (auto& p : procs) {
    const auto st = p.wait(20s);
    EXPECT_TRUE(st.exited && st.code == 0) << aggvm::harness::describe(st) << "\n" << p.log();
  }
  EXPECT_NE(procs[0].log().find("node 0 stop rc=0"), std::string::npos) << procs[0].log();
}

// Node 0 holds a Shared copy of a page homed on node 1 and has a reader
// and a writer blocked on node 1's pages when node 1 is killed.  After
// aggvm_dsm_poison_lost the reader gets SIGBUS, a disk write from lost
// memory fails with EFAULT (the file never receives zeros), the Shared
// page still reads its content (or the released writer's own write), the
// writer is let go so that its thread can stop, and so is a thread that
// writes a Shared page only after the poison.  A snapshot (aggvm_dsm_peek)
// is kept, not poisoned, and its writer let go too.
TEST_F(Failure, PoisonLostPagesInsteadOfZeros) {
  Cluster c(ClusterOptions{.hosts = 2, .name = "poison"});
  auto procs = start(c, "poison", 5000, {1});
  go(c, "written");
  ASSERT_TRUE(procs[0].wait_for_line("node 0 ready", 30s)) << procs[0].log();
  procs[1].kill(SIGSTOP);
  go(c);
  ASSERT_TRUE(procs[0].wait_for_line("node 0 blocked", 30s)) << procs[0].log();
  procs[1].kill(SIGKILL);
  const std::string p = result(procs[0], "poison");
  if (field(p, "rc") == -ENOTSUP) GTEST_SKIP() << "kernel without UFFD_FEATURE_POISON: " << p;
  ASSERT_EQ(field(p, "rc"), 0) << p << "\n" << procs[0].log();
  EXPECT_EQ(field(p, "failed_node"), 1) << p;
  const std::string reader = result(procs[0], "reader");
  // BUS_MCEERR_AR where the kernel has CONFIG_MEMORY_FAILURE, BUS_ADRERR otherwise: SIGBUS either way.
  EXPECT_TRUE(std::regex_search(reader, std::regex("done=1 saw=sigbus code=BUS_(MCEERR_AR|ADRERR)"))) << reader;
  const std::string size = result(procs[0], "file");  // printed after the writes
  const std::string log = procs[0].log();
  std::regex pw("result: pwrite page=[0-9]+ rc=([-0-9]+) errno=([A-Z0-9]+)");
  int writes = 0;
  for (std::sregex_iterator it(log.begin(), log.end(), pw), end; it != end; ++it, ++writes) {
    EXPECT_EQ((*it)[1], "-1") << it->str();
    EXPECT_EQ((*it)[2], "EFAULT") << it->str();
  }
  EXPECT_EQ(writes, 3) << log;
  EXPECT_EQ(field(size, "size"), 0) << log;
  EXPECT_NE(result(procs[0], "read untouched").find("sigbus code=BUS_"), std::string::npos) << log;
  const std::string shared = result(procs[0], "shared");
  EXPECT_EQ(field(shared, "first"), 0x5a) << shared;
  EXPECT_TRUE(std::regex_search(shared, std::regex("now value=(90|17)$"))) << shared;  // 0x5a, or 0x11 written
  EXPECT_EQ(field(result(procs[0], "writer"), "done"), 1) << log;
  // A write to another Shared page after the poison goes through too.
  const std::string later = result(procs[0], "late writer");
  EXPECT_EQ(field(later, "first"), 0x7c) << later;
  EXPECT_EQ(field(later, "done"), 1) << later;
  // A snapshot node 0 peeked is kept (its content read while nobody wrote),
  // and a writer of it is let go.
  EXPECT_EQ(result(procs[0], "snapshot").find("result: snapshot value=141"), 0u) << log;
  EXPECT_EQ(field(result(procs[0], "snapshot writer"), "done"), 1) << log;
  const auto st = procs[0].wait(20s);
  EXPECT_TRUE(st.exited && st.code == 0) << aggvm::harness::describe(st) << "\n" << log;
}

}  // namespace
