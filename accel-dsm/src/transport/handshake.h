// The membership handshake of one connection as a pure state machine (no
// UCX): it decodes the peer's control messages, checks them and says what
// to answer, so it can be tested and fuzzed on its own.
//
//   client (higher id)                      server (lower id)
//                                     <-    Challenge{nonce_s}   (on accept)
//   Proof{node, nonce_c, HMAC_c, digest, fp} ->  (wrong secret: closed)
//                                     <-    Accept{HMAC_s, digest, fp}
//
// fp is the frame protection each side uses; both HMACs cover it, and
// peers must agree on it and on the configuration digest.
//
// The server speaks first because of UCX 1.13: its async thread sets a
// flag on a new server-side endpoint (ucp_cm_server_conn_notify_cb) with a
// plain read-modify-write, while the main thread may be setting the
// endpoint's "stream has data" flag for the client's first bytes.  When
// that flag is lost, the data is never reported (the handshake times out)
// and closing the endpoint aborts in ucp_stream_ep_cleanup.  A client that
// waits for the server's Challenge sends nothing until the server's
// endpoint is connected, after that callback.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "error.h"
#include "transport/auth.h"

namespace aggvm::dsm {

// How frames after the handshake are protected.  Zero is the secure default.
enum class FrameProtection : uint8_t {
  kAesGcm = 0,  // AES-256-GCM per frame: confidential and authenticated
  kNone = 1,    // plain frames: only on a fabric no one else can reach
};
const char* to_string(FrameProtection p);

struct HandshakeParams {
  NodeId self = 0;
  uint16_t n_nodes = 1;
  const ClusterKey* key = nullptr;
  std::vector<uint8_t> config_digest;
  FrameProtection protection = FrameProtection::kAesGcm;
  // True if the node already has an authenticated connection to node.
  std::function<bool(NodeId)> connected;
  // True if node may dial this one now; unset: the nodes of higher ids.
  std::function<bool(NodeId)> may_dial;
};

class Handshake {
 public:
  // The client dials server and waits for its challenge.
  static Handshake client(HandshakeParams params, NodeId server);
  // The server accepted a connection; send challenge() first.
  static Handshake server(HandshakeParams params);

  std::string challenge() const;

  struct Step {
    std::string reply;              // control message to send, if not empty
    std::optional<DsmError> error;  // after the reply: the configurations differ (EBADMSG)
  };
  // Consumes one control message from the peer (src: the header's source).
  // Throws DsmError: EPROTO for a malformed or unexpected message, EACCES
  // for a wrong proof.  After a throw the connection must be dropped.
  Step on_message(NodeId src, std::span<const std::byte> payload);

  bool done() const { return stage_ == Stage::kDone; }
  bool is_client() const { return client_; }
  NodeId peer() const { return peer_; }  // on a server, kNoNode until a Proof names it
  // The connection's frame keys; only once done().
  FrameKeys frame_keys() const;

 private:
  enum class Stage { kAwaitChallenge, kAwaitProof, kAwaitAccept, kDone, kFailed };
  Handshake(HandshakeParams params, bool client);
  std::vector<uint8_t> bound(std::span<const uint8_t> digest, FrameProtection p) const;
  NodeId client_id() const { return client_ ? params_.self : peer_; }
  NodeId server_id() const { return client_ ? peer_ : params_.self; }
  std::optional<DsmError> mismatch(std::span<const uint8_t> digest, uint32_t protection) const;

  HandshakeParams params_;
  bool client_;
  Stage stage_;
  NodeId peer_ = kNoNode;
  Nonce client_nonce_{};
  Nonce server_nonce_{};
};

}  // namespace aggvm::dsm
