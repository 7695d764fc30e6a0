// Hot-path protocol messages: what the coherence engine sends and receives.
//
//   requester          home                   sharer / owner
//   ReadReq/WriteReq ->
//                      Invalidate / Fetch  ->
//                                          <- InvAck / FetchResp(data)
//                   <- Grant(data|zero|none)
//   Unblock         ->                        (ends the home's transaction)
//
// The home runs one transaction per page at a time and queues the others, so
// a grant and a later probe for the same page can never cross.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "protocol/types.h"

namespace aggvm::dsm {

enum class MsgType : uint8_t {
  kReadReq = 1,     // requester -> home
  kWriteReq = 2,    // requester -> home
  kGrant = 3,       // home -> requester (flags: kWrite, kData or kZero)
  kInvalidate = 4,  // home -> sharer
  kInvAck = 5,      // sharer -> home
  kFetch = 6,       // home -> owner (kWrite: invalidate, else downgrade)
  kFetchResp = 7,   // owner -> home (kData, kRetained)
  kUnblock = 8,     // requester -> home
  kEvict = 9,       // sharer -> home: I dropped my shared copy
  kEvictAck = 10,   // home -> sharer
  kWriteback = 11,  // owner -> home (kData): I gave my modified copy back
  kWritebackAck = 12,
  // Non-coherence frames sharing the fabric.
  kControl = 32,    // protobuf control message (aggvm.dsm.Control)
  kService = 33,    // opaque payload for another subsystem; txn = channel
};

enum MsgFlag : uint16_t {
  kFlagWrite = 1 << 0,     // Grant: writable; Fetch: invalidate (not downgrade)
  kFlagData = 1 << 1,      // payload is the page
  kFlagZero = 1 << 2,      // the page was never written: install zeroes
  kFlagRetained = 1 << 3,  // FetchResp: the owner kept a shared copy
};
inline constexpr uint16_t kKnownFlags = kFlagWrite | kFlagData | kFlagZero | kFlagRetained;

struct Message {
  MsgType type{};
  uint16_t flags = 0;
  NodeId src = 0;
  NodeId dst = 0;
  uint32_t txn = 0;
  PageKey page{};
  std::span<const std::byte> payload{};  // page data (kFlagData) or control bytes

  bool has(MsgFlag f) const { return (flags & f) != 0; }
};

// The answer from node `self` to m: same page and transaction, back to its sender.
inline Message reply_to(const Message& m, MsgType type, NodeId self, uint16_t flags = 0) {
  return Message{.type = type, .flags = flags, .src = self, .dst = m.src, .txn = m.txn, .page = m.page};
}

std::string_view to_string(MsgType t);
bool is_coherence(MsgType t);

}  // namespace aggvm::dsm
