// Tests of the frame header checks: every field of a hostile header.
#include <gtest/gtest.h>

#include <cstring>

#include "protocol/wire.h"

namespace aggvm::dsm {
namespace {

const std::vector<uint64_t> kRegionPages = {16, 4};
WireLimits limits() { return WireLimits{.self = 1, .n_nodes = 3, .region_pages = kRegionPages}; }

Message valid() {
  return Message{.type = MsgType::kReadReq, .src = 0, .dst = 1, .page = PageKey(1, 3)};
}

HeaderCheck check(const std::array<std::byte, kHeaderSize>& h) { return check_header(h, limits()); }

TEST(Wire, AcceptsAValidHeaderAndRoundTrips) {
  auto bytes = encode_header(valid());
  HeaderCheck r = check(bytes);
  ASSERT_TRUE(r.header) << r.error;
  Message m = to_message(*r.header, {});
  EXPECT_EQ(m.type, MsgType::kReadReq);
  EXPECT_EQ(m.page, PageKey(1, 3));
}

TEST(Wire, RejectsEachBadField) {
  struct Case { const char* name; std::function<void(WireHeader&)> mutate; };
  const std::vector<Case> cases = {
      {"magic", [](WireHeader& h) { h.magic ^= 1; }},
      {"version", [](WireHeader& h) { h.version = 9; }},
      {"type", [](WireHeader& h) { h.type = 200; }},
      {"reserved", [](WireHeader& h) { h.reserved = 1; }},
      {"flags", [](WireHeader& h) { h.flags = 0x100; }},
      {"src self", [](WireHeader& h) { h.src = 1; }},
      {"src range", [](WireHeader& h) { h.src = 7; }},
      {"dst", [](WireHeader& h) { h.dst = 2; }},
      {"dst unaddressed", [](WireHeader& h) { h.dst = kNoNode; }},
      {"region", [](WireHeader& h) { h.page = PageKey(2, 0).raw(); }},
      {"page index", [](WireHeader& h) { h.page = PageKey(1, 4).raw(); }},
      {"payload on request", [](WireHeader& h) { h.payload_len = 4096; }},
      {"oversized", [](WireHeader& h) { h.payload_len = 1u << 30; }},
      {"grant short data", [](WireHeader& h) { h.type = 3; h.flags = kFlagData; h.payload_len = 100; }},
      {"data and zero", [](WireHeader& h) { h.type = 3; h.flags = kFlagData | kFlagZero; h.payload_len = 4096; }},
      {"fetchresp without data", [](WireHeader& h) { h.type = 7; }},
      {"empty control", [](WireHeader& h) { h.type = 32; h.page = 0; }},
      {"page on control", [](WireHeader& h) { h.type = 32; h.payload_len = 8; }},
      {"exclusive read grant", [](WireHeader& h) { h.type = 3; h.flags = kFlagExclusive | kFlagData; h.payload_len = 4096; }},
      {"exclusive request", [](WireHeader& h) { h.flags = kFlagExclusive | kFlagWrite; }},
      {"clean grant", [](WireHeader& h) { h.type = 3; h.flags = kFlagWrite | kFlagClean | kFlagData; h.payload_len = 4096; }},
      {"peek without run", [](WireHeader& h) { h.type = 21; }},
      {"peek with data", [](WireHeader& h) { h.type = 21; h.flags = kFlagData; h.payload_len = 8; }},
      {"peekresp without answer", [](WireHeader& h) { h.type = 22; h.payload_len = 8; }},
      {"peekresp oversized", [](WireHeader& h) { h.type = 22; h.payload_len = kMaxPeekRespPayload + 2; }},
  };
  for (const auto& c : cases) {
    auto bytes = encode_header(valid());
    WireHeader h;
    std::memcpy(&h, bytes.data(), kHeaderSize);
    c.mutate(h);
    std::memcpy(bytes.data(), &h, kHeaderSize);
    HeaderCheck r = check(bytes);
    EXPECT_FALSE(r.header) << c.name << " was accepted";
    EXPECT_FALSE(r.error.empty()) << c.name;
  }
}

// The largest answer to a peek (16 pages) fits a frame, header included.
TEST(Wire, AcceptsTheLargestPeekAnswer) {
  Message m{.type = MsgType::kPeekResp, .src = 0, .dst = 1, .page = PageKey(0, 0)};
  auto bytes = encode_header(m);
  WireHeader h;
  std::memcpy(&h, bytes.data(), kHeaderSize);
  h.payload_len = kMaxPeekRespPayload;
  std::memcpy(bytes.data(), &h, kHeaderSize);
  HeaderCheck r = check(bytes);
  EXPECT_TRUE(r.header) << r.error;
}

// A server's Challenge goes out before the server knows who dialled: only
// a reader that expects one (a client's, before authentication) takes a
// frame addressed to no node.
TEST(Wire, TakesAnUnaddressedFrameOnlyWhereAsked) {
  auto bytes = encode_header(Message{.type = MsgType::kControl, .src = 0, .dst = kNoNode,
                                     .payload = std::as_bytes(std::span("x", 1))});
  EXPECT_FALSE(check_header(bytes, limits()).header);
  WireLimits client = limits();
  client.unaddressed_ok = true;
  HeaderCheck r = check_header(bytes, client);
  EXPECT_TRUE(r.header) << r.error;
}

}  // namespace
}  // namespace aggvm::dsm
