#include "protocol/home_map.h"

#include <algorithm>

#include "error.h"

namespace aggvm::dsm {

HomeMap::HomeMap(std::vector<HomeRange> ranges, uint16_t n_nodes) : ranges_(std::move(ranges)), n_nodes_(n_nodes) {
  std::sort(ranges_.begin(), ranges_.end(),
            [](const HomeRange& a, const HomeRange& b) { return a.gpa_start < b.gpa_start; });
  for (size_t i = 0; i < ranges_.size(); ++i) {
    const HomeRange& r = ranges_[i];
    if (r.gpa_end <= r.gpa_start)
      fail(EINVAL, "home range [{:#x}, {:#x}) is empty", r.gpa_start, r.gpa_end);
    if (r.gpa_start % kPageSize || r.gpa_end % kPageSize)
      fail(EINVAL, "home range [{:#x}, {:#x}) is not page aligned", r.gpa_start, r.gpa_end);
    if (r.node >= n_nodes)
      fail(EINVAL, "home range [{:#x}, {:#x}) names node {}, but the cluster has {} nodes",
           r.gpa_start, r.gpa_end, r.node, n_nodes);
    if (i > 0 && ranges_[i - 1].gpa_end > r.gpa_start)
      fail(EINVAL, "home ranges [{:#x}, {:#x}) and [{:#x}, {:#x}) overlap",
           ranges_[i - 1].gpa_start, ranges_[i - 1].gpa_end, r.gpa_start, r.gpa_end);
  }
}

NodeId HomeMap::home_of(uint64_t gpa) const {
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), gpa,
                             [](uint64_t g, const HomeRange& r) { return g < r.gpa_start; });
  if (it == ranges_.begin()) return 0;
  --it;
  return gpa < it->gpa_end ? it->node : 0;
}

void HomeMap::assign(uint64_t gpa_start, uint64_t gpa_end, NodeId node) {
  if (gpa_end <= gpa_start || gpa_start % kPageSize || gpa_end % kPageSize)
    fail(EINVAL, "home range [{:#x}, {:#x}) is empty or not page aligned", gpa_start, gpa_end);
  if (node >= n_nodes_) fail(EINVAL, "home range names node {}, but the cluster has {} nodes", node, n_nodes_);
  // Gaps between ranges are node 0's: make them explicit around the new
  // range so that cutting never changes the home of a gap.
  std::vector<HomeRange> out;
  uint64_t cursor = 0;
  auto keep = [&](uint64_t a, uint64_t b, NodeId n) {  // the parts of [a, b) outside the new range
    if (a < gpa_start) out.push_back({a, std::min(b, gpa_start), n});
    if (b > gpa_end) out.push_back({std::max(a, gpa_end), b, n});
  };
  for (const HomeRange& r : ranges_) {
    if (cursor < r.gpa_start) keep(cursor, r.gpa_start, 0);
    keep(r.gpa_start, r.gpa_end, r.node);
    cursor = r.gpa_end;
  }
  if (cursor < gpa_end) keep(cursor, gpa_end, 0);
  out.push_back({gpa_start, gpa_end, node});
  std::sort(out.begin(), out.end(), [](const HomeRange& a, const HomeRange& b) { return a.gpa_start < b.gpa_start; });
  ++changes_;
  ranges_.clear();
  for (const HomeRange& r : out) {
    if (!ranges_.empty() && ranges_.back().gpa_end == r.gpa_start && ranges_.back().node == r.node)
      ranges_.back().gpa_end = r.gpa_end;
    else
      ranges_.push_back(r);
  }
}

uint64_t HomeMap::bytes_homed_on(NodeId node, uint64_t gpa, uint64_t size) const {
  uint64_t total = 0;
  for (uint64_t off = 0; off < size; off += kPageSize)
    if (home_of(gpa + off) == node) total += kPageSize;
  return total;
}

}  // namespace aggvm::dsm
