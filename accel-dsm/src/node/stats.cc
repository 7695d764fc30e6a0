#include "node/stats.h"

#include <bit>

namespace aggvm::dsm {

void FaultStatistics::add(AggvmDsmFaultStats& s, Access access, NodeId home, bool local,
                          uint64_t latency_us) {
  (access == Access::kRead ? s.read_faults : s.write_faults)++;
  if (local) s.local_faults++;
  if (home < AGGVM_DSM_MAX_NODES) s.faults_by_home[home]++;
  const int bucket = latency_us == 0 ? 0 : std::bit_width(latency_us) - 1;
  s.latency_us_hist[std::min(bucket, AGGVM_DSM_LATENCY_BUCKETS - 1)]++;
  s.latency_us_total += latency_us;
}

void FaultStatistics::record(int tid, uint64_t gpa, Access access, NodeId home, bool local,
                             uint64_t latency_ns) {
  const uint64_t us = latency_ns / 1000;
  std::lock_guard lock(mu_);
  add(node_, access, home, local, us);
  add(per_thread_[tid], access, home, local, us);
  per_thread_granule_[tid][gpa - gpa % AGGVM_DSM_FAULT_GRANULE]++;
}

AggvmDsmFaultStats FaultStatistics::node_faults() const {
  std::lock_guard lock(mu_);
  return node_;
}

bool FaultStatistics::thread_faults(int tid, AggvmDsmFaultStats* out) const {
  std::lock_guard lock(mu_);
  auto it = per_thread_.find(tid);
  if (it == per_thread_.end()) return false;
  *out = it->second;
  return true;
}

std::vector<AggvmDsmGranuleFaults> FaultStatistics::thread_granules(int tid) const {
  std::lock_guard lock(mu_);
  std::vector<AggvmDsmGranuleFaults> out;
  if (auto it = per_thread_granule_.find(tid); it != per_thread_granule_.end())
    for (const auto& [gpa, faults] : it->second) out.push_back({.gpa = gpa, .faults = faults});
  return out;
}

std::vector<int> FaultStatistics::threads() const {
  std::lock_guard lock(mu_);
  std::vector<int> tids;
  for (const auto& [tid, s] : per_thread_) tids.push_back(tid);
  return tids;
}

}  // namespace aggvm::dsm
