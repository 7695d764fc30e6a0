// The guest pages a cluster keeps coherent: its regions and their homes.
#pragma once

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "protocol/home_map.h"
#include "protocol/types.h"

namespace aggvm::dsm {

struct RegionInfo {
  std::string name;
  uint64_t gpa = 0;
  uint64_t pages = 0;
};

class PageSpace {
 public:
  PageSpace(std::vector<RegionInfo> regions, HomeMap homes)
      : regions_(std::move(regions)), homes_(std::move(homes)) {
    for (const auto& r : regions_) region_pages_.push_back(r.pages);
  }

  uint64_t gpa(PageKey k) const { return regions_[k.region()].gpa + k.index() * kPageSize; }
  NodeId home(PageKey k) const { return homes_.home_of(gpa(k)); }
  bool contains(PageKey k) const {
    return k.region() < regions_.size() && k.index() < regions_[k.region()].pages;
  }
  const std::vector<RegionInfo>& regions() const { return regions_; }
  const std::vector<uint64_t>& region_pages() const { return region_pages_; }
  const HomeMap& homes() const { return homes_; }

  // The runs [first, end) of page indexes of region homed on node, in
  // order: O(home ranges), not O(pages).  Gaps between ranges are node 0's.
  std::vector<std::pair<uint64_t, uint64_t>> homed_runs(uint32_t region, NodeId node) const {
    const RegionInfo& r = regions_[region];
    const uint64_t end = r.gpa + r.pages * kPageSize;
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    auto add = [&](uint64_t a, uint64_t b, NodeId owner) {  // gpa range [a, b) homed on owner
      a = std::max(a, r.gpa);
      b = std::min(b, end);
      if (owner != node || a >= b) return;
      const uint64_t first = (a - r.gpa) / kPageSize, last = (b - r.gpa) / kPageSize;
      if (!runs.empty() && runs.back().second == first) runs.back().second = last;
      else runs.emplace_back(first, last);
    };
    uint64_t cursor = r.gpa;
    for (const HomeRange& h : homes_.ranges()) {  // sorted by gpa_start
      if (h.gpa_end <= r.gpa || h.gpa_start >= end) continue;
      add(cursor, h.gpa_start, 0);
      add(h.gpa_start, h.gpa_end, h.node);
      cursor = std::max(cursor, h.gpa_end);
    }
    add(cursor, end, 0);
    return runs;
  }
  uint64_t pages_homed_on(NodeId node) const {
    uint64_t n = 0;
    for (uint32_t i = 0; i < regions_.size(); ++i)
      for (const auto& [first, last] : homed_runs(i, node)) n += last - first;
    return n;
  }

 private:
  std::vector<RegionInfo> regions_;
  std::vector<uint64_t> region_pages_;
  HomeMap homes_;
};

}  // namespace aggvm::dsm
