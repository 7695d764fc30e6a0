// Vocabulary of the coherence protocol.
#pragma once

#include <bitset>
#include <cstdint>

#include "aggvm/dsm.h"

namespace aggvm::dsm {

using NodeId = uint16_t;
inline constexpr NodeId kNoNode = 0xffff;
inline constexpr int kMaxNodes = AGGVM_DSM_MAX_NODES;
inline constexpr uint64_t kPageSize = AGGVM_DSM_PAGE_SIZE;
using NodeSet = std::bitset<kMaxNodes>;

// A page: region number (high 24 bits) and page index within it (low 40).
class PageKey {
 public:
  static constexpr int kIndexBits = 40;
  static constexpr uint64_t kMaxRegions = 1u << 24;
  static constexpr uint64_t kMaxIndex = (uint64_t{1} << kIndexBits) - 1;

  constexpr PageKey() = default;
  constexpr PageKey(uint32_t region, uint64_t index)
      : raw_((uint64_t{region} << kIndexBits) | index) {}
  static constexpr PageKey from_raw(uint64_t raw) { PageKey k; k.raw_ = raw; return k; }

  constexpr uint32_t region() const { return static_cast<uint32_t>(raw_ >> kIndexBits); }
  constexpr uint64_t index() const { return raw_ & kMaxIndex; }
  constexpr uint64_t raw() const { return raw_; }
  friend constexpr bool operator==(PageKey, PageKey) = default;

 private:
  uint64_t raw_ = 0;
};

struct PageKeyHash {
  size_t operator()(PageKey k) const noexcept { return std::hash<uint64_t>{}(k.raw()); }
};

// Pages [first, end) of one region.
struct PageRange {
  uint32_t region = 0;
  uint64_t first = 0;
  uint64_t end = 0;

  bool contains(PageKey p) const { return p.region() == region && p.index() >= first && p.index() < end; }
  uint64_t pages() const { return end - first; }
};

// A node's copy of a page.
enum class PageState : uint8_t {
  kInvalid,   // not mapped: any access faults
  kShared,    // mapped write-protected; other nodes may hold copies
  kModified,  // mapped writable; the only copy in the cluster
  // The only copy in the cluster, granted for a read of a migratory page
  // (protocol/directory.h) and mapped write-protected until this node
  // writes it: the write is then a local upgrade to Modified, no message.
  // An owner the directory fetches from says whether it wrote.
  kExclusive,
};

// Held by this node alone, written or not: the directory's owner.
inline bool owns(PageState s) { return s == PageState::kModified || s == PageState::kExclusive; }

enum class Access : uint8_t { kRead, kWrite };

const char* to_string(PageState s);

}  // namespace aggvm::dsm
