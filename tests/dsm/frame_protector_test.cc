// Per-frame AES-256-GCM (transport/frame_protector.h) and its use by the
// frame reader: round trip, and every way a frame on the wire can be wrong.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "transport/frame_protector.h"
#include "transport/frame_reader.h"

namespace aggvm::dsm {
namespace {

const std::vector<uint64_t> kPages = {64};
WireLimits limits() { return WireLimits{.self = 0, .n_nodes = 2, .region_pages = kPages}; }

FrameKeys keys() {
  const std::vector<uint8_t> secret(32, 7);
  ClusterKey key(secret, "test");
  Nonce a{}, b{};
  a[0] = 1;
  b[0] = 2;
  return key.frame_keys(a, b, 1, 0, std::vector<uint8_t>{1, 2, 3});
}

// Node 1 (client) seals; node 0 (server) opens.
struct Pair {
  FrameKeys k = keys();
  FrameProtector client{k.client_to_server, k.server_to_client};
  FrameProtector server{k.server_to_client, k.client_to_server};
};

std::vector<std::byte> page(uint8_t fill) { return std::vector<std::byte>(kPageSize, std::byte{fill}); }

std::vector<std::byte> seal_grant(FrameProtector& p, uint64_t index, const std::vector<std::byte>& data) {
  Message m{.type = MsgType::kGrant, .flags = kFlagData, .src = 1, .dst = 0, .txn = 9, .page = PageKey(0, index)};
  m.payload = data;
  const auto h = encode_header(m);
  std::vector<std::byte> out(FrameProtector::sealed_size(data.size()));
  p.seal(h, data, out.data());
  return out;
}

// Feeds frames to a protected reader; returns the payloads delivered.
std::vector<std::vector<std::byte>> deliver(FrameProtector& opener, const std::vector<std::byte>& stream,
                                            std::string* error) {
  FrameReader reader(limits);
  reader.set_protector(&opener);
  std::vector<std::vector<std::byte>> out;
  if (!reader.feed(stream, [&](const WireHeader&, std::span<const std::byte> p) { out.emplace_back(p.begin(), p.end()); }))
    *error = reader.error();
  return out;
}

TEST(FrameProtector, RoundTripsAndHidesThePayload) {
  Pair p;
  const auto data = page(0x5a);
  auto frame = seal_grant(p.client, 3, data);
  ASSERT_EQ(frame.size(), kHeaderSize + kPageSize + kFrameTagSize);
  // The payload on the wire is not the page.
  EXPECT_NE(std::memcmp(frame.data() + kHeaderSize, data.data(), kPageSize), 0);
  std::string error;
  auto got = deliver(p.server, frame, &error);
  ASSERT_EQ(got.size(), 1u) << error;
  EXPECT_EQ(got[0], data);
  EXPECT_EQ(p.server.frames_opened(), 1u);
}

TEST(FrameProtector, EmptyPayloadRoundTrips) {
  Pair p;
  Message m{.type = MsgType::kReadReq, .src = 1, .dst = 0, .page = PageKey(0, 1)};
  const auto h = encode_header(m);
  std::vector<std::byte> frame(FrameProtector::sealed_size(0));
  p.client.seal(h, {}, frame.data());
  std::string error;
  EXPECT_EQ(deliver(p.server, frame, &error).size(), 1u) << error;
}

TEST(FrameProtector, RejectsAFlippedBitAnywhere) {
  const auto data = page(0x11);
  size_t checked = 0;
  // Every bit of the header and tag, and a spread of payload bits.
  for (size_t bit = 0; bit < 8 * FrameProtector::sealed_size(kPageSize); bit += (bit / 8 < kHeaderSize || bit / 8 >= kHeaderSize + kPageSize) ? 1 : 61) {
    Pair p;
    auto frame = seal_grant(p.client, 3, data);
    frame[bit / 8] ^= std::byte(1u << (bit % 8));
    std::string error;
    const auto got = deliver(p.server, frame, &error);
    // A flip in the header may already fail the header check; either way
    // nothing is delivered and the stream is poisoned.
    EXPECT_TRUE(got.empty()) << "bit " << bit << " flipped and accepted";
    EXPECT_FALSE(error.empty()) << "bit " << bit;
    ++checked;
  }
  EXPECT_GT(checked, 8 * (kHeaderSize + kFrameTagSize));
}

TEST(FrameProtector, RejectsReplayedFrame) {
  Pair p;
  const auto first = seal_grant(p.client, 1, page(1));
  std::vector<std::byte> stream = first;
  stream.insert(stream.end(), first.begin(), first.end());  // the same frame again
  std::string error;
  const auto got = deliver(p.server, stream, &error);
  EXPECT_EQ(got.size(), 1u);
  EXPECT_NE(error.find("failed authentication"), std::string::npos) << error;
}

TEST(FrameProtector, RejectsReorderedFrames) {
  Pair p;
  const auto first = seal_grant(p.client, 1, page(1));
  const auto second = seal_grant(p.client, 2, page(2));
  std::vector<std::byte> stream = second;
  stream.insert(stream.end(), first.begin(), first.end());
  std::string error;
  EXPECT_TRUE(deliver(p.server, stream, &error).empty());
  EXPECT_NE(error.find("failed authentication"), std::string::npos) << error;
}

TEST(FrameProtector, RejectsDroppedFrame) {
  Pair p;
  (void)seal_grant(p.client, 1, page(1));  // never arrives
  const auto second = seal_grant(p.client, 2, page(2));
  std::string error;
  EXPECT_TRUE(deliver(p.server, second, &error).empty());
}

TEST(FrameProtector, RejectsTheWrongDirectionAndOtherConnectionsKeys) {
  Pair p;
  // A frame the server sealed, fed back to the server (a reflection).
  Message m{.type = MsgType::kGrant, .flags = kFlagData, .src = 1, .dst = 0, .txn = 9, .page = PageKey(0, 1)};
  const auto data = page(3);
  m.payload = data;
  const auto h = encode_header(m);
  std::vector<std::byte> reflected(FrameProtector::sealed_size(kPageSize));
  p.server.seal(h, data, reflected.data());
  std::string error;
  EXPECT_TRUE(deliver(p.server, reflected, &error).empty());
  EXPECT_FALSE(error.empty());

  // Keys of another connection (other nonces).
  const std::vector<uint8_t> secret(32, 7);
  ClusterKey key(secret, "test");
  Nonce a{}, b{};
  a[0] = 9;
  const FrameKeys other = key.frame_keys(a, b, 1, 0, std::vector<uint8_t>{1, 2, 3});
  FrameProtector stranger(other.client_to_server, other.server_to_client);
  error.clear();
  EXPECT_TRUE(deliver(p.server, seal_grant(stranger, 1, data), &error).empty());
  EXPECT_FALSE(error.empty());
}

TEST(FrameProtector, KeysDependOnEveryInput) {
  const std::vector<uint8_t> secret(32, 7), other_secret(32, 8);
  ClusterKey key(secret, "c"), other(other_secret, "c"), other_cluster(secret, "d");
  Nonce a{}, b{};
  b[5] = 1;
  const std::vector<uint8_t> digest{1};
  const auto base = key.frame_keys(a, b, 1, 0, digest).client_to_server.bytes;
  EXPECT_NE(base, key.frame_keys(a, b, 1, 0, digest).server_to_client.bytes);
  EXPECT_NE(base, key.frame_keys(b, a, 1, 0, digest).client_to_server.bytes);
  EXPECT_NE(base, key.frame_keys(a, b, 2, 0, digest).client_to_server.bytes);
  EXPECT_NE(base, key.frame_keys(a, b, 1, 0, std::vector<uint8_t>{2}).client_to_server.bytes);
  EXPECT_NE(base, other.frame_keys(a, b, 1, 0, digest).client_to_server.bytes);
  EXPECT_NE(base, other_cluster.frame_keys(a, b, 1, 0, digest).client_to_server.bytes);
  EXPECT_EQ(base, key.frame_keys(a, b, 1, 0, digest).client_to_server.bytes);
}

TEST(FrameProtector, ManyFramesInRandomChunks) {
  Pair p;
  std::mt19937_64 rng(5);
  std::vector<std::byte> stream;
  std::vector<std::vector<std::byte>> sent;
  for (int i = 0; i < 200; ++i) {
    sent.push_back(page(static_cast<uint8_t>(i)));
    const auto f = seal_grant(p.client, i % 64, sent.back());
    stream.insert(stream.end(), f.begin(), f.end());
  }
  FrameReader reader(limits);
  reader.set_protector(&p.server);
  size_t n = 0;
  for (size_t pos = 0; pos < stream.size();) {
    const size_t len = std::min<size_t>(stream.size() - pos, 1 + rng() % 5000);
    ASSERT_TRUE(reader.feed(std::span(stream).subspan(pos, len), [&](const WireHeader&, std::span<const std::byte> d) {
      ASSERT_LT(n, sent.size());
      EXPECT_TRUE(std::equal(d.begin(), d.end(), sent[n].begin(), sent[n].end()));
      ++n;
    })) << reader.error();
    pos += len;
  }
  EXPECT_EQ(n, sent.size());
}

// Throughput of sealing and opening 4 KiB pages (printed, not asserted).
TEST(FrameProtector, MeasureCost) {
  Pair p;
  const auto data = page(0x33);
  std::vector<std::byte> frame(FrameProtector::sealed_size(kPageSize));
  Message m{.type = MsgType::kGrant, .flags = kFlagData, .src = 1, .dst = 0, .txn = 9, .page = PageKey(0, 1)};
  m.payload = data;
  const auto h = encode_header(m);
  constexpr int kFrames = 20000;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kFrames; ++i) p.client.seal(h, data, frame.data());
  const auto t1 = std::chrono::steady_clock::now();
  std::vector<std::byte> copy(frame.size());
  FrameProtector sealer(p.k.client_to_server, p.k.server_to_client);
  FrameProtector server(p.k.server_to_client, p.k.client_to_server);
  double open_ns = 0;
  for (int i = 0; i < kFrames; ++i) {
    sealer.seal(h, data, copy.data());
    const auto a = std::chrono::steady_clock::now();
    ASSERT_TRUE(server.open(std::span<const std::byte, kHeaderSize>(copy.data(), kHeaderSize),
                            std::span(copy).subspan(kHeaderSize, kPageSize),
                            std::span<const std::byte, kFrameTagSize>(copy.data() + kHeaderSize + kPageSize,
                                                                      kFrameTagSize)));
    open_ns += std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - a).count();
  }
  const double seal_ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / kFrames;
  open_ns /= kFrames;
  std::printf("frame protection: seal %.0f ns, open %.0f ns per 4 KiB page (%.0f / %.0f MB/s)\n", seal_ns,
              open_ns, kPageSize / seal_ns * 1e3, kPageSize / open_ns * 1e3);
}

}  // namespace
}  // namespace aggvm::dsm
