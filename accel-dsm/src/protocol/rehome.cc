#include "protocol/rehome.h"

#include <array>
#include <cstring>

#include <fmt/format.h>

#include "error.h"

namespace aggvm::dsm {

Rehomer::Rehomer(EngineContext& ctx, Cache& cache, Directory& directory)
    : ctx_(ctx), cache_(cache), directory_(directory) {}

bool Rehomer::homed_on(const PageRange& r, NodeId node) const {
  for (uint64_t i = r.first; i < r.end; ++i)
    if (ctx_.home(PageKey(r.region, i)) != node) return false;
  return true;
}

void Rehomer::assign(const PageRange& r, NodeId node) {
  const uint64_t base = ctx_.space->gpa(PageKey(r.region, 0));
  ctx_.homes.assign(base + r.first * kPageSize, base + r.end * kPageSize, node);
}

// ---- the old home -----------------------------------------------------------

void Rehomer::start(const PageRange& r, NodeId to) {
  check(r, to);
  out_ = Out{.range = r, .to = to, .id = next_id_++, .phase = Phase::kDraining, .awaiting = {}, .deadline_ns = 0};
  directory_.hold(r);
  progress();
}

void Rehomer::check(const PageRange& r, NodeId to) const {
  if (out_) fail(EBUSY, "node {} is already moving the home of pages {}..{}", ctx_.self, out_->range.first,
                 out_->range.end);
  if (to >= ctx_.n_nodes || to == ctx_.self)
    fail(EINVAL, "cannot move pages from node {} to node {}", ctx_.self, to);
  if (ctx_.gone.test(to)) fail(EINVAL, "cannot move pages to node {}: it is not in the cluster now", to);
  if (r.region >= ctx_.space->regions().size() || r.first >= r.end ||
      r.end > ctx_.space->regions()[r.region].pages)
    fail(EINVAL, "pages {}..{} are not a range of region {}", r.first, r.end, r.region);
  if (!homed_on(r, ctx_.self))
    fail(EINVAL, "pages {}..{} of region {} are not all homed on node {}", r.first, r.end, r.region, ctx_.self);
  for (const In& in : in_)
    if (in.range.region == r.region && in.range.first < r.end && r.first < in.range.end)
      fail(EBUSY, "pages {}..{} are still moving to node {} from node {}", in.range.first, in.range.end, ctx_.self,
           in.from);
}

void Rehomer::progress() {
  if (!out_ || out_->phase != Phase::kDraining || directory_.active_in(out_->range)) return;
  const PageRange& r = out_->range;
  out_->phase = Phase::kPreparing;
  out_->awaiting.reset();
  out_->awaiting.set(out_->to);
  out_->deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
  const HomeRangeWire w{.count = r.pages(), .node = out_->to, .reserved = {}};
  ctx_.send_to(MsgType::kHomePrepare, out_->to, PageKey(r.region, r.first), out_->id, 0,
               std::as_bytes(std::span(&w, 1)));
}

void Rehomer::on_ack(const Message& m, Phase phase) {
  if (!out_ || out_->phase != phase || m.txn != out_->id || !out_->awaiting.test(m.src) ||
      m.page != PageKey(out_->range.region, out_->range.first))
    throw Rejected(fmt::format("{} that matches no move of this node", to_string(m.type)));
  out_->awaiting.reset(m.src);
  out_->deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
  if (out_->awaiting.any()) return;
  const PageRange r = out_->range;
  switch (phase) {
    case Phase::kPreparing: {
      // The new home holds the range: tell everybody else.
      out_->phase = Phase::kChanging;
      const HomeRangeWire w{.count = r.pages(), .node = out_->to, .reserved = {}};
      for (NodeId n = 0; n < ctx_.n_nodes; ++n)
        if (n != ctx_.self && n != out_->to && !ctx_.gone.test(n)) out_->awaiting.set(n);
      for (NodeId n = 0; n < ctx_.n_nodes; ++n)
        if (out_->awaiting.test(n))
          ctx_.send_to(MsgType::kHomeChange, n, PageKey(r.region, r.first), out_->id, 0,
                       std::as_bytes(std::span(&w, 1)));
      if (out_->awaiting.none()) transfer();
      return;
    }
    case Phase::kChanging:
      return transfer();
    case Phase::kTransferring:
      out_.reset();
      ++moves_done_;
      return;
    case Phase::kDraining:
      break;
  }
  fail(EPROTO, "move of pages {}..{} acknowledged while draining", r.first, r.end);
}

// Every node knows the new home: hand over the entries and this node's copies.
void Rehomer::transfer() {
  const PageRange r = out_->range;
  const NodeId to = out_->to;
  assign(r, to);
  uint64_t sent = 0;
  struct EntryFrame {
    HomeEntryWire entry;
    std::array<std::byte, kPageSize> data;
  } frame;
  static_assert(sizeof(EntryFrame) == sizeof(HomeEntryWire) + kPageSize);
  // This node's copies, all unmapped in one go before any is sent.
  std::vector<Cache::PageCopy> copies;
  std::vector<bool> held;
  cache_.give_up_home_copies(r, copies, held);
  for (uint64_t i = r.first; i < r.end; ++i) {
    const PageKey page(r.region, i);
    DirEntry d = directory_.mutable_entry(page);
    const bool has_data = held[i - r.first];
    if (has_data) frame.data = copies[i - r.first];
    d.sharers.reset(ctx_.self);
    if (d.owner == ctx_.self) d.owner = kNoNode;
    if (d.owner == kNoNode && d.touched && !has_data)
      fail(EPROTO, "page {:#x} was written and has no owner, but its home holds no copy", ctx_.space->gpa(page));
    if (!has_data && d.owner == kNoNode && d.sharers.none() && !d.touched) continue;  // zero, held nowhere
    frame.entry = HomeEntryWire{.sharers = d.sharers.to_ullong(), .owner = d.owner,
                                .touched = static_cast<uint8_t>(d.touched), .reserved = {}};
    const auto bytes = std::as_bytes(std::span(&frame, 1));
    ctx_.send_to(MsgType::kHomeEntry, to, page, out_->id, has_data ? kFlagData : 0,
                 has_data ? bytes : bytes.first(sizeof(HomeEntryWire)));
    ++sent;
  }
  directory_.remove_pages(r);  // the requests it held: Redirect
  directory_.release(r);
  ctx_.counters.rehomed_out_pages += r.pages();
  out_->phase = Phase::kTransferring;
  out_->awaiting.reset();
  out_->awaiting.set(to);
  out_->deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
  const HomeRangeWire w{.count = sent, .node = to, .reserved = {}};
  ctx_.send_to(MsgType::kHomeDone, to, PageKey(r.region, r.first), out_->id, 0,
               std::as_bytes(std::span(&w, 1)));
}

// ---- the new home and the other nodes ---------------------------------------

PageRange Rehomer::range_of(const Message& m, const HomeRangeWire& w) const {
  const PageRange r{.region = m.page.region(), .first = m.page.index(), .end = m.page.index() + w.count};
  if (w.count == 0 || w.count > ctx_.space->regions()[r.region].pages - r.first)
    throw Rejected(fmt::format("{} of {} pages from page {} is not a range of region {}", to_string(m.type),
                               w.count, r.first, r.region));
  if (w.node >= ctx_.n_nodes || w.node == m.src)
    throw Rejected(fmt::format("{} names node {} as the new home", to_string(m.type), w.node));
  if (!homed_on(r, m.src))
    throw Rejected(fmt::format("{} from node {} for pages {}..{}, not all homed there", to_string(m.type), m.src,
                               r.first, r.end));
  return r;
}

void Rehomer::on_prepare(const Message& m) {
  HomeRangeWire w;
  std::memcpy(&w, m.payload.data(), sizeof w);
  if (w.node != ctx_.self) throw Rejected(fmt::format("HomePrepare names node {}, not this one", w.node));
  const PageRange r = range_of(m, w);
  for (const In& in : in_)
    if (in.from == m.src) throw Rejected(fmt::format("node {} is already moving pages here", m.src));
  assign(r, ctx_.self);
  directory_.add_pages(r);
  directory_.hold(r);
  for (uint64_t i = r.first; i < r.end; ++i) cache_.became_home(PageKey(r.region, i));
  // The old home first waits for every other node's HomeChangeAck (its own
  // timeout), then hands the entries over.
  in_.push_back(In{.range = r, .from = m.src, .id = m.txn, .received = 0, .expected = std::nullopt,
                   .deadline_ns = ctx_.now_ns + 2 * ctx_.timeout_ns});
  ctx_.send_to(MsgType::kHomePrepareAck, m.src, m.page, m.txn);
}

void Rehomer::on_change(const Message& m) {
  HomeRangeWire w;
  std::memcpy(&w, m.payload.data(), sizeof w);
  if (w.node == ctx_.self) throw Rejected("HomeChange names this node: it expected HomePrepare");
  assign(range_of(m, w), w.node);
  ctx_.send_to(MsgType::kHomeChangeAck, m.src, m.page, m.txn);
}

Rehomer::In& Rehomer::incoming(const Message& m) {
  for (In& in : in_)
    if (in.from == m.src && in.id == m.txn) return in;
  throw Rejected(fmt::format("{} that matches no move to this node", to_string(m.type)));
}

void Rehomer::on_entry(const Message& m) {
  In& in = incoming(m);
  if (!in.range.contains(m.page)) throw Rejected("HomeEntry for a page outside the move");
  HomeEntryWire w;
  std::memcpy(&w, m.payload.data(), sizeof w);
  const NodeSet sharers(w.sharers);
  if (w.owner != kNoNode && (w.owner >= ctx_.n_nodes || sharers.any()))
    throw Rejected(fmt::format("HomeEntry with owner {} and sharers {:#x}", w.owner, w.sharers));
  if ((sharers >> ctx_.n_nodes).any()) throw Rejected("HomeEntry names sharers outside the cluster");
  if (m.has(kFlagData) && w.owner != kNoNode) throw Rejected("HomeEntry with the page and an owner");
  DirEntry& d = directory_.mutable_entry(m.page);
  d.sharers = sharers;
  d.owner = w.owner;
  d.touched = w.touched != 0;
  if (m.has(kFlagData)) {
    // The old home's copy becomes this node's home copy, unless it holds
    // one already (a sharer's copy is the same content).
    if (cache_.state(m.page) == PageState::kInvalid)
      cache_.install_home_copy(m.page, m.payload.subspan<sizeof(HomeEntryWire), kPageSize>());
    d.sharers.set(ctx_.self);
  }
  ++in.received;
  in.deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
  if (in.expected && in.received == *in.expected) finish_in(in_.begin() + (&in - in_.data()));
}

void Rehomer::on_done(const Message& m) {
  In& in = incoming(m);
  if (m.page != PageKey(in.range.region, in.range.first) || in.expected)
    throw Rejected("HomeDone that matches no move to this node");
  HomeRangeWire w;
  std::memcpy(&w, m.payload.data(), sizeof w);
  if (w.count > in.range.pages()) throw Rejected(fmt::format("HomeDone counts {} entries", w.count));
  in.expected = w.count;
  in.deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
  if (in.received == *in.expected) finish_in(in_.begin() + (&in - in_.data()));
}

void Rehomer::finish_in(std::vector<In>::iterator it) {
  const In in = *it;
  in_.erase(it);
  ctx_.counters.rehomed_in_pages += in.range.pages();
  ctx_.send_to(MsgType::kHomeDoneAck, in.from, PageKey(in.range.region, in.range.first), in.id);
  directory_.release(in.range);  // the requests that waited start now
}

void Rehomer::on_message(const Message& m) {
  switch (m.type) {
    case MsgType::kHomePrepare: return on_prepare(m);
    case MsgType::kHomePrepareAck: return on_ack(m, Phase::kPreparing);
    case MsgType::kHomeChange: return on_change(m);
    case MsgType::kHomeChangeAck: return on_ack(m, Phase::kChanging);
    case MsgType::kHomeEntry: return on_entry(m);
    case MsgType::kHomeDone: return on_done(m);
    case MsgType::kHomeDoneAck: return on_ack(m, Phase::kTransferring);
    default: throw Rejected("not a re-homing message");
  }
}

void Rehomer::check_timeouts() const {
  const uint64_t ms = ctx_.timeout_ns / 1'000'000;
  if (out_ && out_->phase != Phase::kDraining && out_->deadline_ns <= ctx_.now_ns)
    for (NodeId n = 0; n < ctx_.n_nodes; ++n)
      if (out_->awaiting.test(n))
        fail_peer(n, ETIMEDOUT, "node {} did not answer the move of pages {}..{} from node {} to node {} within {} ms",
                  n, out_->range.first, out_->range.end, ctx_.self, out_->to, ms);
  for (const In& in : in_)
    if (in.deadline_ns <= ctx_.now_ns)
      fail_peer(in.from, ETIMEDOUT, "node {} did not hand over pages {}..{} within {} ms", in.from, in.range.first,
                in.range.end, ms);
}

}  // namespace aggvm::dsm
