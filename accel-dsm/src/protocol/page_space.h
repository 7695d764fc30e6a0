// The guest pages a cluster keeps coherent: its regions and their homes.
#pragma once

#include <string>
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

 private:
  std::vector<RegionInfo> regions_;
  std::vector<uint64_t> region_pages_;
  HomeMap homes_;
};

}  // namespace aggvm::dsm
