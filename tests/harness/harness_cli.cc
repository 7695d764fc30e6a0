// aggvm-harness: the harness for shell scripts and the demo.
//
//   aggvm-harness run [--hosts N] [--name TAG] [--log-dir DIR] [--timeout S] -- CMD...
//       builds a cluster, runs CMD in the root namespace with AGGVM_HOSTS,
//       AGGVM_HOST<i>_NETNS, AGGVM_HOST<i>_ADDR, AGGVM_SWITCH_NETNS and
//       AGGVM_LOG_DIR set, tears the cluster down, exits with CMD's status
//       (128+signal if it was killed, 124 if it ran past --timeout).
//   aggvm-harness exec NETNS -- CMD...    runs CMD inside a network namespace
//   aggvm-harness clean                   removes namespaces left by dead runs
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <system_error>

#include "harness.h"
#include "internal/netns.h"
#include "internal/spawn.h"

namespace {

using aggvm::harness::ExitStatus;
using namespace std::chrono_literals;

struct RunArgs {
  int hosts = 2;
  std::string name = "run";
  std::string log_dir;
  int timeout_s = 3600;
  std::vector<std::string> command;
};

sigset_t stop_signals(bool with_chld) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  if (with_chld) sigaddset(&set, SIGCHLD);
  return set;
}

int exit_code(const ExitStatus& status) { return status.exited ? status.code : 128 + status.signal; }

// Waits for the command, forwarding SIGINT/SIGTERM/SIGHUP that were sent to
// us by a process (a terminal's Ctrl-C reaches the command directly, since it
// shares our process group).  Escalates to SIGKILL when a grace period ends.
ExitStatus supervise(pid_t child, std::chrono::seconds timeout) {
  const sigset_t set = stop_signals(true);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool escalated = false, timed_out = false;
  for (;;) {
    if (auto status = aggvm::harness::internal::reap_if_ended(child)) {
      if (timed_out) status = ExitStatus{true, 124, 0, false};
      return *status;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      if (escalated) {
        (void)::kill(child, SIGKILL);
        (void)aggvm::harness::internal::wait_child(child, 5s);
        return ExitStatus{false, 0, SIGKILL, false};
      }
      if (!timed_out) {
        std::cerr << "[aggvm-harness] command ran past " << timeout.count() << " s; sending SIGTERM\n";
        timed_out = true;
      }
      (void)::kill(child, SIGTERM);
      escalated = true;
      deadline = now + 10s;
      continue;
    }
    // At most 1 s per wait, so that the deadline is checked; tv_nsec < 1e9.
    const auto left = std::min<std::chrono::nanoseconds>(deadline - now, 999'999'999ns);
    timespec ts{0, static_cast<long>(left.count())};
    siginfo_t info{};
    const int sig = ::sigtimedwait(&set, &info, &ts);
    if (sig < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "sigtimedwait");
    }
    if (sig == SIGCHLD) continue;
    if (info.si_code <= 0) (void)::kill(child, sig);  // sent by a process, not by the terminal
    if (!escalated) {
      std::cerr << "[aggvm-harness] " << strsignal(sig) << ": stopping the command, then tearing down\n";
      escalated = true;
      deadline = std::chrono::steady_clock::now() + 10s;
    }
  }
}

int run(const RunArgs& args) {
  // Signals wait until we are ready for them, so setup is never cut short
  // with namespaces half-made; the reaper covers SIGKILL.
  const sigset_t set = stop_signals(true);
  if (::pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) {
    std::cerr << "aggvm-harness: pthread_sigmask failed\n";
    return 1;
  }
  aggvm::harness::ClusterOptions options;
  options.hosts = args.hosts;
  options.name = args.name;
  options.log_dir = args.log_dir;
  options.on_progress = [](const std::string& line) { std::cerr << "[aggvm-harness] " << line << "\n"; };
  aggvm::harness::Cluster cluster(options);

  std::map<std::string, std::string> env{
      {"AGGVM_HOSTS", std::to_string(cluster.size())},
      {"AGGVM_SWITCH_NETNS", cluster.switch_netns()},
      {"AGGVM_LOG_DIR", cluster.log_dir().string()},
  };
  for (int i = 0; i < cluster.size(); ++i) {
    env["AGGVM_HOST" + std::to_string(i) + "_NETNS"] = cluster.host(i).netns();
    env["AGGVM_HOST" + std::to_string(i) + "_ADDR"] = cluster.host(i).address();
  }
  std::cerr << "[aggvm-harness] logs in " << cluster.log_dir().string() << "\n";

  sigset_t pending;
  if (::sigpending(&pending) == 0 && (sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1 ||
                                      sigismember(&pending, SIGHUP) == 1)) {
    std::cerr << "[aggvm-harness] interrupted during setup; tearing down\n";
    return 130;
  }

  aggvm::harness::internal::SpawnSpec spec;
  spec.argv = args.command;
  spec.env = aggvm::harness::internal::environment_with(env);
  spec.die_with_parent = true;
  const pid_t child = aggvm::harness::internal::spawn_child(spec);
  const ExitStatus status = supervise(child, std::chrono::seconds(args.timeout_s));
  std::cerr << "[aggvm-harness] command " << aggvm::harness::describe(status) << "; tearing down\n";
  cluster.teardown();
  return exit_code(status);
}

int exec_in(const std::string& netns, const std::vector<std::string>& command) {
  const auto fd = aggvm::harness::internal::open_netns(netns);
  if (::setns(fd.get(), CLONE_NEWNET) != 0) {
    std::cerr << "aggvm-harness: setns " << netns << ": " << std::strerror(errno) << "\n";
    return 1;
  }
  std::vector<char*> argv;
  for (const auto& arg : command) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  std::cerr << "aggvm-harness: exec " << command[0] << ": " << std::strerror(errno) << "\n";
  return 127;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"aggvm-harness: several network-namespace \"hosts\" on one machine"};
  app.require_subcommand(1);

  RunArgs run_args;
  auto* run_cmd = app.add_subcommand("run", "set up a cluster, run a command in the root namespace, tear down");
  run_cmd->add_option("--hosts", run_args.hosts, "number of hosts (1..16)")->check(CLI::Range(1, 16));
  run_cmd->add_option("--name", run_args.name, "short tag in namespace names ([A-Za-z0-9_], up to 12)");
  run_cmd->add_option("--log-dir", run_args.log_dir, "where process logs go (default: a fresh dir in /tmp)");
  run_cmd->add_option("--timeout", run_args.timeout_s, "seconds before the command is stopped")
      ->check(CLI::PositiveNumber);
  run_cmd->add_option("command", run_args.command, "command to run (after --)")->required();

  std::string netns;
  std::vector<std::string> exec_command;
  auto* exec_cmd = app.add_subcommand("exec", "run a command inside a network namespace");
  exec_cmd->add_option("netns", netns, "namespace name (ip netns list)")->required();
  exec_cmd->add_option("command", exec_command, "command to run (after --)")->required();

  app.add_subcommand("clean", "remove harness namespaces whose owner process is gone");

  CLI11_PARSE(app, argc, argv);
  try {
    if (run_cmd->parsed()) return run(run_args);
    if (exec_cmd->parsed()) return exec_in(netns, exec_command);
    aggvm::harness::internal::remove_stale_netns();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "aggvm-harness: " << e.what() << "\n";
    return 1;
  }
}
