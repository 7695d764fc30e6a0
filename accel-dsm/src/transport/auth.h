// Membership proof: HMAC-SHA256 challenge and response over the cluster
// secret.  A peer gets nothing but a random challenge before it answers it.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "protocol/types.h"

namespace aggvm::dsm {

inline constexpr size_t kNonceSize = 32;
inline constexpr size_t kMacSize = 32;
using Nonce = std::array<uint8_t, kNonceSize>;
using Mac = std::array<uint8_t, kMacSize>;

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

 private:
  std::vector<uint8_t> secret_;
  std::string cluster_;
};

// SHA-256 of a description of the configuration every node must share.
std::vector<uint8_t> config_digest(std::string_view description);

}  // namespace aggvm::dsm
