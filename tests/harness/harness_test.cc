// Tests of the cluster harness: reachability, cut-off, process control,
// teardown (explicit and after SIGKILL), bounded waits.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <thread>

#include "harness.h"
#include "internal/command.h"
#include "internal/fd.h"
#include "internal/netns.h"
#include "internal/spawn.h"
#include "test_util.h"

namespace aggvm::harness {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::pid_gone;

constexpr int kPort = 7000;

ClusterOptions options(int hosts, const std::string& name) {
  ClusterOptions o;
  o.hosts = hosts;
  o.name = name;
  o.log_dir = testing::test_log_dir(name);
  return o;
}

Process listen_on(Host& host, int port = kPort) {
  Process server = host.spawn({testing::required_env("AGGVM_NET_PROBE"), "listen", std::to_string(port), "60"});
  EXPECT_TRUE(server.wait_for_line("^listening", 5s)) << "host " << host.index() << ": " << server.log();
  return server;
}

// Whether a TCP connection from `from` to `to` gets an answer within `timeout`;
// the probe's output explains either way.
::testing::AssertionResult reaches(Host& from, Host& to, std::chrono::milliseconds timeout = 2000ms) {
  Process client = from.spawn({testing::required_env("AGGVM_NET_PROBE"), "connect", to.address(),
                               std::to_string(kPort), std::to_string(timeout.count())});
  const ExitStatus status = client.wait(timeout + 5s);
  if (status.timed_out) return ::testing::AssertionFailure() << "probe client hung";
  ::testing::AssertionResult result =
      status.exited && status.code == 0 ? ::testing::AssertionSuccess() : ::testing::AssertionFailure();
  return result << "host " << from.index() << " -> host " << to.index() << ": " << client.log();
}

TEST(Cluster, HostsHaveDistinctAddressesAndNamespaces) {
  Cluster cluster(options(3, "addr"));
  ASSERT_EQ(cluster.size(), 3);
  EXPECT_NE(cluster.host(0).address(), cluster.host(1).address());
  EXPECT_NE(cluster.host(0).netns(), cluster.host(2).netns());
  EXPECT_EQ(testing::count_netns_with_prefix(cluster.host(0).netns()), 1);
  // eth0 in the host namespace carries the advertised address.
  const std::string addrs =
      internal::run_checked({internal::tool("ip"), "-o", "-4", "addr", "show", "dev", "eth0"},
                            {.netns = cluster.host(1).netns()});
  EXPECT_NE(addrs.find(cluster.host(1).address() + "/24"), std::string::npos) << addrs;
  EXPECT_THROW(cluster.host(3), std::out_of_range);
}

TEST(Cluster, RejectsBadOptions) {
  EXPECT_THROW(Cluster(options(0, "x")), std::runtime_error);
  EXPECT_THROW(Cluster(options(17, "x")), std::runtime_error);
  EXPECT_THROW(Cluster(options(1, "bad name")), std::runtime_error);
  EXPECT_THROW(Cluster(options(1, "")), std::runtime_error);
}

TEST(Cluster, ThreeHostsReachEachOther) {
  Cluster cluster(options(3, "reach"));
  std::vector<Process> servers;
  for (int i = 0; i < 3; ++i) servers.push_back(listen_on(cluster.host(i)));
  for (int from = 0; from < 3; ++from) {
    for (int to = 0; to < 3; ++to) {
      if (from == to) continue;
      EXPECT_TRUE(reaches(cluster.host(from), cluster.host(to)));
    }
  }
}

TEST(Cluster, CutOffIsolatesOneHostAndRestoreReconnects) {
  if (auto reason = firewall_unavailable_reason()) {
    if (prerequisites_required()) FAIL() << *reason << " (CI=true: a missing prerequisite is an error)";
    GTEST_SKIP() << *reason;
  }
  Cluster cluster(options(3, "cut"));
  std::vector<Process> servers;
  for (int i = 0; i < 3; ++i) servers.push_back(listen_on(cluster.host(i)));
  Host &a = cluster.host(0), &b = cluster.host(1), &cut = cluster.host(2);

  cut.cut_off();
  EXPECT_TRUE(cut.is_cut_off());
  EXPECT_FALSE(reaches(cut, a, 500ms));
  EXPECT_FALSE(reaches(a, cut, 500ms));
  EXPECT_FALSE(reaches(b, cut, 500ms));
  EXPECT_TRUE(reaches(a, b));
  EXPECT_TRUE(reaches(b, a));
  // Loopback inside the cut host still works.
  Process local = cut.spawn({testing::required_env("AGGVM_NET_PROBE"), "connect", "127.0.0.1",
                             std::to_string(kPort), "2000"});
  EXPECT_EQ(local.wait(5s).code, 0) << local.log();

  cut.restore();
  EXPECT_FALSE(cut.is_cut_off());
  EXPECT_TRUE(reaches(cut, a));
  EXPECT_TRUE(reaches(a, cut));
}

TEST(Process, KillInAnotherHostIsReportedByWait) {
  Cluster cluster(options(2, "kill"));
  Process sleeper = cluster.host(1).spawn({"sleep", "100"});
  EXPECT_TRUE(sleeper.running());
  sleeper.kill(SIGTERM);
  const ExitStatus status = sleeper.wait(5s);
  EXPECT_FALSE(status.timed_out);
  EXPECT_FALSE(status.exited);
  EXPECT_EQ(status.signal, SIGTERM);
  EXPECT_FALSE(sleeper.running());
  EXPECT_EQ(sleeper.wait(0ms).signal, SIGTERM) << "the status is remembered";

  Process quitter = cluster.host(0).spawn({"sh", "-c", "exit 3"});
  const ExitStatus quit = quitter.wait(5s);
  EXPECT_TRUE(quit.exited);
  EXPECT_EQ(quit.code, 3);
}

TEST(Process, KillAllEndsEveryProcessOfTheHostOnly) {
  Cluster cluster(options(2, "killall"));
  Process a = cluster.host(0).spawn({"sleep", "100"});
  Process b = cluster.host(0).spawn({"sleep", "100"});
  Process other = cluster.host(1).spawn({"sleep", "100"});
  cluster.host(0).kill_all();
  EXPECT_EQ(a.wait(5s).signal, SIGKILL);
  EXPECT_EQ(b.wait(5s).signal, SIGKILL);
  EXPECT_TRUE(other.running());
}

TEST(Process, SpawnReportsExecFailureAndPassesEnvironment) {
  Cluster cluster(options(1, "spawn"));
  try {
    cluster.host(0).spawn({"/nonexistent/aggvm-no-such-binary"});
    FAIL() << "spawn of a missing binary did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("exec"), std::string::npos) << e.what();
  }
  Process env = cluster.host(0).spawn({"sh", "-c", "echo \"value=$AGGVM_TEST_VALUE\""}, {{"AGGVM_TEST_VALUE", "42"}});
  EXPECT_EQ(env.wait_for_line("^value=", 5s), std::optional<std::string>("value=42"));
  EXPECT_EQ(env.log_path().parent_path(), cluster.log_dir());
}

TEST(Process, WaitForLineAndWaitAreBounded) {
  Cluster cluster(options(1, "wait"));
  Process p = cluster.host(0).spawn({"sh", "-c", "echo hello; sleep 0.3; echo world-42; exec sleep 100"});
  EXPECT_EQ(p.wait_for_line("world-[0-9]+", 5s), std::optional<std::string>("world-42"));
  EXPECT_EQ(p.wait_for_line("^hello$", 0ms), std::optional<std::string>("hello")) << "earlier lines count";

  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(p.wait_for_line("never printed", 300ms), std::nullopt);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 2s);

