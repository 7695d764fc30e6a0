#include "protocol/wire.h"

#include <cstring>

#include <fmt/format.h>

namespace aggvm::dsm {

std::string_view to_string(MsgType t) {
  switch (t) {
    case MsgType::kReadReq: return "ReadReq";
    case MsgType::kWriteReq: return "WriteReq";
    case MsgType::kGrant: return "Grant";
    case MsgType::kInvalidate: return "Invalidate";
    case MsgType::kInvAck: return "InvAck";
    case MsgType::kFetch: return "Fetch";
    case MsgType::kFetchResp: return "FetchResp";
    case MsgType::kUnblock: return "Unblock";
    case MsgType::kEvict: return "Evict";
    case MsgType::kEvictAck: return "EvictAck";
    case MsgType::kWriteback: return "Writeback";
    case MsgType::kWritebackAck: return "WritebackAck";
    case MsgType::kRedirect: return "Redirect";
    case MsgType::kHomePrepare: return "HomePrepare";
    case MsgType::kHomePrepareAck: return "HomePrepareAck";
    case MsgType::kHomeChange: return "HomeChange";
    case MsgType::kHomeChangeAck: return "HomeChangeAck";
    case MsgType::kHomeEntry: return "HomeEntry";
    case MsgType::kHomeDone: return "HomeDone";
    case MsgType::kHomeDoneAck: return "HomeDoneAck";
    case MsgType::kPeek: return "Peek";
    case MsgType::kPeekResp: return "PeekResp";
    case MsgType::kControl: return "Control";
    case MsgType::kService: return "Service";
  }
  return "?";
}

bool is_coherence(MsgType t) {
  return static_cast<uint8_t>(t) >= 1 && static_cast<uint8_t>(t) <= static_cast<uint8_t>(MsgType::kPeekResp);
}

const char* to_string(PageState s) {
  switch (s) {
    case PageState::kInvalid: return "Invalid";
    case PageState::kShared: return "Shared";
    case PageState::kModified: return "Modified";
    case PageState::kExclusive: return "Exclusive";
  }
  return "?";
}

std::array<std::byte, kHeaderSize> encode_header(const Message& m) {
  WireHeader h{};
  h.magic = kWireMagic;
  h.version = kWireVersion;
  h.type = static_cast<uint8_t>(m.type);
  h.flags = m.flags;
  h.src = m.src;
  h.dst = m.dst;
  h.txn = m.txn;
  h.payload_len = static_cast<uint32_t>(m.payload.size());
  h.page = m.page.raw();
  h.reserved = 0;
  std::array<std::byte, kHeaderSize> out;
  std::memcpy(out.data(), &h, kHeaderSize);
  return out;
}

namespace {

bool known_type(uint8_t t) {
  return is_coherence(static_cast<MsgType>(t)) || t == static_cast<uint8_t>(MsgType::kControl) ||
         t == static_cast<uint8_t>(MsgType::kService);
}

// Payload length each type must carry.
std::string check_payload(const WireHeader& h) {
  const auto type = static_cast<MsgType>(h.type);
  const bool data = (h.flags & kFlagData) != 0;
  if ((h.flags & kFlagExclusive) && (type != MsgType::kGrant || !(h.flags & kFlagWrite)))
    return fmt::format("{} with the exclusive flag (only a write grant has it)", to_string(type));
  if ((h.flags & kFlagClean) && type != MsgType::kFetchResp)
    return fmt::format("{} with the clean flag (only a fetch response has it)", to_string(type));
  switch (type) {
    case MsgType::kControl:
      if (h.payload_len == 0 || h.payload_len > kMaxControlPayload)
        return fmt::format("control payload of {} bytes (1..{} allowed)", h.payload_len,
                           kMaxControlPayload);
      return {};
    case MsgType::kService:
      if (h.payload_len > kMaxServicePayload)
        return fmt::format("service payload of {} bytes (max {})", h.payload_len,
                           kMaxServicePayload);
      return {};
    case MsgType::kGrant:
    case MsgType::kFetchResp:
    case MsgType::kWriteback:
      if (data && h.payload_len != kPageSize)
        return fmt::format("{} with data flag carries {} bytes, not a page",
                           to_string(type), h.payload_len);
      if (!data && h.payload_len != 0)
        return fmt::format("{} without data flag carries {} bytes", to_string(type),
                           h.payload_len);
      if (data && (h.flags & kFlagZero))
        return fmt::format("{} has both data and zero flags", to_string(type));
      if ((type == MsgType::kFetchResp || type == MsgType::kWriteback) && !data)
        return fmt::format("{} without page data", to_string(type));
      return {};
    case MsgType::kHomePrepare:
    case MsgType::kHomeChange:
    case MsgType::kHomeDone:
      if (h.payload_len != sizeof(HomeRangeWire) || data)
        return fmt::format("{} carries {} bytes, not a range of {}", to_string(type), h.payload_len,
                           sizeof(HomeRangeWire));
      return {};
    case MsgType::kHomeEntry:
      if (h.payload_len != sizeof(HomeEntryWire) + (data ? kPageSize : 0))
        return fmt::format("HomeEntry {} data carries {} bytes", data ? "with" : "without", h.payload_len);
      if (data && (h.flags & kFlagZero)) return "HomeEntry has both data and zero flags";
      return {};
    case MsgType::kPeek:
      if (h.payload_len != sizeof(PeekWire) || h.flags != 0)
        return fmt::format("Peek carries {} bytes and flags {:#x}, not a run of {}", h.payload_len, h.flags,
                           sizeof(PeekWire));
      return {};
    case MsgType::kPeekResp:
      // The answers and the data they announce are checked with the request.
      if (h.payload_len < peek_resp_size(1, 0) || h.payload_len > kMaxPeekRespPayload || h.flags != 0)
        return fmt::format("PeekResp carries {} bytes and flags {:#x} ({}..{} bytes, no flag, allowed)",
                           h.payload_len, h.flags, peek_resp_size(1, 0), kMaxPeekRespPayload);
      return {};
    default:
      if (h.payload_len != 0 || data)
        return fmt::format("{} must not carry a payload ({} bytes)", to_string(type),
                           h.payload_len);
      return {};
  }
}

}  // namespace

HeaderCheck check_header(std::span<const std::byte, kHeaderSize> bytes, const WireLimits& limits) {
  WireHeader h;
  std::memcpy(&h, bytes.data(), kHeaderSize);
  auto reject = [](std::string why) { return HeaderCheck{std::nullopt, std::move(why)}; };
  if (h.magic != kWireMagic) return reject(fmt::format("bad magic {:#010x}", h.magic));
  if (h.version != kWireVersion) return reject(fmt::format("unsupported version {}", h.version));
  if (!known_type(h.type)) return reject(fmt::format("unknown message type {}", h.type));
  if (h.reserved != 0) return reject("reserved field is not zero");
  if ((h.flags & ~kKnownFlags) != 0) return reject(fmt::format("unknown flags {:#x}", h.flags));
  if (h.src >= limits.n_nodes || h.src == limits.self)
    return reject(fmt::format("source node {} is not a peer", h.src));
  if (h.dst != limits.self && !(limits.unaddressed_ok && h.dst == kNoNode))
    return reject(fmt::format("addressed to node {}, not to us", h.dst));
  if (h.payload_len > kMaxPayload)
    return reject(fmt::format("payload of {} bytes is oversized", h.payload_len));
  if (auto why = check_payload(h); !why.empty()) return reject(std::move(why));
  if (is_coherence(static_cast<MsgType>(h.type))) {
    const PageKey page = PageKey::from_raw(h.page);
    if (page.region() >= limits.region_pages.size())
      return reject(fmt::format("region {} does not exist", page.region()));
    if (page.index() >= limits.region_pages[page.region()])
      return reject(fmt::format("page {} is beyond region {} ({} pages)", page.index(),
                                page.region(), limits.region_pages[page.region()]));
  } else if (h.page != 0) {
    return reject("page field set on a non-coherence frame");
  }
  return HeaderCheck{h, {}};
}

Message to_message(const WireHeader& h, std::span<const std::byte> payload) {
  Message m;
  m.type = static_cast<MsgType>(h.type);
  m.flags = h.flags;
  m.src = h.src;
  m.dst = h.dst;
  m.txn = h.txn;
  m.page = PageKey::from_raw(h.page);
  m.payload = payload;
  return m;
}

}  // namespace aggvm::dsm
