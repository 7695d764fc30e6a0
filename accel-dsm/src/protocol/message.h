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
//
// Snapshot reads (protocol/peek.h), for a guest no node writes meanwhile:
//   requester          home                   owner
//   Peek(run)       ->
//                   <- PeekResp(answers, data)
//   Peek(pages)     ------------------------->    (those the home named)
//                   <------------------------- PeekResp
// No directory state changes and nothing is given back afterwards.
#pragma once

#include <cstdint>
#include <cstring>
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
  // Re-homing (protocol/rehome.h): the old home moves a range of pages.
  kRedirect = 13,        // old home -> requester: ask the page's home again
  kHomePrepare = 14,     // old home -> new home: expect [page, page + n)
  kHomePrepareAck = 15,  // new home -> old home
  kHomeChange = 16,      // old home -> every other node: [page, page + n) is homed on the new home
  kHomeChangeAck = 17,   // node -> old home
  kHomeEntry = 18,       // old home -> new home: one page's directory entry (kData: and the page)
  kHomeDone = 19,        // old home -> new home: every entry was sent (their count)
  kHomeDoneAck = 20,     // new home -> old home: it serves the range now
  // Snapshot reads (protocol/peek.h).
  kPeek = 21,      // requester -> home or owner: a run of pages (PeekWire)
  kPeekResp = 22,  // -> requester: an answer per page, then the pages' data
  // Non-coherence frames sharing the fabric.
  kControl = 32,    // protobuf control message (aggvm.dsm.Control)
  kService = 33,    // opaque payload for another subsystem; txn = channel
};

enum MsgFlag : uint16_t {
  kFlagWrite = 1 << 0,     // Grant: writable; Fetch: invalidate (not downgrade)
  kFlagData = 1 << 1,      // payload is the page
  kFlagZero = 1 << 2,      // the page was never written: install zeroes
  kFlagRetained = 1 << 3,  // FetchResp: the owner kept a shared copy
  kFlagExclusive = 1 << 4, // Grant (with kFlagWrite) for a ReadReq: the page is the reader's alone
  kFlagClean = 1 << 5,     // FetchResp: the owner never wrote the page it held Exclusive
};
inline constexpr uint16_t kKnownFlags =
    kFlagWrite | kFlagData | kFlagZero | kFlagRetained | kFlagExclusive | kFlagClean;

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

// Payload of kHomePrepare, kHomeChange (pages, new home) and kHomeDone (entries).
struct HomeRangeWire {
  uint64_t count;
  uint16_t node;
  uint16_t reserved[3];
};
static_assert(sizeof(HomeRangeWire) == 16);

// Payload of kHomeEntry, followed by the page when kFlagData is set.
struct HomeEntryWire {
  uint64_t sharers;  // bit n: node n holds the page Shared
  uint16_t owner;    // kNoNode when none
  uint8_t touched;
  uint8_t reserved[5];
};
static_assert(sizeof(HomeEntryWire) == 16);
static_assert(kMaxNodes <= 64, "HomeEntryWire keeps sharers in 64 bits");

// Payload of kPeek: pages [page, page + count) of one region; of kPeekResp,
// followed by count PeekAnswer values (uint16_t each) and then the data of
// each page answered kPeekData, in order.
struct PeekWire {
  uint32_t count;
  uint32_t reserved;
};
static_assert(sizeof(PeekWire) == 8);
inline constexpr uint32_t kMaxPeekRun = 64;  // 256 KiB of data a message at most
// An answer below kMaxNodes names the page's owner: ask it.
enum PeekAnswer : uint16_t {
  kPeekData = 0x100,     // the page's content follows
  kPeekZero = 0x101,     // never written
  kPeekRefused = 0x102,  // not now (a transaction runs, or not held here): ask as usual
};
inline constexpr uint32_t peek_resp_size(uint32_t count, uint32_t data_pages) {
  return static_cast<uint32_t>(sizeof(PeekWire) + count * sizeof(uint16_t) + data_pages * kPageSize);
}
inline constexpr uint32_t kMaxPeekRespPayload = peek_resp_size(kMaxPeekRun, kMaxPeekRun);

// Bytes of guest pages a frame of this type carries (the statistics'
// bytes sent and received).
inline uint64_t page_bytes(MsgType type, uint16_t flags, std::span<const std::byte> payload) {
  if (flags & kFlagData) return payload.size();
  if (type != MsgType::kPeekResp || payload.size() < sizeof(PeekWire)) return 0;
  PeekWire w;
  std::memcpy(&w, payload.data(), sizeof(w));
  const uint64_t head = sizeof(PeekWire) + uint64_t{w.count} * sizeof(uint16_t);
  return payload.size() > head ? payload.size() - head : 0;
}

std::string_view to_string(MsgType t);
bool is_coherence(MsgType t);

}  // namespace aggvm::dsm
