// A Host's state, kept out of the public header.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "internal/proc_state.h"
#include "internal/reaper.h"

namespace aggvm::harness::internal {

struct HostContext {
  int index = 0;
  std::string netns;
  std::string address;
  std::filesystem::path log_dir;
  Reaper* reaper = nullptr;  // owned by the Cluster, which owns the Host
  std::vector<std::shared_ptr<ProcState>> processes;
  unsigned spawned = 0;      // numbers the log files
  bool cut = false;
  bool alive = true;         // false once the cluster is torn down
};

}  // namespace aggvm::harness::internal
