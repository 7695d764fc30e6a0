#include "transport/frame_protector.h"

#include <array>
#include <cstring>
#include <limits>

#include <openssl/evp.h>

#include "error.h"

namespace aggvm::dsm {

namespace {

using Iv = std::array<uint8_t, 12>;

// 96-bit GCM nonce: 32 zero bits, then the sequence number (little endian).
// Each key serves one direction of one connection, so (key, nonce) never repeats.
Iv nonce(uint64_t seq) {
  Iv iv{};
  for (int i = 0; i < 8; ++i) iv[4 + i] = static_cast<uint8_t>(seq >> (8 * i));
  return iv;
}

const uint8_t* u8(const std::byte* p) { return reinterpret_cast<const uint8_t*>(p); }
uint8_t* u8(std::byte* p) { return reinterpret_cast<uint8_t*>(p); }

EVP_CIPHER_CTX* make_ctx(const FrameKey& key, bool encrypt) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (!ctx) fail(ENOMEM, "EVP_CIPHER_CTX_new failed");
  // The key schedule is set once; each frame only sets its nonce.
  const int ok = encrypt ? EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.bytes.data(), nullptr)
                         : EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.bytes.data(), nullptr);
  if (ok != 1) {
    EVP_CIPHER_CTX_free(ctx);
    fail(EIO, "AES-256-GCM initialisation failed");
  }
  return ctx;
}

}  // namespace

FrameProtector::FrameProtector(const FrameKey& send_key, const FrameKey& receive_key) {
  seal_ctx_ = make_ctx(send_key, true);
  try {
    open_ctx_ = make_ctx(receive_key, false);
  } catch (...) {
    EVP_CIPHER_CTX_free(seal_ctx_);
    throw;
  }
}

FrameProtector::~FrameProtector() {
  // EVP_CIPHER_CTX_free wipes the key schedule.
  EVP_CIPHER_CTX_free(seal_ctx_);
  EVP_CIPHER_CTX_free(open_ctx_);
}

void FrameProtector::seal(std::span<const std::byte, kHeaderSize> header, std::span<const std::byte> payload,
                          std::byte* out) {
  if (send_seq_ == std::numeric_limits<uint64_t>::max()) fail(EOVERFLOW, "frame sequence number exhausted");
  if (payload.size() > std::numeric_limits<int>::max()) fail(EMSGSIZE, "frame payload too large");
  const Iv iv = nonce(send_seq_);
  int n = 0;
  std::memcpy(out, header.data(), kHeaderSize);
  std::byte* body = out + kHeaderSize;
  const bool ok =
      EVP_EncryptInit_ex(seal_ctx_, nullptr, nullptr, nullptr, iv.data()) == 1 &&
      EVP_EncryptUpdate(seal_ctx_, nullptr, &n, u8(header.data()), static_cast<int>(kHeaderSize)) == 1 &&
      (payload.empty() ||
       EVP_EncryptUpdate(seal_ctx_, u8(body), &n, u8(payload.data()), static_cast<int>(payload.size())) == 1) &&
      EVP_EncryptFinal_ex(seal_ctx_, u8(body + payload.size()), &n) == 1 &&
      EVP_CIPHER_CTX_ctrl(seal_ctx_, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kFrameTagSize),
                          body + payload.size()) == 1;
  if (!ok) fail(EIO, "AES-256-GCM encryption failed");
  ++send_seq_;
}

bool FrameProtector::open(std::span<const std::byte, kHeaderSize> header, std::span<std::byte> payload,
                          std::span<const std::byte, kFrameTagSize> tag) {
  if (receive_seq_ == std::numeric_limits<uint64_t>::max()) return false;
  if (payload.size() > std::numeric_limits<int>::max()) return false;
  const Iv iv = nonce(receive_seq_);
  std::array<uint8_t, kFrameTagSize> want;
  std::memcpy(want.data(), tag.data(), kFrameTagSize);
  int n = 0;
  uint8_t end[16];
  const bool ok =
      EVP_DecryptInit_ex(open_ctx_, nullptr, nullptr, nullptr, iv.data()) == 1 &&
      EVP_DecryptUpdate(open_ctx_, nullptr, &n, u8(header.data()), static_cast<int>(kHeaderSize)) == 1 &&
      (payload.empty() || EVP_DecryptUpdate(open_ctx_, u8(payload.data()), &n, u8(payload.data()),
                                            static_cast<int>(payload.size())) == 1) &&
      EVP_CIPHER_CTX_ctrl(open_ctx_, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kFrameTagSize), want.data()) == 1 &&
      EVP_DecryptFinal_ex(open_ctx_, end, &n) == 1;  // checks the tag
  if (!ok) return false;
  ++receive_seq_;
  return true;
}

}  // namespace aggvm::dsm