  start = std::chrono::steady_clock::now();
  const ExitStatus status = p.wait(200ms);
  took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(status.timed_out);
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 2s);
  EXPECT_TRUE(p.running()) << "a timed-out wait leaves the process running";

  // A process that ended without the line: no need to wait for the timeout.
  Process done = cluster.host(0).spawn({"sh", "-c", "echo done"});
  start = std::chrono::steady_clock::now();
  EXPECT_EQ(done.wait_for_line("not there", 10s), std::nullopt);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

// Root-namespace state that a cluster must never touch.
struct RootSnapshot {
  std::string links;
  std::string tables;
  static RootSnapshot take() {
    std::string links = internal::run_checked({internal::tool("ip"), "-o", "link", "show"});
    // Interface counters and flags may change; names are what matters.
    std::string names;
    for (size_t pos = 0; pos < links.size();) {
      const size_t end = links.find('\n', pos);
      const std::string line = links.substr(pos, end - pos);
      const size_t colon = line.find(": ");
      if (colon != std::string::npos) names += line.substr(colon + 2, line.find(':', colon + 2) - colon - 2) + "\n";
      pos = end == std::string::npos ? links.size() : end + 1;
    }
    std::string tables;
    if (!firewall_unavailable_reason()) tables = internal::run_checked({internal::tool("nft"), "list", "tables"});
    return RootSnapshot{names, tables};
  }
};

