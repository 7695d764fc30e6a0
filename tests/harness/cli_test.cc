// Tests of the aggvm-harness command line.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "harness.h"
#include "internal/command.h"
#include "internal/fd.h"
#include "internal/spawn.h"
#include "test_util.h"

namespace aggvm::harness {
namespace {

using namespace std::chrono_literals;

TEST(Cli, RunExportsTheClusterAndReturnsTheExitCode) {
  const std::string cli = testing::required_env("AGGVM_HARNESS_CLI");
  const std::string probe = testing::required_env("AGGVM_NET_PROBE");
  // Host 1 listens, host 0 connects to it, by the names and addresses the
  // CLI exported; the command's own exit code (7) must come back.
  const std::string script =
      "set -e; echo \"hosts=$AGGVM_HOSTS\"; test -d \"$AGGVM_LOG_DIR\"; "
      "\"$CLI\" exec \"$AGGVM_HOST1_NETNS\" -- \"$PROBE\" listen 7100 20 > \"$AGGVM_LOG_DIR/listen.log\" & "
      "for i in $(seq 50); do grep -q listening \"$AGGVM_LOG_DIR/listen.log\" && break; sleep 0.1; done; "
      "\"$CLI\" exec \"$AGGVM_HOST0_NETNS\" -- \"$PROBE\" connect \"$AGGVM_HOST1_ADDR\" 7100 2000; "
      "echo \"ns=$AGGVM_HOST0_NETNS\"; exit 7";
  internal::CommandOptions options;
  options.timeout = 60s;
  const auto result = internal::run_command({"env", "CLI=" + cli, "PROBE=" + probe, cli, "run", "--hosts", "2",
                                             "--name", "cli", "--log-dir", testing::test_log_dir("cli"), "--", "sh", "-c", script},
                                            options);
  EXPECT_TRUE(result.status.exited);
  EXPECT_EQ(result.status.code, 7) << result.out << result.err;
  EXPECT_NE(result.out.find("hosts=2\n"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("connected 10.199."), std::string::npos) << result.out << result.err;
  EXPECT_NE(result.err.find("host 1: netns"), std::string::npos) << "progress lines: " << result.err;
  const auto ns = result.out.find("ns=");
  ASSERT_NE(ns, std::string::npos);
  const std::string netns = result.out.substr(ns + 3, result.out.find('\n', ns) - ns - 3);
  EXPECT_EQ(testing::count_netns_with_prefix(netns), 0) << netns << " survived the CLI";
}

TEST(Cli, SigtermIsForwardedAndTheClusterTornDown) {
  const std::string cli = testing::required_env("AGGVM_HARNESS_CLI");
  const std::string logs = testing::test_log_dir("sigterm");
  const std::string log = logs + "/cli.log";
  internal::Fd log_fd(::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  ASSERT_TRUE(log_fd.valid());
  internal::SpawnSpec spec;
  spec.argv = {cli, "run", "--hosts", "1", "--name", "sigterm", "--log-dir", logs, "--", "sleep", "100"};
  spec.stdout_fd = log_fd.get();
  spec.stderr_fd = log_fd.get();
  spec.new_process_group = true;  // the SIGTERM goes to the CLI alone
  spec.die_with_parent = true;
  const pid_t pid = internal::spawn_child(spec);
  auto read_log = [&] {
    std::ifstream in(log);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  ASSERT_TRUE(testing::eventually([&] { return read_log().find("logs in") != std::string::npos; }, 20s))
      << read_log();
  std::this_thread::sleep_for(200ms);  // the command starts right after that line
  const std::string prefix = std::string("aggvm-") + std::to_string(pid) + "-";
  EXPECT_EQ(testing::count_netns_with_prefix(prefix), 2);  // host + switch

  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  const auto status = internal::wait_child(pid, 20s);
  ASSERT_TRUE(status) << "CLI did not stop; log:\n" << read_log();
  EXPECT_TRUE(status->exited);
  EXPECT_EQ(status->code, 128 + SIGTERM) << read_log();
  EXPECT_EQ(testing::count_netns_with_prefix(prefix), 0);
}

TEST(Cli, ExecRunsInsideTheNamespace) {
  Cluster cluster([] {
    ClusterOptions o;
    o.hosts = 1;
    o.name = "exec";
    o.log_dir = testing::test_log_dir("exec");
    return o;
  }());
  const std::string out = internal::run_checked({testing::required_env("AGGVM_HARNESS_CLI"), "exec",
                                                 cluster.host(0).netns(), "--", internal::tool("ip"), "-o", "-4",
                                                 "addr", "show", "dev", "eth0"});
  EXPECT_NE(out.find(cluster.host(0).address() + "/24"), std::string::npos) << out;
  const auto bad = internal::run_command({testing::required_env("AGGVM_HARNESS_CLI"), "exec", "aggvm-no-such-ns",
                                          "--", "true"});
  EXPECT_NE(bad.status.code, 0);
  EXPECT_NE(bad.err.find("aggvm-no-such-ns"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace aggvm::harness

int main(int argc, char** argv) { return aggvm::harness::testing::run_tests_or_skip(argc, argv); }
