// An authenticated, encrypted connection between the head host and a
// worker host's aggvm-noded, over TCP.
//
// Before authentication each frame is a 4-byte big-endian length and a
// protobuf message of at most 4 KiB: the daemon says nothing but a nonce
// until the head proves it holds the cluster secret (the same HMAC
// challenge and response as the fabric's, accel-dsm/src/transport/auth.h),
// then proves it too, so the head never hands its command line to an
// impostor.  After that every frame is sealed with AES-256-GCM under keys
// derived from both nonces (FrameProtector): a 32-byte authenticated
// header (magic, length), the encrypted message, a 16-byte tag.  An
// on-path observer sees lengths only; a forged, replayed or reordered
// frame ends the connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "noded.pb.h"

namespace aggvm::dsm {
class ClusterKey;
class FrameProtector;
}  // namespace aggvm::dsm

namespace aggvm::libvirt {

using Clock = std::chrono::steady_clock;

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept;
  ~Fd();
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Loads a cluster secret file: it must be a regular file of mode 0600 or
// 0400 (no access for group or others), 16 bytes or more.  Throws naming
// the file and what is wrong.
std::unique_ptr<dsm::ClusterKey> load_cluster_key(const std::string& path);

// A TCP socket listening on exactly host:port (an IP literal).
Fd listen_on(const std::string& host, uint16_t port);

// Connects to host:port within timeout; throws with the address and why.
Fd connect_to(const std::string& host, uint16_t port, std::chrono::milliseconds timeout);

class Channel {
 public:
  enum class Side { kHead, kDaemon };
  Channel(Fd fd, Side side);
  ~Channel();
  Channel(Channel&&) noexcept;

  // Runs the handshake; throws DriverError on a wrong secret (either side),
  // a garbled message or the deadline.  The daemon side sends a Refusal
  // naming the reason before it throws.
  void authenticate(const dsm::ClusterKey& key, Clock::time_point deadline);

  void send(const noded::HeadMessage& m);
  void send(const noded::DaemonMessage& m);
  // Reads one sealed message; nullopt on a clean end of stream before it.
  // Throws on a deadline, a tampered frame or a garbled message.
  std::optional<noded::HeadMessage> receive_head(Clock::time_point deadline);
  std::optional<noded::DaemonMessage> receive_daemon(Clock::time_point deadline);

  int fd() const { return fd_.get(); }
  Fd release_fd() { return std::move(fd_); }

 private:
  void send_plain(const google::protobuf::MessageLite& m);
  bool receive_plain(google::protobuf::MessageLite& m, Clock::time_point deadline);
  void send_sealed(const google::protobuf::MessageLite& m);
  bool receive_sealed(google::protobuf::MessageLite& m, Clock::time_point deadline);

  Fd fd_;
  Side side_;
  std::unique_ptr<dsm::FrameProtector> protector_;
};

// Reads exactly n bytes before the deadline; false on end of stream before
// the first byte; throws on a partial read, an error or the deadline.
bool read_exact(int fd, void* buf, size_t n, Clock::time_point deadline);
void write_all(int fd, const void* buf, size_t n);

}  // namespace aggvm::libvirt
