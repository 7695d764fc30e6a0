#include "protocol/peek.h"

#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace aggvm::dsm {

namespace {

uint16_t answer_for(PageKey p, NodeId asker, const EngineContext& ctx, const Cache& cache,
                    const Directory& directory) {
  const bool held = cache.state(p) != PageState::kInvalid && cache.pending(p) == Cache::Pending::kNone;
  if (ctx.home(p) != ctx.self) return held && owns(cache.state(p)) ? kPeekData : kPeekRefused;
  // A transaction, or a home move whose entries may not have arrived yet.
  if (directory.busy(p) || directory.held(p)) return kPeekRefused;
  const DirEntry& d = directory.entry(p);
  if (d.owner == kNoNode) {
    // The home keeps a copy of every page written and owned by no one.
    if (cache.state(p) != PageState::kInvalid) return kPeekData;
    return d.touched ? kPeekRefused : kPeekZero;
  }
  if (d.owner == ctx.self) return held ? kPeekData : kPeekRefused;
  return d.owner == asker ? uint16_t{kPeekRefused} : d.owner;
}

}  // namespace

PeekWire peek_run(const Message& m, const PageSpace& space) {
  PeekWire w;
  if (m.payload.size() < sizeof(w)) throw Rejected(fmt::format("{} without its run", to_string(m.type)));
  std::memcpy(&w, m.payload.data(), sizeof(w));
  if (w.count == 0 || w.count > kMaxPeekRun || m.page.index() + w.count > space.regions()[m.page.region()].pages)
    throw Rejected(fmt::format("{} for {} pages from page {:#x}", to_string(m.type), w.count, space.gpa(m.page)));
  return w;
}

void answer_peek(const Message& m, EngineContext& ctx, const Cache& cache, const Directory& directory) {
  if (m.payload.size() != sizeof(PeekWire)) throw Rejected("Peek carries more than its run");
  const PeekWire w = peek_run(m, *ctx.space);

  std::vector<uint16_t> answers(w.count);
  uint32_t with_data = 0;
  for (uint32_t i = 0; i < w.count; ++i) {
    answers[i] = answer_for(PageKey(m.page.region(), m.page.index() + i), m.src, ctx, cache, directory);
    with_data += answers[i] == kPeekData;
    ctx.counters.peeks_answered += answers[i] == kPeekData || answers[i] == kPeekZero;
  }
  std::vector<std::byte> payload(peek_resp_size(w.count, 0) + with_data * kPageSize);
  std::memcpy(payload.data(), &w, sizeof(w));
  std::memcpy(payload.data() + sizeof(w), answers.data(), w.count * sizeof(uint16_t));
  std::byte* data = payload.data() + peek_resp_size(w.count, 0);
  for (uint32_t i = 0; i < w.count; ++i) {
    if (answers[i] != kPeekData) continue;
    ctx.env->read(PageKey(m.page.region(), m.page.index() + i), PageBuffer(data, kPageSize));
    data += kPageSize;
  }
  ctx.send_to(MsgType::kPeekResp, m.src, m.page, m.txn, 0, payload);
}

}  // namespace aggvm::dsm
