#include "node/calls.h"

#include "log.h"

#include <cstring>

namespace aggvm::dsm {
namespace {

// Request: id, channel, then the caller's bytes.  Reply: id, status, bytes.
struct RequestHeader {
  uint64_t id;
  uint16_t channel;
  uint16_t reserved[3];
};
struct ReplyHeader {
  uint64_t id;
  int32_t status;
  uint32_t reserved;
};

template <typename H>
std::vector<std::byte> frame(const H& header, std::span<const std::byte> body) {
  std::vector<std::byte> out(sizeof header + body.size());
  std::memcpy(out.data(), &header, sizeof header);
  if (!body.empty()) std::memcpy(out.data() + sizeof header, body.data(), body.size());
  return out;
}

}  // namespace

Calls::Calls(Node& node) : node_(node) {
  node_.register_service(kRequestChannel, [this](NodeId from, auto data) { on_request(from, data); });
  node_.register_service(kReplyChannel, [this](NodeId from, auto data) { on_reply(from, data); });
  node_.add_listener(NodeListener{
      .finished =
          [this](int err, const std::string& why) {
            std::lock_guard lock(mu_);
            closed_err_ = err;
            closed_why_ = why;
            cancel_locked(err, why, [](NodeId) { return true; });
          },
      .peer_leaving =
          [this](NodeId peer) {
            std::lock_guard lock(mu_);
            cancel_locked(ESHUTDOWN, fmt::format("node {} is shutting down", peer),
                          [peer](NodeId to) { return to == peer; });
          },
  });
}

template <typename Pred>
size_t Calls::cancel_locked(int err, const std::string& why, Pred pred) {
  size_t n = 0;
  for (auto& [id, entry] : pending_) {
    Pending& p = *entry.second;
    if (p.done || !pred(entry.first)) continue;
    p.done = true;
    p.status = err;
    p.cancelled = why.empty() ? std::string("call cancelled") : why;
    p.cv.notify_one();
    ++n;
  }
  return n;
}

size_t Calls::cancel_all(int err, const std::string& why) {
  if (err <= 0) fail(EINVAL, "calls cancelled with errno {}: a positive errno is needed", err);
  std::lock_guard lock(mu_);
  return cancel_locked(err, why, [](NodeId) { return true; });
}

void Calls::handle(uint16_t channel, Handler handler) {
  if (channel >= kFirstReservedChannel) fail(EINVAL, "call channel {} is reserved", channel);
  add_handler(channel, std::move(handler));
}

void Calls::handle_reserved(uint16_t channel, Handler handler) {
  if (channel < kFirstReservedChannel) fail(EINVAL, "call channel {} is not a reserved one", channel);
  add_handler(channel, std::move(handler));
}

void Calls::add_handler(uint16_t channel, Handler handler) {
  if (!handler) fail(EINVAL, "no handler for call channel {}", channel);
  if (!handlers_.emplace(channel, std::move(handler)).second)
    fail(EEXIST, "call channel {} is already registered", channel);
}

size_t Calls::call(NodeId to, uint16_t channel, std::span<const std::byte> request, std::span<std::byte> reply,
                   std::chrono::milliseconds timeout) {
  Pending p;
  const uint64_t id = next_id_.fetch_add(1, std::memory_order_relaxed);
  {
    // Checked under mu_, which the listeners take: a stop, failure or
    // goodbye either shows here or finds this call pending.
    std::lock_guard lock(mu_);
    if (closed_err_) throw DsmError(closed_err_, closed_why_);
    if (to != node_.self() && node_.peer_leaving(to)) fail(ESHUTDOWN, "node {} is shutting down", to);
    pending_.emplace(id, std::make_pair(to, &p));
  }
  struct Forget {
    Calls* self;
    uint64_t id;
    ~Forget() {
      std::lock_guard lock(self->mu_);
      self->pending_.erase(id);
    }
  } forget{this, id};

  node_.send_service(to, kRequestChannel, frame(RequestHeader{id, channel, {}}, request));

  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(mu_);
  if (!p.cv.wait_until(lock, deadline, [&] { return p.done; }))
    fail(ETIMEDOUT, "node {} did not answer a call on channel {} within {} ms", to, channel, timeout.count());
  if (!p.cancelled.empty()) throw DsmError(p.status, p.cancelled);
  if (p.status != 0) fail(p.status, "node {} refused a call on channel {}: {}", to, channel, std::strerror(p.status));
  if (p.data.size() > reply.size())
    fail(EMSGSIZE, "node {} answered {} bytes on channel {}, expected at most {}", to, p.data.size(), channel,
         reply.size());
  std::memcpy(reply.data(), p.data.data(), p.data.size());
  return p.data.size();
}

void Calls::reply(NodeId to, uint64_t call_id, int status, std::span<const std::byte> data) {
  node_.send_service(to, kReplyChannel, frame(ReplyHeader{call_id, status, 0}, data));
}

void Calls::on_request(NodeId from, std::span<const std::byte> payload) {
  RequestHeader h;
  if (payload.size() < sizeof h) {
    log().warn("aggvm-dsm: node {} sent a call request of {} bytes, too short", from, payload.size());
    return;
  }
  std::memcpy(&h, payload.data(), sizeof h);
  auto it = handlers_.find(h.channel);
  if (it == handlers_.end()) {
    log().warn("aggvm-dsm: node {} called channel {}, which has no handler", from, h.channel);
    reply(from, h.id, ENOSYS, {});
    return;
  }
  it->second(from, h.id, payload.subspan(sizeof h));
}

void Calls::on_reply(NodeId from, std::span<const std::byte> payload) {
  ReplyHeader h;
  if (payload.size() < sizeof h) {
    log().warn("aggvm-dsm: node {} sent a call reply of {} bytes, too short", from, payload.size());
    return;
  }
  std::memcpy(&h, payload.data(), sizeof h);
  std::lock_guard lock(mu_);
  auto it = pending_.find(h.id);
  // A late reply to a call that timed out, or one from a node that was not
  // asked: either way nobody waits for it.
  if (it == pending_.end() || it->second.first != from) return;
  Pending& p = *it->second.second;
  p.status = h.status < 0 ? EPROTO : h.status;
  p.data.assign(payload.begin() + sizeof h, payload.end());
  p.done = true;
  p.cv.notify_one();
}

}  // namespace aggvm::dsm
