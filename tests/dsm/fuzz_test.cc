// The frame decoder and the handshake's control-message decoder against
// random, truncated and mutated input, run for a bounded time: they must
// reject with a reason (DsmError for the handshake, nothing else) and never
// crash or overread (run under AddressSanitizer with -Db_sanitize=address
// to see overreads).
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "control.pb.h"
#include "transport/frame_reader.h"
#include "transport/handshake.h"

namespace aggvm::dsm {
namespace {

// One fuzz input: bytes fed in arbitrary chunks.
size_t fuzz_one(std::span<const std::byte> input, std::mt19937_64& rng, std::string* error) {
  static const std::vector<uint64_t> kPages = {256, 16};
  FrameReader reader([] { return WireLimits{.self = 0, .n_nodes = 4, .region_pages = kPages}; });
  size_t frames = 0;
  size_t pos = 0;
  while (pos < input.size()) {
    const size_t n = std::min<size_t>(input.size() - pos, 1 + rng() % 97);
    const bool ok = reader.feed(input.subspan(pos, n), [&](const WireHeader& h, std::span<const std::byte> p) {
      EXPECT_EQ(p.size(), h.payload_len);
      ++frames;
    });
    pos += n;
    if (!ok) {
      *error = reader.error();
      EXPECT_FALSE(error->empty());
      break;
    }
  }
  return frames;
}

std::vector<std::byte> valid_stream(std::mt19937_64& rng) {
  std::vector<std::byte> s;
  for (int i = 0; i < 4; ++i) {
    Message m{.type = MsgType::kGrant, .flags = kFlagData, .src = 1, .dst = 0, .txn = 7, .page = PageKey(0, rng() % 256)};
    std::vector<std::byte> page(kPageSize, std::byte{0x5a});
    m.payload = page;
    auto h = encode_header(m);
    s.insert(s.end(), h.begin(), h.end());
    s.insert(s.end(), page.begin(), page.end());
  }
  return s;
}

TEST(FrameFuzz, ValidStreamDecodesWhole) {
  std::mt19937_64 rng(1);
  std::string error;
  EXPECT_EQ(fuzz_one(valid_stream(rng), rng, &error), 4u) << error;
}

TEST(FrameFuzz, SurvivesRandomTruncatedAndMutatedInputForTwoSeconds) {
  std::mt19937_64 rng(42);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  uint64_t runs = 0, rejected = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    std::vector<std::byte> input;
    switch (runs % 3) {
      case 0:  // random bytes
        input.resize(rng() % 9000);
        for (auto& b : input) b = std::byte(rng());
        break;
      case 1:  // a valid stream, truncated
        input = valid_stream(rng);
        input.resize(rng() % input.size());
        break;
      default:  // a valid stream with flipped bits
        input = valid_stream(rng);
        for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k)
          input[rng() % std::min<size_t>(input.size(), 64)] ^= std::byte(1u << (rng() % 8));
    }
    std::string error;
    fuzz_one(input, rng, &error);
    rejected += !error.empty();
    ++runs;
  }
  EXPECT_GT(runs, 1000u);
  EXPECT_GT(rejected, runs / 4) << "random input was accepted too often";
  std::printf("fuzz: %lu inputs, %lu rejected\n", runs, rejected);
}

