// Running a system tool (ip, nft) to completion, with its output captured.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "harness.h"

namespace aggvm::harness::internal {

struct CommandOptions {
  std::string netns{};                      // run inside this named namespace; empty: ours
  std::chrono::milliseconds timeout{10'000};
};

struct CommandResult {
  ExitStatus status;
  std::string out;
  std::string err;
};

// Runs argv to completion (killing it at the deadline).  Throws only if it
// cannot be started or does not finish in time.
CommandResult run_command(const std::vector<std::string>& argv, const CommandOptions& options = {});

// As run_command, and throws std::runtime_error with the command line, its
// exit status and its stderr unless it exited 0.  Returns its stdout.
std::string run_checked(const std::vector<std::string>& argv, const CommandOptions& options = {});

// Path of a system tool: PATH first, then /usr/sbin and /sbin (often missing
// from PATH for non-login shells).  Returns the bare name if not found, so
// the error surfaces from exec with the command line.
std::string tool(const std::string& name);

}  // namespace aggvm::harness::internal
