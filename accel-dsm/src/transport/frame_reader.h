// Reassembles frames from a byte stream and validates each header before
// its payload is buffered.  Survives any input: a bad header poisons the
// stream (it cannot be resynchronised) with a reason, never a crash.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "protocol/wire.h"

namespace aggvm::dsm {

class FrameReader {
 public:
  using Sink = std::function<void(const WireHeader&, std::span<const std::byte> payload)>;

  // limits_fn is read at each header: the limits tighten before authentication.
  explicit FrameReader(std::function<WireLimits()> limits_fn, uint32_t max_payload = kMaxPayload);

  // Feeds bytes; calls sink for every whole frame.  Returns false once the
  // stream is poisoned; error() says why.
  bool feed(std::span<const std::byte> bytes, const Sink& sink);
  const std::string& error() const { return error_; }
  void set_max_payload(uint32_t max) { max_payload_ = max; }

 private:
  std::function<WireLimits()> limits_fn_;
  uint32_t max_payload_;
  std::vector<std::byte> buf_;
  std::optional<WireHeader> header_;
  std::string error_;
};

}  // namespace aggvm::dsm
