// Fault statistics per node and per faulting thread, read by the vCPU
// scheduler through the C API.  Written by the service thread only.
#pragma once

#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "aggvm/dsm.h"
#include "protocol/types.h"

namespace aggvm::dsm {

class FaultStatistics {
 public:
  void record(int tid, uint64_t gpa, Access access, NodeId home, bool local, uint64_t latency_ns);
  void add_node(const AggvmDsmNodeStats& delta_without_faults);

  AggvmDsmFaultStats node_faults() const;
  bool thread_faults(int tid, AggvmDsmFaultStats* out) const;
  std::vector<int> threads() const;
  // (granule's gpa, faults) of one thread, in gpa order.
  std::vector<AggvmDsmGranuleFaults> thread_granules(int tid) const;

 private:
  static void add(AggvmDsmFaultStats& s, Access access, NodeId home, bool local, uint64_t latency_us);

  mutable std::mutex mu_;
  AggvmDsmFaultStats node_{};
  std::unordered_map<int, AggvmDsmFaultStats> per_thread_;
  std::unordered_map<int, std::map<uint64_t, uint64_t>> per_thread_granule_;
};

}  // namespace aggvm::dsm