TEST(FrameFuzz, ProtectedStreamSurvivesMutationForOneSecond) {
  const std::vector<uint8_t> secret(32, 3);
  ClusterKey key(secret, "fuzz");
  const FrameKeys k = key.frame_keys(Nonce{}, Nonce{}, 1, 0, std::vector<uint8_t>{});
  std::mt19937_64 rng(7);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  uint64_t runs = 0, delivered_bad = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    FrameProtector sealer(k.client_to_server, k.server_to_client);
    FrameProtector opener(k.server_to_client, k.client_to_server);
    std::vector<std::byte> clean = valid_stream(rng), sealed;
    // Re-seal each 32 + 4096 byte frame of the clean stream.
    for (size_t pos = 0; pos < clean.size(); pos += kHeaderSize + kPageSize) {
      std::vector<std::byte> f(FrameProtector::sealed_size(kPageSize));
      sealer.seal(std::span<const std::byte, kHeaderSize>(clean.data() + pos, kHeaderSize),
                  std::span(clean).subspan(pos + kHeaderSize, kPageSize), f.data());
      sealed.insert(sealed.end(), f.begin(), f.end());
    }
    const size_t flip = rng() % sealed.size();
    sealed[flip] ^= std::byte(1u << (rng() % 8));
    static const std::vector<uint64_t> kPages = {256, 16};
    FrameReader reader([] { return WireLimits{.self = 0, .n_nodes = 4, .region_pages = kPages}; });
    reader.set_protector(&opener);
    size_t frames = 0;
    const bool ok = reader.feed(sealed, [&](const WireHeader&, std::span<const std::byte>) { ++frames; });
    // Frames before the flipped byte pass; the one holding it never does.
    const size_t frame_size = FrameProtector::sealed_size(kPageSize);
    delivered_bad += frames > flip / frame_size;
    EXPECT_FALSE(ok && frames == 4) << "flip at " << flip << " went unnoticed";
    ++runs;
  }
  EXPECT_EQ(delivered_bad, 0u);
  EXPECT_GT(runs, 100u);
}

// ---- the handshake's decoder --------------------------------------------

const std::vector<uint8_t> kSecret(32, 9);
const std::vector<uint8_t> kDigest(32, 1);

HandshakeParams params(const ClusterKey& key, NodeId self, FrameProtection fp = FrameProtection::kAesGcm) {
  return HandshakeParams{.self = self, .n_nodes = 3, .key = &key, .config_digest = kDigest, .protection = fp,
                         .connected = [](NodeId) { return false; },
                         .may_dial = {}};
}

std::span<const std::byte> bytes(const std::string& s) { return std::as_bytes(std::span(s)); }

// A full exchange; returns the messages in order (challenge, proof, accept).
std::vector<std::string> transcript(Handshake& client, Handshake& server) {
  std::vector<std::string> m{server.challenge()};
  m.push_back(client.on_message(1, bytes(m[0])).reply);
  m.push_back(server.on_message(2, bytes(m[1])).reply);
  EXPECT_TRUE(client.on_message(1, bytes(m[2])).reply.empty());
  return m;
}

TEST(HandshakeFuzz, ValidExchangeAgreesOnKeys) {
  ClusterKey key(kSecret, "c");
  auto client = Handshake::client(params(key, 2), 1);
  auto server = Handshake::server(params(key, 1));
  transcript(client, server);
  ASSERT_TRUE(client.done());
  ASSERT_TRUE(server.done());
  EXPECT_EQ(server.peer(), 2);
  EXPECT_EQ(client.frame_keys().client_to_server.bytes, server.frame_keys().client_to_server.bytes);
  EXPECT_EQ(client.frame_keys().server_to_client.bytes, server.frame_keys().server_to_client.bytes);
}

