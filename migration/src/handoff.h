// The hand-off messages of a vCPU move: protobuf on the wire, checked on
// the way in (a peer's message names only nodes and vCPUs that exist).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "aggvm/migration.h"

namespace aggvm::migration {

std::string encode_handoff(const AggvmHandoff& h);

// What a decoded message owns: the bytes that AggvmHandoff points into.
struct DecodedHandoff {
  std::string cpu_common, cpu, apic, error;
};

// Throws MigrationError (EPROTO, EINVAL) on a malformed or hostile message.
std::unique_ptr<DecodedHandoff> decode_handoff(AggvmHandoffKind kind, const void* data, size_t len,
                                               uint16_t n_nodes, uint32_t n_vcpus, AggvmHandoff& out);

}  // namespace aggvm::migration
