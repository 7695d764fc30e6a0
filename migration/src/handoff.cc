// The hand-off messages of a vCPU move (handoff.h).
#include "handoff.h"

#include "error.h"
#include "handoff.pb.h"

namespace aggvm::migration {

using dsm::fail;

namespace {

std::string bytes(const void* p, size_t len) { return p ? std::string(static_cast<const char*>(p), len) : std::string(); }

void check_node(uint32_t node, uint16_t n_nodes, const char* what) {
  if (node >= n_nodes) fail(EINVAL, "hand-off names {} node {}, but the cluster has {} nodes", what, node, n_nodes);
}

void check_vcpu(uint32_t vcpu, uint32_t n_vcpus) {
  if (vcpu >= n_vcpus) fail(EINVAL, "hand-off names vCPU {}, but the guest has {}", vcpu, n_vcpus);
}

template <typename M>
M parse(const void* data, size_t len, const char* what) {
  M m;
  if (len > static_cast<size_t>(INT32_MAX) || !m.ParseFromArray(data, static_cast<int>(len)))
    fail(EPROTO, "a {} of {} bytes does not parse", what, len);
  return m;
}

}  // namespace

std::string encode_handoff(const AggvmHandoff& h) {
  switch (h.kind) {
    case AGGVM_HANDOFF_MOVE_ORDER: {
      pb::MoveOrder m;
      m.set_vcpu(h.vcpu);
      m.set_from(h.from);
      m.set_to(h.to);
      m.set_epoch(h.epoch);
      return m.SerializeAsString();
    }
    case AGGVM_HANDOFF_VCPU_STATE: {
      pb::VcpuState m;
      m.set_vcpu(h.vcpu);
      m.set_from(h.from);
      m.set_epoch(h.epoch);
      m.set_cpu_common(bytes(h.cpu_common, h.cpu_common_len));
      m.set_cpu(bytes(h.cpu, h.cpu_len));
      m.set_apic(bytes(h.apic, h.apic_len));
      m.set_stopped_at_ns(h.stopped_at_ns);
      return m.SerializeAsString();
    }
    case AGGVM_HANDOFF_PLACEMENT: {
      pb::Placement m;
      m.set_vcpu(h.vcpu);
      m.set_node(h.to);
      m.set_epoch(h.epoch);
      return m.SerializeAsString();
    }
    case AGGVM_HANDOFF_RESULT: {
      pb::MoveResult m;
      if (h.error) m.set_error(h.error);
      m.set_downtime_ns(h.downtime_ns);
      return m.SerializeAsString();
    }
  }
  fail(EINVAL, "unknown hand-off kind {}", static_cast<int>(h.kind));
}

std::unique_ptr<DecodedHandoff> decode_handoff(AggvmHandoffKind kind, const void* data, size_t len,
                                               uint16_t n_nodes, uint32_t n_vcpus, AggvmHandoff& out) {
  auto owner = std::make_unique<DecodedHandoff>();
  out = AggvmHandoff{};
  out.kind = kind;
  switch (kind) {
    case AGGVM_HANDOFF_MOVE_ORDER: {
      auto m = parse<pb::MoveOrder>(data, len, "move order");
      check_vcpu(m.vcpu(), n_vcpus);
      check_node(m.from(), n_nodes, "source");
      check_node(m.to(), n_nodes, "destination");
      if (m.from() == m.to()) fail(EINVAL, "move order for vCPU {} from node {} to itself", m.vcpu(), m.to());
      out.vcpu = m.vcpu();
      out.from = static_cast<uint16_t>(m.from());
      out.to = static_cast<uint16_t>(m.to());
      out.epoch = m.epoch();
      break;
    }
    case AGGVM_HANDOFF_VCPU_STATE: {
      auto m = parse<pb::VcpuState>(data, len, "vCPU state");
      check_vcpu(m.vcpu(), n_vcpus);
      check_node(m.from(), n_nodes, "source");
      if (m.cpu().empty() || m.cpu_common().empty() || m.apic().empty())
        fail(EPROTO, "vCPU {}'s state lacks a part (cpu_common {} B, cpu {} B, apic {} B)", m.vcpu(),
             m.cpu_common().size(), m.cpu().size(), m.apic().size());
      out.vcpu = m.vcpu();
      out.from = static_cast<uint16_t>(m.from());
      out.epoch = m.epoch();
      out.stopped_at_ns = m.stopped_at_ns();
      owner->cpu_common = std::move(*m.mutable_cpu_common());
      owner->cpu = std::move(*m.mutable_cpu());
      owner->apic = std::move(*m.mutable_apic());
      break;
    }
    case AGGVM_HANDOFF_PLACEMENT: {
      auto m = parse<pb::Placement>(data, len, "placement");
      check_vcpu(m.vcpu(), n_vcpus);
      check_node(m.node(), n_nodes, "placement");
      out.vcpu = m.vcpu();
      out.to = static_cast<uint16_t>(m.node());
      out.epoch = m.epoch();
      break;
    }
    case AGGVM_HANDOFF_RESULT: {
      auto m = parse<pb::MoveResult>(data, len, "move result");
      owner->error = m.error().substr(0, 512);
      out.downtime_ns = m.downtime_ns();
      break;
    }
    default:
      fail(EINVAL, "unknown hand-off kind {}", static_cast<int>(kind));
  }
  out.cpu_common = owner->cpu_common.data();
  out.cpu_common_len = owner->cpu_common.size();
  out.cpu = owner->cpu.data();
  out.cpu_len = owner->cpu.size();
  out.apic = owner->apic.data();
  out.apic_len = owner->apic.size();
  out.error = owner->error.c_str();
  return owner;
}

}  // namespace aggvm::migration
