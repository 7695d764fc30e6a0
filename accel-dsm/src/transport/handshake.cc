#include "transport/handshake.h"

#include <algorithm>
#include <cstring>

#include "control.pb.h"

namespace aggvm::dsm {

namespace {

std::string to_bytes(std::span<const uint8_t> s) { return {s.begin(), s.end()}; }
std::span<const uint8_t> as_u8(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

const char* to_string(FrameProtection p) {
  switch (p) {
    case FrameProtection::kAesGcm: return "AES-256-GCM";
    case FrameProtection::kNone: return "none";
  }
  return "?";
}

Handshake::Handshake(HandshakeParams params, bool client)
    : params_(std::move(params)), client_(client), stage_(client ? Stage::kAwaitChallenge : Stage::kAwaitProof) {
  if (!params_.key) fail(EINVAL, "handshake without a cluster key");
}

Handshake Handshake::client(HandshakeParams params, NodeId server) {
  Handshake h(std::move(params), true);
  h.peer_ = server;
  h.client_nonce_ = ClusterKey::random_nonce();
  return h;
}

Handshake Handshake::server(HandshakeParams params) {
  Handshake h(std::move(params), false);
  h.server_nonce_ = ClusterKey::random_nonce();
  return h;
}

std::string Handshake::challenge() const {
  pb::Control challenge;
  challenge.mutable_challenge()->set_nonce(to_bytes(server_nonce_));
  return challenge.SerializeAsString();
}

// What the MACs cover besides nonces and ids: the digest and the protection.
std::vector<uint8_t> Handshake::bound(std::span<const uint8_t> digest, FrameProtection p) const {
  std::vector<uint8_t> out(digest.begin(), digest.end());
  out.push_back(static_cast<uint8_t>(p));
  return out;
}

std::optional<DsmError> Handshake::mismatch(std::span<const uint8_t> digest, uint32_t protection) const {
  const auto& mine = params_.config_digest;
  if (!std::equal(digest.begin(), digest.end(), mine.begin(), mine.end()))
    return DsmError(EBADMSG, fmt::format("node {} runs a different configuration (node count, regions or home "
                                         "map differ)",
                                         peer_));
  if (protection != static_cast<uint32_t>(params_.protection))
    return DsmError(EBADMSG,
                    fmt::format("node {} protects frames with {}, this node with {}: set the same frame "
                                "protection on every node",
                                peer_, to_string(static_cast<FrameProtection>(protection)),
                                to_string(params_.protection)));
  return std::nullopt;
}

Handshake::Step Handshake::on_message(NodeId src, std::span<const std::byte> payload) {
  if (stage_ == Stage::kDone || stage_ == Stage::kFailed) fail(EPROTO, "control message after the handshake");
  const Stage at = stage_;
  stage_ = Stage::kFailed;  // until this message checks out
  pb::Control msg;
  if (payload.size() > static_cast<size_t>(INT32_MAX) ||
      !msg.ParseFromArray(payload.data(), static_cast<int>(payload.size())))
    fail(EPROTO, "unparsable control message");
  const ClusterKey& key = *params_.key;
  switch (at) {
    case Stage::kAwaitProof: {
      if (!msg.has_proof() || msg.proof().nonce().size() != kNonceSize) fail(EPROTO, "expected proof");
      const uint32_t node = msg.proof().node();
      const bool may_dial = node < params_.n_nodes && node != params_.self &&
                            (params_.may_dial ? params_.may_dial(static_cast<NodeId>(node)) : node > params_.self);
      if (!may_dial || node != src)
        fail(EPROTO, "proof from node {}, which does not dial node {}", node, params_.self);
      if (params_.connected && params_.connected(static_cast<NodeId>(node)))
        fail(EPROTO, "node {} is already connected", node);
      peer_ = static_cast<NodeId>(node);
      std::memcpy(client_nonce_.data(), msg.proof().nonce().data(), kNonceSize);
      const auto digest = as_u8(msg.proof().config_digest());
      const uint32_t fp = msg.proof().frame_protection();
      if (fp > 0xff) fail(EPROTO, "frame protection {} is out of range", fp);
      const Mac want = key.prove(ClusterKey::Role::kClient, server_nonce_, client_nonce_, peer_, params_.self,
                                 bound(digest, static_cast<FrameProtection>(fp)));
      if (!key.verify(want, as_u8(msg.proof().mac())))
        fail(EACCES, "node {} failed authentication (wrong cluster secret?)", peer_);
      // Membership proven: the peer may now learn our configuration.
      pb::Control accept;
      accept.mutable_accept()->set_mac(to_bytes(key.prove(ClusterKey::Role::kServer, server_nonce_,
                                                          client_nonce_, peer_, params_.self,
                                                          bound(params_.config_digest, params_.protection))));
      accept.mutable_accept()->set_config_digest(to_bytes(params_.config_digest));
      accept.mutable_accept()->set_frame_protection(static_cast<uint32_t>(params_.protection));
      Step step{accept.SerializeAsString(), mismatch(digest, fp)};
      if (!step.error) stage_ = Stage::kDone;
      return step;
    }
    case Stage::kAwaitChallenge: {
      if (!msg.has_challenge() || msg.challenge().nonce().size() != kNonceSize || src != peer_)
        fail(EPROTO, "expected a challenge from node {}", peer_);
      std::memcpy(server_nonce_.data(), msg.challenge().nonce().data(), kNonceSize);
      pb::Control proof;
      proof.mutable_proof()->set_node(params_.self);
      proof.mutable_proof()->set_nonce(to_bytes(client_nonce_));
      proof.mutable_proof()->set_mac(to_bytes(key.prove(ClusterKey::Role::kClient, server_nonce_, client_nonce_,
                                                        params_.self, peer_,
                                                        bound(params_.config_digest, params_.protection))));
      proof.mutable_proof()->set_config_digest(to_bytes(params_.config_digest));
      proof.mutable_proof()->set_frame_protection(static_cast<uint32_t>(params_.protection));
      stage_ = Stage::kAwaitAccept;
      return Step{proof.SerializeAsString(), std::nullopt};
    }
    case Stage::kAwaitAccept: {
      if (!msg.has_accept() || src != peer_) fail(EPROTO, "expected accept");
      const auto digest = as_u8(msg.accept().config_digest());
      const uint32_t fp = msg.accept().frame_protection();
      if (fp > 0xff) fail(EPROTO, "frame protection {} is out of range", fp);
      const Mac want = key.prove(ClusterKey::Role::kServer, server_nonce_, client_nonce_, params_.self, peer_,
                                 bound(digest, static_cast<FrameProtection>(fp)));
      if (!key.verify(want, as_u8(msg.accept().mac())))
        fail(EACCES, "node {} could not prove the cluster secret", peer_);
      if (auto e = mismatch(digest, fp)) throw *e;
      stage_ = Stage::kDone;
      return Step{};
    }
    case Stage::kDone:
    case Stage::kFailed: break;
  }
  fail(EPROTO, "control message after the handshake");
}

FrameKeys Handshake::frame_keys() const {
  if (!done()) fail(EPROTO, "frame keys before the handshake is done");
  return params_.key->frame_keys(server_nonce_, client_nonce_, client_id(), server_id(),
                                 bound(params_.config_digest, params_.protection));
}

}  // namespace aggvm::dsm
