#include "transport/frame_reader.h"

#include <cstring>

#include <fmt/format.h>

namespace aggvm::dsm {

FrameReader::FrameReader(std::function<WireLimits()> limits_fn, uint32_t max_payload)
    : limits_fn_(std::move(limits_fn)), max_payload_(max_payload) {}

bool FrameReader::poison(std::string why) {
  error_ = std::move(why);
  buf_.clear();
  header_.reset();
  return false;
}

bool FrameReader::feed(std::span<const std::byte> bytes, const Sink& sink) {
  if (!error_.empty()) return false;
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
  size_t pos = 0;
  while (true) {
    if (!header_) {
      if (buf_.size() - pos < kHeaderSize) break;
      std::memcpy(header_bytes_.data(), buf_.data() + pos, kHeaderSize);
      HeaderCheck c = check_header(header_bytes_, limits_fn_());
      if (!c.header) return poison(std::move(c.error));
      if (c.header->payload_len > max_payload_)
        return poison(fmt::format("{} frame of {} bytes exceeds the {} allowed now",
                                  to_string(static_cast<MsgType>(c.header->type)), c.header->payload_len,
                                  max_payload_));
      header_ = c.header;
      trailer_ = protector_ ? kFrameTagSize : 0;
      pos += kHeaderSize;
    }
    if (buf_.size() - pos < header_->payload_len + trailer_) break;
    const WireHeader h = *header_;
    header_.reset();
    const std::span<std::byte> payload(buf_.data() + pos, h.payload_len);
    if (trailer_) {
      const std::span<const std::byte, kFrameTagSize> tag(buf_.data() + pos + h.payload_len, kFrameTagSize);
      if (!protector_->open(header_bytes_, payload, tag))
        return poison(fmt::format("{} frame {} failed authentication (tampered, replayed, reordered or "
                                  "sealed with another key)",
                                  to_string(static_cast<MsgType>(h.type)), protector_->frames_opened()));
    }
    pos += h.payload_len + trailer_;
    sink(h, payload);
    if (!error_.empty()) return false;
  }
  buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(pos));
  return true;
}

}  // namespace aggvm::dsm
