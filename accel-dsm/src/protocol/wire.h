// Fixed binary layout of a frame on the fabric, and its validation.
//
// A frame is a 32-byte little-endian header followed by payload_len bytes.
// Every field is checked before anything acts on a frame: a garbled or
// hostile frame is rejected with a reason and never reaches the protocol.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "protocol/message.h"

namespace aggvm::dsm {

inline constexpr uint32_t kWireMagic = 0x4d444741;  // "AGDM"
inline constexpr uint8_t kWireVersion = 1;
inline constexpr size_t kHeaderSize = 32;
inline constexpr uint32_t kMaxControlPayload = 64 * 1024;
inline constexpr uint32_t kMaxServicePayload = AGGVM_DSM_SERVICE_MAX;
inline constexpr uint32_t kMaxPayload = std::max(kMaxServicePayload, kMaxPeekRespPayload);

struct WireHeader {
  uint32_t magic;
  uint8_t version;
  uint8_t type;
  uint16_t flags;
  uint16_t src;
  uint16_t dst;
  uint32_t txn;
  uint64_t page;
  uint32_t payload_len;
  uint32_t reserved;
};
static_assert(sizeof(WireHeader) == kHeaderSize);

std::array<std::byte, kHeaderSize> encode_header(const Message& m);

// What a receiver knows about the frames it may accept.
struct WireLimits {
  NodeId self = 0;
  uint16_t n_nodes = 1;
  // Frames addressed to kNoNode pass too: a client's view of a server's
  // Challenge, sent before the server knows who dialled.
  bool unaddressed_ok = false;
  // Pages in each region; a page index at or beyond is out of range.
  std::span<const uint64_t> region_pages;
};

// Result of decoding a header: either a length to wait for, or a reason.
struct HeaderCheck {
  std::optional<WireHeader> header;
  std::string error;  // non-empty: the frame is rejected
};

// Validates a header on its own (the payload is not needed yet).
HeaderCheck check_header(std::span<const std::byte, kHeaderSize> bytes, const WireLimits& limits);

// Builds the message view of a validated header and its payload.
Message to_message(const WireHeader& h, std::span<const std::byte> payload);

}  // namespace aggvm::dsm
