#include "transport/frame_reader.h"

#include <fmt/format.h>

namespace aggvm::dsm {

FrameReader::FrameReader(std::function<WireLimits()> limits_fn, uint32_t max_payload)
    : limits_fn_(std::move(limits_fn)), max_payload_(max_payload) {}

bool FrameReader::feed(std::span<const std::byte> bytes, const Sink& sink) {
  if (!error_.empty()) return false;
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
  size_t pos = 0;
  while (true) {
    if (!header_) {
      if (buf_.size() - pos < kHeaderSize) break;
      HeaderCheck c = check_header(std::span<const std::byte, kHeaderSize>(buf_.data() + pos, kHeaderSize),
                                   limits_fn_());
      if (!c.header) {
        error_ = std::move(c.error);
        buf_.clear();
        return false;
      }
      if (c.header->payload_len > max_payload_) {
        error_ = fmt::format("{} frame of {} bytes exceeds the {} allowed now",
                             to_string(static_cast<MsgType>(c.header->type)), c.header->payload_len,
                             max_payload_);
        buf_.clear();
        return false;
      }
      header_ = c.header;
      pos += kHeaderSize;
    }
    if (buf_.size() - pos < header_->payload_len) break;
    const WireHeader h = *header_;
    header_.reset();
    sink(h, std::span<const std::byte>(buf_.data() + pos, h.payload_len));
    pos += h.payload_len;
    if (!error_.empty()) return false;
  }
  buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(pos));
  return true;
}

}  // namespace aggvm::dsm
