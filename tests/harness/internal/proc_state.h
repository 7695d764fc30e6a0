// What a Process and its Host share about one spawned process, so that once
// it is reaped (by either side) nobody signals its recycled pid.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>

#include "harness.h"

namespace aggvm::harness::internal {

struct ProcState {
  ProcState(pid_t p, std::filesystem::path l) : pid(p), log(std::move(l)) {}

  // Waits up to `timeout` for the process to end and reaps it; returns the
  // status, or nullopt if it is still running.  Remembers the status.
  std::optional<ExitStatus> reap(std::chrono::milliseconds timeout);
  // Sends `sig` to the process (group: -pid) unless it was already reaped.
  void signal(int sig, bool group);

  const pid_t pid;
  const std::filesystem::path log;

 private:
  std::mutex mu_;
  std::optional<ExitStatus> status_;  // set once reaped
};

}  // namespace aggvm::harness::internal
