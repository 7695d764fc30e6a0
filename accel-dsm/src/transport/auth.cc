#include "transport/auth.h"

#include <algorithm>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "error.h"

namespace aggvm::dsm {

void cleanse(void* p, size_t n) {
  if (p && n) OPENSSL_cleanse(p, n);
}

ClusterKey::ClusterKey(std::span<const uint8_t> secret, std::string cluster_name)
    : secret_(secret.begin(), secret.end()), cluster_(std::move(cluster_name)) {
  if (secret_.size() < 16)
    fail(EINVAL, "cluster secret has {} bytes; at least 16 are needed", secret_.size());
}

Nonce ClusterKey::random_nonce() {
  Nonce n;
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1) fail(EIO, "RAND_bytes failed");
  return n;
}

Mac ClusterKey::prove(Role role, const Nonce& server_nonce, const Nonce& client_nonce,
                      NodeId client, NodeId server, std::span<const uint8_t> digest) const {
  std::vector<uint8_t> msg;
  const std::string label = role == Role::kClient ? "aggvm-dsm/1 client" : "aggvm-dsm/1 server";
  msg.insert(msg.end(), label.begin(), label.end());
  msg.push_back(0);
  msg.insert(msg.end(), cluster_.begin(), cluster_.end());
  msg.push_back(0);
  msg.insert(msg.end(), server_nonce.begin(), server_nonce.end());
  msg.insert(msg.end(), client_nonce.begin(), client_nonce.end());
  for (NodeId id : {client, server}) {
    msg.push_back(static_cast<uint8_t>(id));
    msg.push_back(static_cast<uint8_t>(id >> 8));
  }
  msg.insert(msg.end(), digest.begin(), digest.end());
  Mac mac;
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), secret_.data(), static_cast<int>(secret_.size()), msg.data(), msg.size(),
            mac.data(), &len) ||
      len != mac.size())
    fail(EIO, "HMAC-SHA256 failed");
  return mac;
}

bool ClusterKey::verify(const Mac& expected, std::span<const uint8_t> received) const {
  return received.size() == expected.size() &&
         CRYPTO_memcmp(expected.data(), received.data(), expected.size()) == 0;
}

FrameKeys ClusterKey::frame_keys(const Nonce& server_nonce, const Nonce& client_nonce, NodeId client,
                                 NodeId server, std::span<const uint8_t> digest) const {
  std::vector<uint8_t> salt(server_nonce.begin(), server_nonce.end());
  salt.insert(salt.end(), client_nonce.begin(), client_nonce.end());
  std::vector<uint8_t> info;
  const std::string label = "aggvm-dsm/1 frame keys";
  info.insert(info.end(), label.begin(), label.end());
  info.push_back(0);
  info.insert(info.end(), cluster_.begin(), cluster_.end());
  info.push_back(0);
  for (NodeId id : {client, server}) {
    info.push_back(static_cast<uint8_t>(id));
    info.push_back(static_cast<uint8_t>(id >> 8));
  }
  info.insert(info.end(), digest.begin(), digest.end());

  std::array<uint8_t, 2 * kFrameKeySize> out{};
  size_t len = out.size();
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr),
                                                                   &EVP_PKEY_CTX_free);
  const bool ok = ctx && EVP_PKEY_derive_init(ctx.get()) > 0 &&
                  EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) > 0 &&
                  EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), salt.data(), static_cast<int>(salt.size())) > 0 &&
                  EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), secret_.data(), static_cast<int>(secret_.size())) > 0 &&
                  EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), info.data(), static_cast<int>(info.size())) > 0 &&
                  EVP_PKEY_derive(ctx.get(), out.data(), &len) > 0 && len == out.size();
  FrameKeys keys;
  if (ok) {
    std::copy_n(out.begin(), kFrameKeySize, keys.client_to_server.bytes.begin());
    std::copy_n(out.begin() + kFrameKeySize, kFrameKeySize, keys.server_to_client.bytes.begin());
  }
  cleanse(out.data(), out.size());
  if (!ok) fail(EIO, "HKDF-SHA256 failed");
  return keys;
}

std::vector<uint8_t> config_digest(std::string_view description) {
  std::vector<uint8_t> out(SHA256_DIGEST_LENGTH);
  SHA256(reinterpret_cast<const uint8_t*>(description.data()), description.size(), out.data());
  return out;
}

}  // namespace aggvm::dsm
