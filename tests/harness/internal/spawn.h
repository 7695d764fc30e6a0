// Starting a child process (optionally inside a network namespace), with
// errors before exec reported to the parent instead of lost in the child.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "harness.h"

namespace aggvm::harness::internal {

struct SpawnSpec {
  std::vector<std::string> argv;    // argv[0] is looked up in PATH
  std::vector<std::string> env;     // "KEY=VALUE"; empty: inherit ours
  int netns_fd = -1;                // setns(CLONE_NEWNET) into it before exec
  int stdin_fd = -1;                // -1: inherit
  int stdout_fd = -1;
  int stderr_fd = -1;
  bool new_process_group = false;   // setpgid(0, 0): the child leads its group
  bool die_with_parent = false;     // PR_SET_PDEATHSIG(SIGKILL)
};

// Forks and execs.  Throws std::runtime_error naming the command and the
// failing step (setns, dup2, exec, ...) if the child could not exec.
pid_t spawn_child(const SpawnSpec& spec);

// Our environment with `extra` added (overriding), as "KEY=VALUE" strings.
std::vector<std::string> environment_with(const std::map<std::string, std::string>& extra);

// Reaps `pid` if it ends within `timeout`; nullopt if it is still running.
// Throws std::system_error if `pid` is not our child.
std::optional<ExitStatus> wait_child(pid_t pid, std::chrono::milliseconds timeout);

// Waits up to `timeout` for our child `pid` to end, without reaping it.
bool wait_ended(pid_t pid, std::chrono::milliseconds timeout);
// waitpid(WNOHANG): the status if it ended (now reaped), nullopt if it runs.
std::optional<ExitStatus> reap_if_ended(pid_t pid);

// Converts a waitpid() status.
ExitStatus exit_status_from_wait(int wstatus);

// "ip -n x link set ..." for error messages.
std::string join_argv(const std::vector<std::string>& argv);

// Full path of `program` found in PATH, or nullopt.
std::optional<std::string> find_in_path(const std::string& program);

}  // namespace aggvm::harness::internal