TEST(Teardown, LeavesNothingBehind) {
  const RootSnapshot before = RootSnapshot::take();
  std::vector<std::string> namespaces;
  std::vector<pid_t> pids;
  int reaper = -1;
  {
    Cluster cluster(options(2, "clean"));
    namespaces = {cluster.switch_netns(), cluster.host(0).netns(), cluster.host(1).netns()};
    reaper = cluster.reaper_pid();
    EXPECT_GT(reaper, 0);
    for (int i = 0; i < 2; ++i) {
      // A background grandchild that no PDEATHSIG covers.
      Process p = cluster.host(i).spawn({"sh", "-c", "sleep 300 & echo bg $!; wait"});
      auto line = p.wait_for_line("^bg [0-9]+$", 5s);
      ASSERT_TRUE(line);
      pids.push_back(p.pid());
      pids.push_back(std::stoi(line->substr(3)));
    }
    if (!firewall_unavailable_reason()) {
      cluster.host(0).cut_off();
      const std::string tables =
          internal::run_checked({internal::tool("nft"), "list", "tables"}, {.netns = cluster.host(0).netns()});
      EXPECT_NE(tables.find("aggvm_cut"), std::string::npos) << tables;
    }
    for (const auto& ns : namespaces) EXPECT_EQ(testing::count_netns_with_prefix(ns), 1) << ns;

    cluster.teardown();
    cluster.teardown();  // idempotent
    EXPECT_THROW(cluster.host(0).spawn({"true"}), std::runtime_error);
    EXPECT_EQ(cluster.reaper_pid(), -1);
  }
  const std::string listed = internal::run_checked({internal::tool("ip"), "netns", "list"});
  for (const auto& ns : namespaces) EXPECT_EQ(listed.find(ns), std::string::npos) << ns << " in:\n" << listed;
  for (pid_t pid : pids) EXPECT_TRUE(pid_gone(pid)) << "pid " << pid;
  EXPECT_TRUE(pid_gone(reaper)) << "reaper " << reaper;
  // Veths, bridge and nft tables lived only in the deleted namespaces; the
  // root namespace looks as before.
  const RootSnapshot after = RootSnapshot::take();
  EXPECT_EQ(after.links, before.links);
  EXPECT_EQ(after.tables, before.tables);
}

// The child side of ReaperCleansUpAfterSigkill: builds a cluster, reports
// what it made, and waits to be killed.
int child_cluster_main() {
  Cluster cluster(options(2, "reap"));
  std::cout << "ns " << cluster.switch_netns() << "\n" << "pid " << cluster.reaper_pid() << "\n";
  for (int i = 0; i < cluster.size(); ++i) {
    Process p = cluster.host(i).spawn({"sh", "-c", "sleep 300 & echo bg $!; wait"});
    auto line = p.wait_for_line("^bg [0-9]+$", 5s);
    if (!line) return 1;
    std::cout << "ns " << cluster.host(i).netns() << "\n"
              << "pid " << p.pid() << "\n"
              << "pid " << line->substr(3) << "\n";
  }
  std::cout << "ready" << std::endl;
  std::this_thread::sleep_for(60s);  // bounded: the test kills us long before
  return 1;
}

