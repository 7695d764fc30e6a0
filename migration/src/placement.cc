// Where each vCPU runs; the checks a move must pass (placement.h).
#include "placement.h"

#include <algorithm>

#include "error.h"

namespace aggvm::migration {

using dsm::fail;

namespace {

const char* why_unusable(AggvmMoveNodeState s) {
  switch (s) {
    case AGGVM_MOVE_NODE_USABLE: return nullptr;
    case AGGVM_MOVE_NODE_NOT_CONNECTED: return "is not connected";
    case AGGVM_MOVE_NODE_FAILED: return "has failed";
    case AGGVM_MOVE_NODE_LEAVING: return "is leaving the cluster";
  }
  return "is in an unknown state";
}

int errno_of(AggvmMoveNodeState s) {
  return s == AGGVM_MOVE_NODE_NOT_CONNECTED ? ENOTCONN : s == AGGVM_MOVE_NODE_FAILED ? EHOSTDOWN : ESHUTDOWN;
}

}  // namespace

Placement::Placement(uint16_t n_nodes, std::span<const uint16_t> vcpu_node)
    : n_nodes_(n_nodes), node_(vcpu_node.begin(), vcpu_node.end()), moving_to_(vcpu_node.size(), -1) {
  if (n_nodes == 0) fail(EINVAL, "a placement needs at least one node");
  for (size_t i = 0; i < node_.size(); ++i)
    if (node_[i] >= n_nodes) fail(EINVAL, "vCPU {} is placed on node {}, but the cluster has {} nodes", i, node_[i], n_nodes);
}

int Placement::node_of(uint32_t vcpu) const { return vcpu < node_.size() ? node_[vcpu] : -1; }

uint64_t Placement::begin_move(uint32_t vcpu, uint16_t to, std::span<const AggvmMoveNodeState> states) {
  if (vcpu >= node_.size())
    fail(EINVAL, "there is no vCPU {}: the guest has {} (0..{})", vcpu, node_.size(), node_.size() - 1);
  if (to >= n_nodes_) fail(EINVAL, "there is no node {}: the cluster has {} (0..{})", to, n_nodes_, n_nodes_ - 1);
  if (states.size() != n_nodes_) fail(EINVAL, "{} node states given for {} nodes", states.size(), n_nodes_);
  if (is_moving(vcpu)) fail(EBUSY, "vCPU {} is already moving", vcpu);
  const uint16_t from = node_[vcpu];
  if (from == to) fail(EALREADY, "vCPU {} already runs on node {}", vcpu, to);
  if (const char* why = why_unusable(states[to])) fail(errno_of(states[to]), "node {} {}", to, why);
  if (const char* why = why_unusable(states[from]))
    fail(errno_of(states[from]), "vCPU {} runs on node {}, which {}", vcpu, from, why);
  moving_to_[vcpu] = to;
  next_epoch_ = std::max(next_epoch_, epoch_ + 1);
  return next_epoch_++;
}

void Placement::abort_move(uint32_t vcpu) {
  if (vcpu < moving_to_.size()) moving_to_[vcpu] = -1;
}

bool Placement::commit(uint32_t vcpu, uint16_t node, uint64_t epoch) {
  if (vcpu >= node_.size()) fail(EINVAL, "there is no vCPU {}: the guest has {}", vcpu, node_.size());
  if (node >= n_nodes_) fail(EINVAL, "there is no node {}: the cluster has {}", node, n_nodes_);
  if (epoch <= epoch_) return false;
  node_[vcpu] = node;
  moving_to_[vcpu] = -1;
  epoch_ = epoch;
  return true;
}

}  // namespace aggvm::migration
