// The C API of vCPU migration (include/aggvm/migration.h).
#include <cstdlib>
#include <cstring>
#include <new>

#include "aggvm/migration.h"
#include "c_api_guard.h"
#include "handoff.h"
#include "placement.h"

using aggvm::migration::Placement;

struct AggvmPlacement {
  Placement table;
};

using aggvm::dsm::guarded;

int aggvm_placement_new(uint16_t n_nodes, uint32_t n_vcpus, const uint16_t* vcpu_node, AggvmPlacement** out,
                        char** errmsg) {
  return guarded(errmsg, [&] { *out = new AggvmPlacement{Placement(n_nodes, std::span(vcpu_node, n_vcpus))}; });
}

void aggvm_placement_free(AggvmPlacement* p) { delete p; }

int aggvm_placement_node_of(const AggvmPlacement* p, uint32_t vcpu) { return p->table.node_of(vcpu); }

uint64_t aggvm_placement_epoch(const AggvmPlacement* p) { return p->table.epoch(); }

int aggvm_placement_is_moving(const AggvmPlacement* p, uint32_t vcpu) { return p->table.is_moving(vcpu); }

int aggvm_placement_moving_to(const AggvmPlacement* p, uint32_t vcpu) { return p->table.moving_to(vcpu); }

int aggvm_placement_begin_move(AggvmPlacement* p, uint32_t vcpu, uint16_t to, const AggvmMoveNodeState* states,
                               uint64_t* epoch, char** errmsg) {
  return guarded(errmsg, [&] { *epoch = p->table.begin_move(vcpu, to, std::span(states, p->table.n_nodes())); });
}

int aggvm_placement_abort_move(AggvmPlacement* p, uint32_t vcpu) {
  p->table.abort_move(vcpu);
  return 0;
}

int aggvm_placement_commit(AggvmPlacement* p, uint32_t vcpu, uint16_t node, uint64_t epoch, char** errmsg) {
  return guarded(errmsg, [&] { p->table.commit(vcpu, node, epoch); });
}

int aggvm_handoff_encode(const AggvmHandoff* h, void** buf, size_t* len, char** errmsg) {
  return guarded(errmsg, [&] {
    const std::string bytes = aggvm::migration::encode_handoff(*h);
    void* out = malloc(bytes.size() ? bytes.size() : 1);
    if (!out) throw std::bad_alloc();
    memcpy(out, bytes.data(), bytes.size());
    *buf = out;
    *len = bytes.size();
  });
}

void aggvm_handoff_free_buffer(void* buf) { free(buf); }

int aggvm_handoff_decode(AggvmHandoffKind kind, const void* data, size_t len, uint16_t n_nodes, uint32_t n_vcpus,
                         AggvmHandoff* h, void** owner, char** errmsg) {
  return guarded(errmsg, [&] {
    auto decoded = aggvm::migration::decode_handoff(kind, data, len, n_nodes, n_vcpus, *h);
    *owner = decoded.release();
  });
}

void aggvm_handoff_free_decoded(void* owner) { delete static_cast<aggvm::migration::DecodedHandoff*>(owner); }
