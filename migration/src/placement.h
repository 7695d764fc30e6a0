// Where each vCPU of an aggregated guest runs, and the moves between nodes.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "aggvm/migration.h"

namespace aggvm::migration {

// One node's view of the placement.  Node 0's is the authority: it checks
// and begins each move and publishes its commit; the others only commit.
// Each commit raises the epoch, so that an old Placement cannot undo a
// newer one.  Not thread-safe: the embedder serialises calls.
class Placement {
 public:
  Placement(uint16_t n_nodes, std::span<const uint16_t> vcpu_node);

  uint16_t n_nodes() const { return n_nodes_; }
  uint32_t n_vcpus() const { return static_cast<uint32_t>(node_.size()); }
  uint64_t epoch() const { return epoch_; }
  // The node of vcpu, or -1 for no such vCPU.
  int node_of(uint32_t vcpu) const;
  bool is_moving(uint32_t vcpu) const { return moving_to(vcpu) >= 0; }
  // The node vcpu is moving to, or -1 when it is not moving.
  int moving_to(uint32_t vcpu) const { return vcpu < moving_to_.size() ? moving_to_[vcpu] : -1; }

  // Throws MigrationError (EINVAL, EBUSY, EALREADY, ENOTCONN...) naming why not.
  uint64_t begin_move(uint32_t vcpu, uint16_t to, std::span<const AggvmMoveNodeState> states);
  void abort_move(uint32_t vcpu);
  // False when epoch is not newer than the table's (nothing changes).
  bool commit(uint32_t vcpu, uint16_t node, uint64_t epoch);

 private:
  uint16_t n_nodes_;
  std::vector<uint16_t> node_;
  std::vector<int32_t> moving_to_;  // -1: not moving
  uint64_t epoch_ = 0;
  uint64_t next_epoch_ = 1;  // node 0: epochs handed to moves in flight
};

}  // namespace aggvm::migration
