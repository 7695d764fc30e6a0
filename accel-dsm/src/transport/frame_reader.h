// Reassembles frames from a byte stream and validates each header before
// its payload is buffered.  Survives any input: a bad header poisons the
// stream (it cannot be resynchronised) with a reason, never a crash.  Once
// a FrameProtector is set, every later frame carries a tag and is
// delivered only if it authenticates (decrypted in place); one that does
// not poisons the stream too.
#pragma once

#include <array>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "protocol/wire.h"
#include "transport/frame_protector.h"

namespace aggvm::dsm {

class FrameReader {
 public:
  using Sink = std::function<void(const WireHeader&, std::span<const std::byte> payload)>;

  // limits_fn is read at each header: the limits tighten before authentication.
  explicit FrameReader(std::function<WireLimits()> limits_fn, uint32_t max_payload = kMaxPayload);

  // Feeds bytes; calls sink for every whole frame.  Returns false once the
  // stream is poisoned; error() says why.  The sink may change the payload
  // limit or set a protector: the change applies from the next frame on.
  bool feed(std::span<const std::byte> bytes, const Sink& sink);
  const std::string& error() const { return error_; }
  void set_max_payload(uint32_t max) { max_payload_ = max; }
  // Frames from now on are sealed by the peer's counterpart of protector
  // (not owned; must outlive the reader's use).
  void set_protector(FrameProtector* protector) { protector_ = protector; }

 private:
  bool poison(std::string why);

  std::function<WireLimits()> limits_fn_;
  uint32_t max_payload_;
  FrameProtector* protector_ = nullptr;
  std::vector<std::byte> buf_;
  std::optional<WireHeader> header_;
  std::array<std::byte, kHeaderSize> header_bytes_{};
  size_t trailer_ = 0;  // tag bytes after the payload of the frame in progress
  std::string error_;
};

}  // namespace aggvm::dsm
