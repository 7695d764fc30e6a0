#include "protocol/engine.h"

#include "error.h"
#include "protocol/peek.h"

namespace aggvm::dsm {

Engine::Engine(const EngineOptions& opts, const PageSpace& space, Env& env)
    : ctx_{.self = opts.self,
           .n_nodes = opts.n_nodes,
           .space = &space,
           .homes = space.homes(),
           .gone = {},
           .env = &env,
           .timeout_ns = opts.timeout_ns,
           .now_ns = 0,
           .counters = {},
           .send = [this](const Message& m) { send(m); }},
      cache_(ctx_, opts.resident_cap_pages),
      directory_(ctx_, cache_),
      rehomer_(ctx_, cache_, directory_) {}

void Engine::send(const Message& m) {
  if (m.dst != ctx_.self) {
    ctx_.env->send(m);
    return;
  }
  LocalMessage& lm = local_.emplace_back();
  lm.msg = m;
  lm.payload.assign(m.payload.begin(), m.payload.end());
}

void Engine::on_fault(PageKey page, Access access, int tid, uint64_t now_ns) {
  ctx_.now_ns = now_ns;
  cache_.on_fault(page, access, tid);
  drain_local();
}

uint64_t Engine::peek(PageKey first, uint64_t count, uint64_t now_ns, std::byte* copy_to, bool* copied) {
  ctx_.now_ns = now_ns;
  const uint64_t asked = cache_.peek(first, count, copy_to, copied);
  drain_local();
  return asked;
}

uint64_t Engine::release(PageKey first, uint64_t count, uint64_t now_ns) {
  ctx_.now_ns = now_ns;
  const uint64_t n = cache_.release_fetched(first, count);
  drain_local();
  return n;
}

void Engine::on_message(const Message& m, uint64_t now_ns) {
  ctx_.now_ns = now_ns;
  dispatch(m);
  drain_local();
}

void Engine::drain_local() {
  while (true) {
    while (!local_.empty()) {
      LocalMessage lm = std::move(local_.front());
      local_.pop_front();
      lm.msg.payload = lm.payload;
      dispatch(lm.msg);
    }
    // A move of homes waiting for transactions to end goes on once they have.
    rehomer_.progress();
    if (local_.empty()) return;
  }
}

uint64_t Engine::shed_copies(size_t max_in_flight, uint64_t now_ns) {
  ctx_.now_ns = now_ns;
  while (cache_.requests_in_flight() < max_in_flight && cache_.evict_one()) {
  }
  drain_local();
  return cache_.victims() + cache_.requests_in_flight();
}

void Engine::rehome(const PageRange& r, NodeId to, uint64_t now_ns) {
  ctx_.now_ns = now_ns;
  rehomer_.start(r, to);
  drain_local();
}

void Engine::dispatch(const Message& m) {
  try {
    if (!ctx_.space->contains(m.page))
      throw Rejected("page outside every region");
    switch (m.type) {
      case MsgType::kReadReq:
      case MsgType::kWriteReq:
      case MsgType::kEvict:
      case MsgType::kWriteback: return directory_.on_request(m);
      case MsgType::kInvAck: return directory_.on_inv_ack(m);
      case MsgType::kFetchResp: return directory_.on_fetch_resp(m);
      case MsgType::kUnblock: return directory_.on_unblock(m);
      case MsgType::kGrant: return cache_.on_grant(m);
      case MsgType::kInvalidate: return cache_.on_invalidate(m);
      case MsgType::kFetch: return cache_.on_fetch(m);
      case MsgType::kEvictAck:
      case MsgType::kWritebackAck: return cache_.on_eviction_ack(m);
      case MsgType::kRedirect: return cache_.on_redirect(m);
      case MsgType::kPeek: return answer_peek(m, ctx_, cache_, directory_);
      case MsgType::kPeekResp: return cache_.on_peek_resp(m);
      case MsgType::kHomePrepare:
      case MsgType::kHomePrepareAck:
      case MsgType::kHomeChange:
      case MsgType::kHomeChangeAck:
      case MsgType::kHomeEntry:
      case MsgType::kHomeDone:
      case MsgType::kHomeDoneAck: return rehomer_.on_message(m);
      default: throw Rejected("not a coherence message");
    }
  } catch (const Rejected& r) {
    ++ctx_.counters.rejected;
    ctx_.env->rejected(m.src, r.what());
  }
}

void Engine::check_timeouts(uint64_t now_ns) {
  ctx_.now_ns = now_ns;
  cache_.check_timeouts();
  directory_.check_timeouts();
  rehomer_.check_timeouts();
}

}  // namespace aggvm::dsm
