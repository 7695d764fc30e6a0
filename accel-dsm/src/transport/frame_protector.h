// Per-frame authenticated encryption of an authenticated connection:
// AES-256-GCM, one key per direction (from the handshake), the frame's
// 64-bit sequence number in its direction as nonce.  The 32-byte header is
// authenticated (AAD) but stays readable, because the receiver checks it
// before it buffers the payload; the payload is encrypted; a 16-byte tag
// follows the payload on the wire (payload_len does not count it).
//
// UCX streams are ordered and lossless, so the receiver expects exactly the
// next sequence number: a replayed, reordered, dropped, tampered or foreign
// frame fails authentication, and the connection must be closed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "protocol/wire.h"
#include "transport/auth.h"

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace aggvm::dsm {

inline constexpr size_t kFrameTagSize = 16;

class FrameProtector {
 public:
  FrameProtector(const FrameKey& send_key, const FrameKey& receive_key);
  ~FrameProtector();
  FrameProtector(const FrameProtector&) = delete;
  FrameProtector& operator=(const FrameProtector&) = delete;

  // Bytes a sealed frame takes on the wire.
  static size_t sealed_size(size_t payload_len) { return kHeaderSize + payload_len + kFrameTagSize; }

  // Writes header, encrypted payload and tag to out (sealed_size bytes).
  // out may not overlap the inputs.
  void seal(std::span<const std::byte, kHeaderSize> header, std::span<const std::byte> payload, std::byte* out);

  // Checks the next frame from the peer and decrypts its payload in place.
  // False if it fails authentication; the payload is then garbage.
  bool open(std::span<const std::byte, kHeaderSize> header, std::span<std::byte> payload,
            std::span<const std::byte, kFrameTagSize> tag);

  uint64_t frames_sealed() const { return send_seq_; }
  uint64_t frames_opened() const { return receive_seq_; }

 private:
  EVP_CIPHER_CTX* seal_ctx_ = nullptr;
  EVP_CIPHER_CTX* open_ctx_ = nullptr;
  uint64_t send_seq_ = 0;
  uint64_t receive_seq_ = 0;
};

}  // namespace aggvm::dsm
