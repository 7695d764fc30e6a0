// Membership proof: HMAC-SHA256 challenge and response over the cluster
// secret.  A peer gets nothing but a random challenge before it answers it.
// The same secret and the handshake's nonces give each connection its own
// frame keys (HKDF-SHA256), one per direction.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "protocol/types.h"

namespace aggvm::dsm {

inline constexpr size_t kNonceSize = 32;
inline constexpr size_t kMacSize = 32;
inline constexpr size_t kFrameKeySize = 32;  // AES-256
using Nonce = std::array<uint8_t, kNonceSize>;
using Mac = std::array<uint8_t, kMacSize>;

// Overwrites memory (OPENSSL_cleanse) before it is released: secrets and
// keys do not linger in freed heap blocks.
void cleanse(void* p, size_t n);

template <typename T>
struct CleansingAllocator {
  using value_type = T;
  CleansingAllocator() = default;
  template <typename U>
  CleansingAllocator(const CleansingAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, size_t n) noexcept {
    cleanse(p, n * sizeof(T));
    std::allocator<T>().deallocate(p, n);
  }
  template <typename U>
  bool operator==(const CleansingAllocator<U>&) const noexcept { return true; }
};

// Bytes of a secret: every buffer that ever held them is wiped when freed.
using SecretBytes = std::vector<uint8_t, CleansingAllocator<uint8_t>>;

// A key that is wiped when it goes away.
struct FrameKey {
  std::array<uint8_t, kFrameKeySize> bytes{};
  FrameKey() = default;
  FrameKey(const FrameKey&) = default;
  FrameKey& operator=(const FrameKey&) = default;
  ~FrameKey() { cleanse(bytes.data(), bytes.size()); }
};

// The two keys of one connection.
struct FrameKeys {
  FrameKey client_to_server;
  FrameKey server_to_client;
};

class ClusterKey {
 public:
  // Throws DsmError(EINVAL) when the secret is shorter than 16 bytes.
  ClusterKey(std::span<const uint8_t> secret, std::string cluster_name);

  static Nonce random_nonce();

  enum class Role : uint8_t { kClient, kServer };
  // MAC binding role, both nonces (challenger's first), both node ids, the
  // cluster name and the configuration digest.
  Mac prove(Role role, const Nonce& server_nonce, const Nonce& client_nonce, NodeId client,
            NodeId server, std::span<const uint8_t> config_digest) const;
  // Constant-time comparison of a received MAC.
  bool verify(const Mac& expected, std::span<const uint8_t> received) const;

  // HKDF-SHA256 of the secret, salted with both nonces, bound to both ids,
  // the cluster and the configuration: fresh keys for every connection.
  FrameKeys frame_keys(const Nonce& server_nonce, const Nonce& client_nonce, NodeId client, NodeId server,
                       std::span<const uint8_t> config_digest) const;

 private:
  SecretBytes secret_;
  std::string cluster_;
};

// SHA-256 of a description of the configuration every node must share.
std::vector<uint8_t> config_digest(std::string_view description);

}  // namespace aggvm::dsm