TEST(Teardown, ReaperCleansUpAfterSigkill) {
  internal::Pipe out = internal::make_pipe();
  internal::SpawnSpec spec;
  spec.argv = {"/proc/self/exe", "--child-cluster"};
  spec.stdout_fd = out.write.get();
  spec.die_with_parent = true;
  const pid_t child = internal::spawn_child(spec);
  out.write.reset();

  // Read its report (bounded).
  std::string report;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (report.find("ready\n") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{out.read.get(), POLLIN, 0};
    if (::poll(&p, 1, 200) != 1) continue;
    char buf[1024];
    const ssize_t n = ::read(out.read.get(), buf, sizeof buf);
    if (n <= 0) break;
    report.append(buf, static_cast<size_t>(n));
  }
  std::vector<std::string> namespaces;
  std::vector<pid_t> pids;
  for (size_t pos = 0, nl; (nl = report.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    const std::string line = report.substr(pos, nl - pos);
    if (line.rfind("ns ", 0) == 0) namespaces.push_back(line.substr(3));
    if (line.rfind("pid ", 0) == 0) pids.push_back(std::stoi(line.substr(4)));
  }
  ASSERT_NE(report.find("ready\n"), std::string::npos) << "child report:\n" << report;
  ASSERT_EQ(namespaces.size(), 3u);
  ASSERT_EQ(pids.size(), 5u);  // reaper, 2 x (shell, background sleep)
  for (const auto& ns : namespaces) EXPECT_EQ(testing::count_netns_with_prefix(ns), 1) << ns;

  ASSERT_EQ(::kill(child, SIGKILL), 0);
  const auto status = internal::wait_child(child, 5s);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->signal, SIGKILL);

  const auto start = std::chrono::steady_clock::now();
  const bool clean = eventually(
      [&] {
        for (const auto& ns : namespaces)
          if (testing::count_netns_with_prefix(ns) != 0) return false;
        for (pid_t pid : pids)
          if (!pid_gone(pid)) return false;
        return true;
      },
      10s);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  EXPECT_TRUE(clean) << "left behind after 10 s";
  for (const auto& ns : namespaces) EXPECT_EQ(testing::count_netns_with_prefix(ns), 0) << ns;
  for (pid_t pid : pids) EXPECT_TRUE(pid_gone(pid)) << "pid " << pid;
  std::cout << "  reaper cleaned up " << took.count() << " ms after SIGKILL\n";
}

TEST(Teardown, StaleNamespacesOfDeadOwnersAreRemoved) {
  // A namespace named as if by a process that no longer exists.
  const pid_t dead = ::fork();
  ASSERT_GE(dead, 0);
  if (dead == 0) _exit(0);
  ASSERT_TRUE(internal::wait_child(dead, 5s));
  const std::string stale = std::string(internal::kNetnsPrefix) + std::to_string(dead) + "-0-stale-h0";
  // (Not checked to exist now: a cluster built by a test running in
  // parallel may already have removed it, which is the behaviour under test.)
  internal::run_checked({internal::tool("ip"), "netns", "add", stale});
  Cluster cluster(options(1, "fresh"));  // cleans stale namespaces first
  EXPECT_EQ(testing::count_netns_with_prefix(stale), 0);
  // Our own live cluster's namespaces are not touched by that cleanup.
  internal::remove_stale_netns();
  EXPECT_EQ(testing::count_netns_with_prefix(cluster.host(0).netns()), 1);
}

}  // namespace
}  // namespace aggvm::harness

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--child-cluster") == 0) {
    try {
      return aggvm::harness::child_cluster_main();
    } catch (const std::exception& e) {
      std::cerr << "child cluster: " << e.what() << "\n";
      return 1;
    }
  }
  return aggvm::harness::testing::run_tests_or_skip(argc, argv);
}