TEST(HandshakeFuzz, WrongSecretIsRefusedWithoutAnAccept) {
  ClusterKey key(kSecret, "c"), impostor(std::vector<uint8_t>(32, 4), "c");
  auto client = Handshake::client(params(impostor, 2), 1);
  auto server = Handshake::server(params(key, 1));
  const std::string proof = client.on_message(1, bytes(server.challenge())).reply;
  try {
    server.on_message(2, bytes(proof));
    FAIL() << "the impostor was accepted";
  } catch (const DsmError& e) {
    EXPECT_EQ(e.err(), EACCES);
    EXPECT_NE(std::string(e.what()).find("failed authentication"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(server.done());
}

TEST(HandshakeFuzz, DifferentFrameProtectionIsAClearError) {
  ClusterKey key(kSecret, "c");
  auto client = Handshake::client(params(key, 2, FrameProtection::kNone), 1);
  auto server = Handshake::server(params(key, 1, FrameProtection::kAesGcm));
  const std::string proof = client.on_message(1, bytes(server.challenge())).reply;
  const Handshake::Step s = server.on_message(2, bytes(proof));
  EXPECT_FALSE(s.reply.empty()) << "the server tells the client its protection first";
  ASSERT_TRUE(s.error);
  EXPECT_EQ(s.error->err(), EBADMSG);
  EXPECT_NE(std::string(s.error->what()).find("protects frames with none, this node with AES-256-GCM"),
            std::string::npos)
      << s.error->what();
  EXPECT_FALSE(server.done());
  try {
    client.on_message(1, bytes(s.reply));
    FAIL() << "the client accepted a different protection";
  } catch (const DsmError& e) {
    EXPECT_EQ(e.err(), EBADMSG) << e.what();
  }
}

// Random protobuf-shaped and mutated messages at every stage of both roles:
// only DsmError may come out, and a handshake never completes on them.
TEST(HandshakeFuzz, SurvivesRandomAndMutatedControlMessagesForTwoSeconds) {
  ClusterKey key(kSecret, "c");
  std::mt19937_64 rng(11);
  auto random_string = [&](size_t max) {
    std::string s(rng() % (max + 1), '\0');
    for (auto& ch : s) ch = static_cast<char>(rng());
    return s;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  uint64_t runs = 0, rejected = 0, completed = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    auto client = Handshake::client(params(key, 2), 1);
    auto server = Handshake::server(params(key, 1));
    auto ref_client = Handshake::client(params(key, 2), 1);
    auto ref_server = Handshake::server(params(key, 1));
    const std::vector<std::string> valid = transcript(ref_client, ref_server);
    // Bring the victim to a random stage with real messages.
    const int stage = static_cast<int>(rng() % 3);  // messages already consumed
    std::vector<std::string> sent{server.challenge()};
    const bool victim_is_server = stage == 1;
    if (stage >= 1) sent.push_back(client.on_message(1, bytes(sent[0])).reply);
    if (stage >= 2) sent.push_back(server.on_message(2, bytes(sent[1])).reply);
    Handshake& victim = victim_is_server ? server : client;

    std::string input;
    switch (rng() % 5) {
      case 0: input = random_string(200); break;
      case 1: {  // a valid message from another exchange, mutated
        input = valid[rng() % valid.size()];
        for (int k = 0; k < 1 + static_cast<int>(rng() % 3); ++k)
          if (!input.empty()) input[rng() % input.size()] ^= static_cast<char>(1u << (rng() % 8));
        break;
      }
      case 2: {  // truncated or extended
        input = valid[rng() % valid.size()];
        if (rng() % 2) input.resize(rng() % (input.size() + 1));
        else input += random_string(40);
        break;
      }
      case 3: {  // well-formed protobuf with hostile field values
        pb::Control m;
        switch (rng() % 5) {
          case 0: m.mutable_proof()->set_node(static_cast<uint32_t>(rng() % 6)); m.mutable_proof()->set_nonce(random_string(40)); m.mutable_proof()->set_mac(random_string(40)); break;
          case 1: m.mutable_challenge()->set_nonce(random_string(40)); break;
          case 2: m.mutable_proof()->set_mac(random_string(40)); m.mutable_proof()->set_config_digest(random_string(40)); m.mutable_proof()->set_frame_protection(static_cast<uint32_t>(rng())); break;
          case 3: m.mutable_accept()->set_mac(random_string(40)); m.mutable_accept()->set_config_digest(random_string(40)); m.mutable_accept()->set_frame_protection(static_cast<uint32_t>(rng() % 3)); break;
          default: m.mutable_goodbye(); break;
        }
        input = m.SerializeAsString();
        break;
      }
      default:  // a replay of a message this exchange already used (the
                // last one sent is the genuine next one: not a replay)
        input = sent.size() > 1 ? sent[rng() % (sent.size() - 1)] : random_string(100);
    }
    const NodeId src = static_cast<NodeId>(rng() % 4);
    try {
      const Handshake::Step s = victim.on_message(src, bytes(input));
      completed += victim.done();
      if (s.error) ++rejected;
    } catch (const DsmError&) {
      ++rejected;
    }
    // A stage that never got a genuine next message must not complete,
    // except through the valid reply a fresh random nonce cannot forge.
    EXPECT_FALSE(victim.done() && victim_is_server) << "server done without a proof";
    ++runs;
  }
  EXPECT_GT(runs, 1000u);
  EXPECT_EQ(completed, 0u) << "a handshake completed on forged or replayed input";
  EXPECT_GT(rejected, runs * 9 / 10);
  std::printf("handshake fuzz: %lu inputs, %lu rejected\n", runs, rejected);
}

}  // namespace
}  // namespace aggvm::dsm
