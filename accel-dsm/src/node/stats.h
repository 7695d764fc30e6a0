// Fault statistics per node and per faulting thread, read by the vCPU
// scheduler through the C API.  Written by the service thread only.
#pragma once

#include <mutex>
#include <unordered_map>
#include <vector>

#include "aggvm/dsm.h"
#include "protocol/types.h"

namespace aggvm::dsm {

class FaultStatistics {
 public:
  void record(int tid, Access access, NodeId home, bool local, uint64_t latency_ns);
  void add_node(const AggvmDsmNodeStats& delta_without_faults);

  AggvmDsmFaultStats node_faults() const;
  bool thread_faults(int tid, AggvmDsmFaultStats* out) const;
  std::vector<int> threads() const;

 private:
  static void add(AggvmDsmFaultStats& s, Access access, NodeId home, bool local, uint64_t latency_us);

  mutable std::mutex mu_;
  AggvmDsmFaultStats node_{};
  std::unordered_map<int, AggvmDsmFaultStats> per_thread_;
};

}  // namespace aggvm::dsm
