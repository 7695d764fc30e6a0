#include "protocol/directory.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "error.h"

namespace aggvm::dsm {

// Entries for the pages homed here only: a node homing 1/N of a multi-TB
// guest keeps 1/N of its directory.
Directory::Directory(EngineContext& ctx, Cache& cache) : ctx_(ctx), cache_(cache) {
  for (uint32_t r = 0; r < ctx_.space->regions().size(); ++r) {
    auto& segs = segments_.emplace_back();
    for (const auto& [first, last] : ctx_.space->homed_runs(r, ctx_.self)) {
      segs.push_back(Segment{first, std::vector<DirEntry>(last - first)});
      entry_count_ += last - first;
    }
  }
}

const DirEntry* Directory::find(PageKey p) const {
  if (p.region() >= segments_.size()) return nullptr;
  const auto& segs = segments_[p.region()];
  auto it = std::upper_bound(segs.begin(), segs.end(), p.index(),
                             [](uint64_t i, const Segment& s) { return i < s.first; });
  if (it == segs.begin()) return nullptr;
  --it;
  const uint64_t k = p.index() - it->first;
  return k < it->entries.size() ? &it->entries[k] : nullptr;
}

const DirEntry& Directory::entry(PageKey p) const {
  static const DirEntry kNotHomed{};
  const DirEntry* d = find(p);
  return d ? *d : kNotHomed;
}

DirEntry& Directory::entry(PageKey p) {
  // Every caller checked the page is homed here (on_request) or has a
  // transaction, which only homed pages get.
  const DirEntry* d = find(p);
  if (!d) fail(EPROTO, "page {:#x} has no directory entry on node {}", ctx_.space->gpa(p), ctx_.self);
  return const_cast<DirEntry&>(*d);
}

void Directory::on_request(const Message& m) {
  if (ctx_.home(m.page) != ctx_.self) {
    // Homed here once, moved since, and the sender asked before it knew:
    // it asks the new home.  Any other request here is a broken sender's.
    const bool moved = std::any_of(moved_away_.begin(), moved_away_.end(),
                                   [&](const PageRange& r) { return r.contains(m.page); });
    if (moved) return ctx_.send_to(MsgType::kRedirect, m.src, m.page, m.txn);
    throw Rejected(fmt::format("{} for page {:#x}, which is homed on node {}", to_string(m.type),
                               ctx_.space->gpa(m.page), ctx_.home(m.page)));
  }
  Request r;
  r.type = m.type;
  r.from = m.src;
  if (m.type == MsgType::kWriteback) {
    if (m.src == ctx_.self) throw Rejected("the home wrote back its own page");
    r.data = std::make_unique<PageData>();
    std::memcpy(r.data->data(), m.payload.data(), kPageSize);
  }
  Txn& t = txns_[m.page];
  if (t.active || held(m.page)) {
    t.queue.push_back(std::move(r));
    return;
  }
  t.req = std::move(r);
  start(m.page, t);
}

// Starts t.req; completes at once unless it needs answers from other nodes.
void Directory::start(PageKey page, Txn& t) {
  DirEntry& d = entry(page);
  t.active = true;
  t.id = next_txn_++;
  t.deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
  t.awaiting_acks.reset();
  t.awaiting_fetch = kNoNode;
  t.awaiting_unblock = false;
  t.exclusive_read = false;
  t.data.reset();
  const NodeId from = t.req.from;
  const uint64_t gpa = ctx_.space->gpa(page);

  switch (t.req.type) {
    case MsgType::kReadReq:
    case MsgType::kWriteReq: {
      const bool write = t.req.type == MsgType::kWriteReq;
      if (d.owner == from) {
        ctx_.env->rejected(from, fmt::format("{} for page {:#x}, which it already owns",
                                             to_string(t.req.type), gpa));
        ++ctx_.counters.rejected;
        return finish(page);
      }
      if (d.owner != kNoNode) {
        // A migratory page is taken from its owner whole, for a read too.
        t.exclusive_read = !write && d.migratory;
        t.awaiting_fetch = d.owner;
        return ctx_.send_to(MsgType::kFetch, d.owner, page, t.id,
                            write || t.exclusive_read ? kFlagWrite : 0);
      }
      if (!write) return grant_read(page, t);
      t.requester_has_copy = d.sharers.test(from);
      // An upgrade with one other copy about (the home's own copy counted
      // only when no other node has one: after a fetch the home keeps one
      // whether or not its vCPUs use it): read, then written, as data
      // moving from node to node is.
      if (t.requester_has_copy) {
        NodeSet others = d.sharers;
        others.reset(from);
        NodeSet remote = others;
        remote.reset(ctx_.self);
        if ((remote.count() == 1 || (remote.none() && others.any())) && d.last_writer != from)
          d.migratory = true;
      }
      t.zero = !d.touched;
      if (!t.requester_has_copy && d.touched) {
        t.data = std::make_unique<PageData>();
        cache_.read_page(page, *t.data);  // the home's copy, before it is invalidated
      }
      t.awaiting_acks = d.sharers;
      t.awaiting_acks.reset(from);
      if (t.awaiting_acks.none()) return grant_write(page, t);
      for (NodeId n = 0; n < ctx_.n_nodes; ++n)
        if (t.awaiting_acks.test(n)) ctx_.send_to(MsgType::kInvalidate, n, page, t.id);
      return;
    }
    case MsgType::kEvict:
      d.sharers.reset(from);
      ctx_.send_to(MsgType::kEvictAck, from, page, t.id);
      return finish(page);
    case MsgType::kWriteback:
      if (d.owner == from) {
        d.owner = kNoNode;
        d.touched = true;
        cache_.install_home_copy(page, *t.req.data);
        d.sharers.reset();
        d.sharers.set(ctx_.self);
      }  // else it crossed a fetch that already took the page from it
      ctx_.send_to(MsgType::kWritebackAck, from, page, t.id);
      return finish(page);
    default:
      fail(EPROTO, "directory asked to start a {}", to_string(t.req.type));
  }
}

void Directory::grant_read(PageKey page, Txn& t) {
  DirEntry& d = entry(page);
  const NodeId from = t.req.from;
  uint16_t flags = 0;
  std::span<const std::byte> payload;
  PageData copy;
  if (d.sharers.test(from)) {
    // The requester got the home's copy while its request waited.
  } else if (!d.touched) {
    flags = kFlagZero;
  } else if (t.data) {
    flags = kFlagData;
    payload = *t.data;
  } else {
    cache_.read_page(page, copy);
    flags = kFlagData;
    payload = copy;
  }
  d.sharers.set(from);
  t.awaiting_unblock = true;
  t.deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
  ctx_.send_to(MsgType::kGrant, from, page, t.id, flags, payload);
}

void Directory::grant_write(PageKey page, Txn& t) {
  DirEntry& d = entry(page);
  const NodeId from = t.req.from;
  uint16_t flags = kFlagWrite | (t.exclusive_read ? kFlagExclusive : 0);
  std::span<const std::byte> payload;
  if (!t.requester_has_copy) {
    if (t.data) {
      flags |= kFlagData;
      payload = *t.data;
    } else if (t.zero) {
      flags |= kFlagZero;
    } else {
      fail(EPROTO, "no data to grant page {:#x} for writing", ctx_.space->gpa(page));
    }
  }
  d.owner = from;
  d.sharers.reset();
  d.touched = true;
  if (!t.exclusive_read) d.last_writer = from;  // an Exclusive holder may never write
  t.awaiting_unblock = true;
  t.deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
  ctx_.send_to(MsgType::kGrant, from, page, t.id, flags, payload);
}

Directory::Txn& Directory::active_txn(const Message& m, const char* what) {
  auto it = txns_.find(m.page);
  if (it == txns_.end() || !it->second.active || it->second.id != m.txn)
    throw Rejected(fmt::format("{} for page {:#x} matches no transaction (txn {})", what,
                               ctx_.space->gpa(m.page), m.txn));
  return it->second;
}

void Directory::on_inv_ack(const Message& m) {
  Txn& t = active_txn(m, "invalidate ack");
  if (!t.awaiting_acks.test(m.src))
    throw Rejected(fmt::format("unexpected invalidate ack for page {:#x}", ctx_.space->gpa(m.page)));
  t.awaiting_acks.reset(m.src);
  entry(m.page).sharers.reset(m.src);
  t.deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
  if (t.awaiting_acks.none()) grant_write(m.page, t);
}

void Directory::on_fetch_resp(const Message& m) {
  Txn& t = active_txn(m, "fetch response");
  if (t.awaiting_fetch != m.src)
    throw Rejected(fmt::format("unexpected fetch response for page {:#x}", ctx_.space->gpa(m.page)));
  DirEntry& d = entry(m.page);
  t.awaiting_fetch = kNoNode;
  t.data = std::make_unique<PageData>();
  std::memcpy(t.data->data(), m.payload.data(), kPageSize);
  d.owner = kNoNode;
  d.touched = true;
  d.sharers.reset();
  if (m.has(kFlagRetained)) d.sharers.set(m.src);
  // Granted Exclusive and only read: the page is read-shared, not
  // migratory.  This read is then served as any other (the owner gave its
  // copy up; the home keeps one, and the reader shares it).
  if (m.has(kFlagClean)) {
    d.migratory = false;
    t.exclusive_read = false;
  } else {
    d.last_writer = m.src;
  }
  t.deadline_ns = ctx_.now_ns + ctx_.timeout_ns;

  if (t.exclusive_read) {
    ++ctx_.counters.exclusive_grants;
    t.requester_has_copy = false;
    return grant_write(m.page, t);
  }
  if (t.req.type == MsgType::kReadReq) {
    // The home keeps a copy now that no node owns the page.
    if (cache_.state(m.page) == PageState::kInvalid) cache_.install_home_copy(m.page, *t.data);
    d.sharers.set(ctx_.self);
    return grant_read(m.page, t);
  }
  t.requester_has_copy = false;
  grant_write(m.page, t);
}

void Directory::on_unblock(const Message& m) {
  Txn& t = active_txn(m, "unblock");
  if (!t.awaiting_unblock || t.req.from != m.src)
    throw Rejected(fmt::format("unexpected unblock for page {:#x}", ctx_.space->gpa(m.page)));
  finish(m.page);
}

// Ends the page's transaction and starts the next queued request, if any.
void Directory::finish(PageKey page) {
  auto it = txns_.find(page);
  Txn& t = it->second;
  t.active = false;
  if (t.queue.empty()) {
    txns_.erase(it);
    return;
  }
  if (held(page)) return;  // release() starts it
  t.req = std::move(t.queue.front());
  t.queue.pop_front();
  start(page, t);
}

void Directory::check_timeouts() const {
  for (const auto& [page, t] : txns_) {
    if (!t.active || t.deadline_ns > ctx_.now_ns) continue;
    const uint64_t gpa = ctx_.space->gpa(page);
    const uint64_t ms = ctx_.timeout_ns / 1'000'000;
    if (t.awaiting_fetch != kNoNode)
      fail_peer(t.awaiting_fetch, ETIMEDOUT, "node {} did not return page {:#x} within {} ms", t.awaiting_fetch,
                gpa, ms);
    for (NodeId n = 0; n < ctx_.n_nodes; ++n)
      if (t.awaiting_acks.test(n))
        fail_peer(n, ETIMEDOUT, "node {} did not acknowledge invalidation of page {:#x} within {} ms", n,
             gpa, ms);
    fail_peer(t.req.from, ETIMEDOUT, "node {} did not confirm its grant of page {:#x} within {} ms", t.req.from,
         gpa, ms);
  }
}

// ---- re-homing ------------------------------------------------------------

bool Directory::held(PageKey p) const {
  return std::any_of(held_.begin(), held_.end(), [&](const PageRange& r) { return r.contains(p); });
}

std::vector<PageKey> Directory::pages_with_txns(const PageRange& r) const {
  std::vector<PageKey> pages;
  for (const auto& [page, t] : txns_)
    if (r.contains(page)) pages.push_back(page);
  return pages;
}

void Directory::hold(const PageRange& r) { held_.push_back(r); }

void Directory::release(const PageRange& r) {
  std::erase_if(held_, [&](const PageRange& h) {
    return h.region == r.region && h.first == r.first && h.end == r.end;
  });
  for (PageKey page : pages_with_txns(r)) {
    auto it = txns_.find(page);
    if (it == txns_.end() || it->second.active || held(page)) continue;
    Txn& t = it->second;
    t.req = std::move(t.queue.front());
    t.queue.pop_front();
    start(page, t);
  }
}

bool Directory::active_in(const PageRange& r) const {
  return std::any_of(txns_.begin(), txns_.end(),
                     [&](const auto& kv) { return kv.second.active && r.contains(kv.first); });
}

void Directory::add_pages(const PageRange& r) {
  auto& segs = segments_.at(r.region);
  for (const Segment& s : segs)
    if (s.first < r.end && r.first < s.first + s.entries.size())
      fail(EPROTO, "pages {}..{} of region {} are homed here already", r.first, r.end, r.region);
  auto at = std::upper_bound(segs.begin(), segs.end(), r.first,
                             [](uint64_t i, const Segment& s) { return i < s.first; });
  segs.insert(at, Segment{r.first, std::vector<DirEntry>(r.pages())});
  entry_count_ += r.pages();
}

void Directory::remove_pages(const PageRange& r) {
  for (PageKey page : pages_with_txns(r)) {
    Txn& t = txns_.at(page);
    if (t.active) fail(EPROTO, "page {:#x} moved home during a transaction", ctx_.space->gpa(page));
    for (const Request& q : t.queue) ctx_.send_to(MsgType::kRedirect, q.from, page, 0);
    txns_.erase(page);
  }
  std::vector<Segment> kept;
  for (Segment& s : segments_.at(r.region)) {
    const uint64_t s_end = s.first + s.entries.size();
    if (s_end <= r.first || s.first >= r.end) {
      kept.push_back(std::move(s));
      continue;
    }
    if (s.first < r.first)
      kept.push_back(Segment{s.first, {s.entries.begin(), s.entries.begin() + (r.first - s.first)}});
    if (s_end > r.end)
      kept.push_back(Segment{r.end, {s.entries.begin() + (r.end - s.first), s.entries.end()}});
    entry_count_ -= std::min(s_end, r.end) - std::max(s.first, r.first);
  }
  segments_.at(r.region) = std::move(kept);
  moved_away_.push_back(r);
}

}  // namespace aggvm::dsm
