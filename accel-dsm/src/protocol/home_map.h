// Which node is home of each guest-physical page: the guest NUMA layout.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "protocol/types.h"

namespace aggvm::dsm {

struct HomeRange {
  uint64_t gpa_start;
  uint64_t gpa_end;  // exclusive
  NodeId node;
};

class HomeMap {
 public:
  // Ranges must be page aligned, non-empty, non-overlapping and name nodes
  // below n_nodes; gpas outside every range are homed on node 0.
  HomeMap(std::vector<HomeRange> ranges, uint16_t n_nodes);

  NodeId home_of(uint64_t gpa) const;
  // [gpa_start, gpa_end) is homed on node from now on (page aligned,
  // non-empty); neighbouring ranges of the same node merge.
  void assign(uint64_t gpa_start, uint64_t gpa_end, NodeId node);
  // Bytes of [gpa, gpa + size) homed on node.
  uint64_t bytes_homed_on(NodeId node, uint64_t gpa, uint64_t size) const;
  std::span<const HomeRange> ranges() const { return ranges_; }
  // How many times assign() changed the map.
  uint64_t changes() const { return changes_; }

 private:
  std::vector<HomeRange> ranges_;  // sorted by gpa_start
  uint16_t n_nodes_;
  uint64_t changes_ = 0;
};

}  // namespace aggvm::dsm
