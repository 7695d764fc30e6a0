// The node-to-node fabric: one UCX stream connection per pair of nodes,
// authenticated before anything else crosses it (transport/handshake.h).
//
// After that, frames (protocol/wire.h) flow both ways, each sealed with
// AES-256-GCM unless the configuration says the fabric is trusted
// (transport/frame_protector.h).  Peers must agree on the configuration
// digest and the frame protection.  UCX picks TCP, shared memory or verbs;
// with TCP it uses only the interface that holds this node's address.
//
// Before membership closes, at most 2 * n_nodes incoming connections may be
// unauthenticated at once, and each has handshake_timeout to authenticate.
//
// Late nodes (FabricConfig::late) join a running cluster: they are not
// waited for at start, they dial every node whatever its id, and the
// nodes keep accepting them, and only them, until each has joined.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ucp/api/ucp.h>

#include "error.h"
#include "protocol/wire.h"
#include "transport/auth.h"
#include "transport/frame_reader.h"
#include "transport/handshake.h"

namespace aggvm::dsm {

class FabricSink {
 public:
  virtual ~FabricSink() = default;
  // A validated frame from an authenticated peer.
  virtual void on_frame(NodeId from, const WireHeader& h, std::span<const std::byte> payload) = 0;
  // An authenticated peer's connection failed or closed.
  virtual void on_peer_lost(NodeId peer, const std::string& why) = 0;
  // A late node authenticated after membership closed: it joins.
  virtual void on_peer_joined(NodeId) {}
  // A frame or connection was refused; the fabric goes on.
  virtual void on_rejected(const std::string& who, const std::string& why) = 0;
};

struct FabricConfig {
  NodeId self = 0;
  uint16_t n_nodes = 1;
  std::vector<std::string> addresses;  // "host:port" by node id
  std::vector<uint8_t> config_digest;
  std::string transports = "tcp";      // UCX_TLS
  std::chrono::milliseconds timeout{5000};
  // Time a connection has to authenticate; 0: half of timeout.
  std::chrono::milliseconds handshake_timeout{0};
  std::function<WireLimits()> limits;  // for frames from authenticated peers
  FrameProtection frame_protection = FrameProtection::kAesGcm;
  // Nodes that join the running cluster later (never node 0).
  NodeSet late;
};

class Fabric {
 public:
  // Creates the UCX context and worker and listens on this node's address.
  Fabric(FabricConfig config, const ClusterKey& key);
  ~Fabric();
  Fabric(const Fabric&) = delete;
  Fabric& operator=(const Fabric&) = delete;

  // Connects to and authenticates every peer but the late ones, within the
  // timeout.  A late node itself uses connect() instead.
  void connect_all(FabricSink& sink);
  // A late node joining: dials each of peers (whatever their ids) and
  // waits until every one is authenticated, within the timeout.
  void connect(FabricSink& sink, NodeSet peers);
  // Late nodes not joined yet (this node aside): their connections are
  // still accepted.
  NodeSet absent() const { return absent_; }
  // The transports the authenticated connections' frames take, each named
  // once ("posix/memory.0, tcp/eth0.0"), as UCX chose them.
  std::string frame_transports() const;


  // Queues a frame; header and payload are copied.
  void send(NodeId to, std::span<const std::byte> header, std::span<const std::byte> payload);

  // Frames are gathered per connection and go out when 64 KiB have
  // gathered, or on flush(): the caller flushes before it waits for
  // anything (arm() does, and close_all()).
  void flush();

  // Progresses the fabric and delivers frames; true if anything happened.
  bool progress(FabricSink& sink);
  // Prepares to sleep on event_fd(); false if there is work to do first.
  bool arm();
  int event_fd() const { return event_fd_; }

  // Flushes sends and closes every connection (bounded by the timeout).
  void close_all();

  // Incoming connections accepted and not yet authenticated.
  size_t unauthenticated() const;

 private:
  struct Conn;
  static void on_conn_request(ucp_conn_request_h request, void* arg);
  static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status);

  std::unique_ptr<FrameReader> make_reader(Conn& c);
  void accept(ucp_conn_request_h request);
  void dial(NodeId peer);
  static constexpr size_t kCoalesceBytes = 64 * 1024;
  void flush(Conn& c);
  void send_raw(Conn& c, std::span<const std::byte> header, std::span<const std::byte> payload);
  void send_control(Conn& c, const std::string& bytes, NodeId dst);
  void drain(Conn& c, FabricSink& sink);
  void on_frame(Conn& c, const WireHeader& h, std::span<const std::byte> payload, FabricSink& sink);
  void handshake(Conn& c, const WireHeader& h, std::span<const std::byte> payload);
  void drop(Conn& c, const std::string& why);
  void reap_failed(FabricSink* sink, std::chrono::steady_clock::time_point deadline);
  bool close_ep(Conn& c, std::chrono::steady_clock::time_point deadline);
  std::chrono::milliseconds handshake_timeout() const;
  void expire_handshakes(FabricSink& sink);
  bool all_connected(NodeSet peers) const;
  void wait_connected(FabricSink& sink, NodeSet peers);
  bool refusing() const;
  [[noreturn]] void fail_refused();
  HandshakeParams handshake_params() const;

  FabricConfig cfg_;
  const ClusterKey& key_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_listener_h listener_ = nullptr;
  int event_fd_ = -1;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<std::unique_ptr<Conn>> closing_;  // closes that outlived their deadline
  std::vector<Conn*> peers_;  // authenticated connection per node id
  bool connecting_ = false;
  NodeSet absent_;  // late nodes, other than this one, not joined yet
  std::vector<NodeId> joined_;  // late nodes just authenticated, to report
  uint64_t refused_ = 0;  // connections refused for the cap on unauthenticated ones
  // A peer's configuration differs: connect_all() fails with this once the
  // peer has had the chance to read the reason (Conn::refusing).
  std::optional<DsmError> refusal_;
};

}  // namespace aggvm::dsm
