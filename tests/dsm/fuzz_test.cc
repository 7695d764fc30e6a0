// The frame decoder against random, truncated and mutated input, run for a
// bounded time: it must reject with a reason and never crash or overread
// (run under AddressSanitizer with -Db_sanitize=address to see overreads).
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "transport/frame_reader.h"

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

}  // namespace
}  // namespace aggvm::dsm
