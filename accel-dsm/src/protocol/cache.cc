#include "protocol/cache.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "error.h"
#include "protocol/peek.h"

namespace aggvm::dsm {

void VictimList::push_back(PageKey p) {
  if (contains(p)) fail(EPROTO, "page {:#x} is already a victim", p.raw());
  size_t s;
  if (free_.empty()) {
    s = slots_.size();
    slots_.emplace_back();
  } else {
    s = free_.back();
    free_.pop_back();
  }
  slots_[s] = Slot{p.raw(), tail_, kNil};
  if (tail_ != kNil) slots_[tail_].next = s;
  else head_ = s;
  tail_ = s;
  index_.emplace(p.raw(), s);
}

void VictimList::remove(PageKey p) {
  auto it = index_.find(p.raw());
  if (it == index_.end()) return;
  const size_t s = it->second;
  index_.erase(it);
  const Slot& slot = slots_[s];
  if (slot.prev != kNil) slots_[slot.prev].next = slot.next;
  else head_ = slot.next;
  if (slot.next != kNil) slots_[slot.next].prev = slot.prev;
  else tail_ = slot.prev;
  if (index_.empty()) {  // give the pool back once nothing is listed
    slots_.clear();
    free_.clear();
    head_ = tail_ = kNil;
  } else {
    free_.push_back(s);
  }
}

Cache::Cache(EngineContext& ctx, uint64_t cap_pages) : ctx_(ctx), cap_pages_(cap_pages) {
  for (const auto& r : ctx_.space->regions()) entries_.emplace_back(r.pages);
}

void Cache::expect_from_home(const Message& m) const {
  if (m.src != home(m.page))
    throw Rejected(fmt::format("{} for page {:#x} from node {}, which is not its home (node {})",
                               to_string(m.type), ctx_.space->gpa(m.page), m.src, home(m.page)));
}

void Cache::on_fault(PageKey page, Access access, int tid) {
  Entry& e = entry(page);
  if (tid != kNoThread) e.fetched = false;  // a thread here uses the page
  if (e.snapshot) {
    if (access == Access::kRead) {  // raced with the snapshot's install
      ++ctx_.counters.spurious_faults;
      ctx_.env->wake(page);
      return;
    }
    drop_snapshots(page, 1);  // a writer needs the page itself
  }
  if (access == Access::kWrite && e.state == PageState::kExclusive) {
    // Granted for this node alone: the first write needs no one's leave.
    ++ctx_.counters.silent_upgrades;
    ctx_.env->set_writable(page);
    e.state = PageState::kModified;
    ctx_.env->resolved(page, Waiter{tid, ctx_.now_ns, Access::kWrite}, ctx_.self, ctx_.now_ns);
    return;
  }
  const bool satisfied = access == Access::kRead ? e.state != PageState::kInvalid
                                                 : e.state == PageState::kModified;
  if (satisfied) {
    // Raced with a grant that already mapped the page: the thread only needs waking.
    ++ctx_.counters.spurious_faults;
    ctx_.env->wake(page);
    return;
  }
  Op& op = ops_[page];
  const bool known = std::any_of(op.waiters.begin(), op.waiters.end(), [&](const Waiter& w) {
    return w.tid == tid && w.access == access;
  });
  if (!known) op.waiters.push_back(Waiter{tid, ctx_.now_ns, access});
  // With a request in flight, the waiter is served when it completes.
  if (e.pending == Pending::kNone) request(page, e, op, access);
}

void Cache::request(PageKey page, Entry& e, Op& op, Access access) {
  op.counts_install = e.state == PageState::kInvalid;
  if (op.counts_install) {
    make_room();
    ++installs_in_flight_;
  }
  e.pending = access == Access::kRead ? Pending::kRead : Pending::kWrite;
  op.deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
  Message m;
  m.type = access == Access::kRead ? MsgType::kReadReq : MsgType::kWriteReq;
  m.src = ctx_.self;
  m.dst = home(page);
  m.page = page;
  op.asked = m.dst;
  ctx_.send(m);
}

void Cache::mapped(PageKey page, Entry& e, PageState state) {
  e.state = state;
  ++resident_;
  resident_peak_ = std::max(resident_peak_, resident_);
  if (home(page) != ctx_.self) victims_.push_back(page);
}

void Cache::unmapped(PageKey page, Entry& e) {
  ctx_.env->drop(page);
  forget(page, e);
}

void Cache::forget(PageKey page, Entry& e) {
  e.state = PageState::kInvalid;
  e.fetched = false;
  --resident_;
  victims_.remove(page);
}

void Cache::on_grant(const Message& m) {
  expect_from_home(m);
  Entry& e = entry(m.page);
  const bool write = m.has(kFlagWrite);
  // An Exclusive grant answers a read: the page is this node's alone.
  const bool exclusive = m.has(kFlagExclusive);
  const Pending expected = write && !exclusive ? Pending::kWrite : Pending::kRead;
  if (e.pending != expected)
    throw Rejected(fmt::format("{} grant for page {:#x} that was not requested",
                               exclusive ? "exclusive" : write ? "write" : "read", ctx_.space->gpa(m.page)));
  if (exclusive && !(m.has(kFlagData) || m.has(kFlagZero)))
    fail_peer(m.src, EPROTO, "node {} granted page {:#x} Exclusive without its content", m.src,
              ctx_.space->gpa(m.page));
  const bool was_invalid = e.state == PageState::kInvalid;
  Op& op = ops_[m.page];
  if (op.counts_install) {
    op.counts_install = false;
    --installs_in_flight_;
  }
  // A write waiter that joined an Exclusive grant's read is served at once.
  const bool writer_waits = std::any_of(op.waiters.begin(), op.waiters.end(),
                                        [](const Waiter& w) { return w.access == Access::kWrite; });
  const bool writable = write && (!exclusive || writer_waits);
  const PageState target = writable ? PageState::kModified : exclusive ? PageState::kExclusive : PageState::kShared;
  // No thread of this node waits: only a fetch ahead of use asked.
  const bool for_fetch_alone = std::all_of(op.waiters.begin(), op.waiters.end(),
                                           [](const Waiter& w) { return w.tid == kNoThread; });

  if (m.has(kFlagData) || m.has(kFlagZero)) {
    if (!was_invalid)
      fail_peer(m.src, EPROTO, "node {} granted page {:#x} with data while this node holds it {}", m.src,
           ctx_.space->gpa(m.page), to_string(e.state));
    ctx_.env->install(m.page, m.has(kFlagData) ? m.payload : std::span<const std::byte>{}, writable);
    mapped(m.page, e, target);
    e.fetched = for_fetch_alone;
  } else if (was_invalid) {
    fail_peer(m.src, EPROTO, "node {} granted page {:#x} without data but this node holds no copy", m.src,
         ctx_.space->gpa(m.page));
  } else if (write && e.state == PageState::kShared) {
    ctx_.env->set_writable(m.page);
    e.state = PageState::kModified;
  } else {
    ctx_.env->wake(m.page);  // the home installed its copy here already
  }

  ctx_.send(reply_to(m, MsgType::kUnblock, ctx_.self));

  e.pending = Pending::kNone;
  const NodeId h = home(m.page);
  std::erase_if(op.waiters, [&](const Waiter& w) {
    const bool served = writable || w.access == Access::kRead;
    if (served) ctx_.env->resolved(m.page, w, h, ctx_.now_ns);
    return served;
  });
  request_for_waiters(m.page, e);
}

// Issues the request the remaining waiters need, or forgets the page.
void Cache::request_for_waiters(PageKey page, Entry& e) {
  auto it = ops_.find(page);
  if (it == ops_.end()) return;
  Op& op = it->second;
  op.writeback.reset();
  if (op.waiters.empty()) {
    ops_.erase(it);
    return;
  }
  const bool writer = std::any_of(op.waiters.begin(), op.waiters.end(),
                                  [](const Waiter& w) { return w.access == Access::kWrite; });
  request(page, e, op, writer ? Access::kWrite : Access::kRead);
}

void Cache::on_invalidate(const Message& m) {
  expect_from_home(m);
  Entry& e = entry(m.page);
  if (owns(e.state))
    throw Rejected(fmt::format("invalidate for page {:#x}, which this node owns ({})",
                               ctx_.space->gpa(m.page), to_string(e.state)));
  ++ctx_.counters.invalidations_received;
  if (e.state == PageState::kShared) lose_copy(m.page, e);
  ctx_.send(reply_to(m, MsgType::kInvAck, ctx_.self));
}

void Cache::lose_copy(PageKey page, Entry& e) {
  unmapped(page, e);
  upgrade_installs(page, e);
}

void Cache::upgrade_installs(PageKey page, Entry& e) {
  if (e.pending == Pending::kWrite) {
    // The upgrade in flight will now map the page: count it against the cap.
    Op& op = ops_[page];
    op.counts_install = true;
    ++installs_in_flight_;
  }
}

void Cache::on_redirect(const Message& m) {
  Entry& e = entry(m.page);
  auto it = ops_.find(m.page);
  if (e.pending == Pending::kNone || it == ops_.end() || it->second.asked != m.src)
    throw Rejected(fmt::format("redirect for page {:#x} from node {}, which has no request of this node",
                               ctx_.space->gpa(m.page), m.src));
  // The old home redirects only once every node (this one included) knows
  // the new home: a redirect from the home this node knows is a broken peer.
  if (home(m.page) == m.src)
    fail_peer(m.src, EPROTO, "node {} redirected page {:#x}, which this node knows to be homed there", m.src,
              ctx_.space->gpa(m.page));
  Op& op = it->second;
  op.deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
  Message r;
  r.src = ctx_.self;
  r.dst = home(m.page);
  r.page = m.page;
  switch (e.pending) {
    case Pending::kRead: r.type = MsgType::kReadReq; break;
    case Pending::kWrite: r.type = MsgType::kWriteReq; break;
    case Pending::kEvict: r.type = MsgType::kEvict; break;
    case Pending::kWriteback:
      r.type = MsgType::kWriteback;
      r.flags = kFlagData;
      r.payload = *op.writeback;
      break;
    case Pending::kPeek:  // answered, refused or not, by whoever is asked
      throw Rejected(fmt::format("redirect for page {:#x}, for which this node asked a snapshot",
                                 ctx_.space->gpa(m.page)));
    case Pending::kNone: break;
  }
  ++ctx_.counters.redirects;
  op.asked = r.dst;
  ctx_.send(r);
}

void Cache::became_home(PageKey page) { victims_.remove(page); }

void Cache::give_up_home_copies(const PageRange& r, std::vector<PageCopy>& copies, std::vector<bool>& held) {
  copies.resize(r.pages());
  held.assign(r.pages(), false);
  bool any = false;
  for (uint64_t i = r.first; i < r.end; ++i) {
    const PageKey page(r.region, i);
    Entry& e = entry(page);
    if (e.snapshot) {  // unmapped with the rest below: nobody knew of it
      e.snapshot = false;
      --snapshots_;
      any = true;
    }
    if (e.state == PageState::kInvalid) continue;
    if (e.state == PageState::kModified) ctx_.env->write_protect(page);  // Exclusive already is
    ctx_.env->read(page, copies[i - r.first]);
    held[i - r.first] = true;
    any = true;
  }
  if (!any) return;
  ctx_.env->drop_range(PageKey(r.region, r.first), r.pages());
  for (uint64_t i = r.first; i < r.end; ++i) {
    if (!held[i - r.first]) continue;
    const PageKey page(r.region, i);
    Entry& e = entry(page);
    forget(page, e);  // lose_copy(), the drop done above for the whole range
    upgrade_installs(page, e);
  }
}

void Cache::on_fetch(const Message& m) {
  expect_from_home(m);
  Entry& e = entry(m.page);
  const bool invalidate = m.has(kFlagWrite);
  std::array<std::byte, kPageSize> data;
  Message resp = reply_to(m, MsgType::kFetchResp, ctx_.self, kFlagData);
  if (owns(e.state)) {
    if (e.state == PageState::kExclusive) resp.flags |= kFlagClean;  // never written here
    else ctx_.env->write_protect(m.page);
    ctx_.env->read(m.page, data);
    if (invalidate) {
      unmapped(m.page, e);
    } else {
      e.state = PageState::kShared;
      resp.flags |= kFlagRetained;
    }
  } else if (e.pending == Pending::kWriteback) {
    // Our writeback crossed this fetch: answer from the copy in flight.
    std::memcpy(data.data(), ops_.at(m.page).writeback->data(), kPageSize);
  } else {
    throw Rejected(fmt::format("fetch for page {:#x}, which this node does not own ({})",
                               ctx_.space->gpa(m.page), to_string(e.state)));
  }
  resp.payload = data;
  ctx_.send(resp);
}

// EvictAck or WritebackAck: the eviction is over; waiters may request again.
void Cache::on_eviction_ack(const Message& m) {
  // From the node the eviction went to: the page's home then, which may
  // have handed the page to a new home since (it acks before it moves).
  auto it = ops_.find(m.page);
  if (it == ops_.end() || it->second.asked != m.src)
    throw Rejected(fmt::format("{} for page {:#x} from node {}, which was not asked", to_string(m.type),
                               ctx_.space->gpa(m.page), m.src));
  Entry& e = entry(m.page);
  const Pending expected = m.type == MsgType::kEvictAck ? Pending::kEvict : Pending::kWriteback;
  if (e.pending != expected)
    throw Rejected(fmt::format("{} for page {:#x} with no such eviction in flight", to_string(m.type),
                               ctx_.space->gpa(m.page)));
  e.pending = Pending::kNone;
  request_for_waiters(m.page, e);
}

void Cache::install_home_copy(PageKey page, PageView data) {
  Entry& e = entry(page);
  if (e.state != PageState::kInvalid)
    fail(EPROTO, "home copy of page {:#x} installed over a {} copy", ctx_.space->gpa(page),
         to_string(e.state));
  if (e.snapshot) drop_snapshots(page, 1);  // the home's copy replaces it
  make_room();
  ctx_.env->install(page, data, false);
  mapped(page, e, PageState::kShared);
}

void Cache::read_page(PageKey page, PageBuffer out) {
  if (entry(page).state == PageState::kInvalid)
    fail(EPROTO, "home copy of page {:#x} is missing", ctx_.space->gpa(page));
  ctx_.env->read(page, out);
}

// Evicts until one more page fits under the cap, with the pages already
// requested counted as present.
void Cache::make_room() {
  if (cap_pages_ == 0) return;
  while (resident_ + installs_in_flight_ + 1 > cap_pages_)
    if (!evict_one()) return;  // only home pages left: start-up checked the cap covers them
}

bool Cache::evict_one() {
  auto evictable = [&](PageKey p) {
    const Entry& e = entry(p);
    return e.state != PageState::kInvalid && e.pending == Pending::kNone;
  };
  // Prefer a shared copy among the oldest: dropping it costs no data
  // transfer.  Else the oldest page with no request in flight (those are
  // few: at most one per fault in flight).  evict() unlists it.
  auto victim = victims_.find([&](PageKey p) { return evictable(p) && entry(p).state == PageState::kShared; }, 64);
  if (!victim) victim = victims_.find(evictable);
  if (!victim) return false;
  evict(*victim, entry(*victim));
  return true;
}

uint64_t Cache::release_fetched(PageKey first, uint64_t count) {
  auto at = [&](uint64_t i) { return PageKey(first.region(), first.index() + i); };
  auto releasable = [&](PageKey p) {
    const Entry& e = entry(p);
    return e.fetched && e.state != PageState::kInvalid && e.pending == Pending::kNone && home(p) != ctx_.self;
  };
  uint64_t released = 0;
  for (uint64_t i = 0; i < count;) {
    const PageKey run = at(i);
    uint64_t n = 0;
    // Snapshots: dropped here, in one call for the run; their homes never knew.
    for (; i + n < count && entry(at(i + n)).snapshot; ++n) {
    }
    if (n > 0) {
      drop_snapshots(run, n);
      released += n;
      i += n;
      continue;
    }
    bool owned = false;
    for (; i + n < count && releasable(at(i + n)); ++n) owned |= owns(entry(at(i + n)).state);
    if (n == 0) {
      ++i;
      continue;
    }
    // Owned copies are copied out for their homes, write-protected first so
    // that no thread writes between the copy and the unmap (a writer waits
    // for the write-back's ack, then asks for the page again).
    if (owned) {
      ctx_.env->write_protect_range(run, n);
      for (uint64_t k = 0; k < n; ++k)
        if (owns(entry(at(i + k)).state)) copy_out(at(i + k));
    }
    // Unmapped before any home hears of it, in one call for the run.
    ctx_.env->release_range(run, n);
    for (uint64_t k = 0; k < n; ++k) {
      const PageKey p = at(i + k);
      Entry& e = entry(p);
      const bool was_owned = owns(e.state);
      forget(p, e);
      if (was_owned) send_writeback(p, e, ops_[p]);
      else send_evict(p, e);
    }
    released += n;
    i += n;
  }
  return released;
}

// ---- snapshot reads (protocol/peek.h) ---------------------------------------

uint64_t Cache::peek(PageKey first, uint64_t count, std::byte* copy_to, bool* copied) {
  auto at = [&](uint64_t i) { return PageKey(first.region(), first.index() + i); };
  auto askable = [&](PageKey p) {
    const Entry& e = entry(p);
    return e.state == PageState::kInvalid && !e.snapshot && e.pending == Pending::kNone;
  };
  uint64_t asked = 0;
  for (uint64_t i = 0; i < count;) {
    if (!askable(at(i))) {
      ++i;
      continue;
    }
    const NodeId to = home(at(i));
    uint64_t n = 1;
    while (i + n < count && n < kMaxPeekRun && askable(at(i + n)) && home(at(i + n)) == to) ++n;
    for (uint64_t k = 0; k < n; ++k) {
      Op& op = ops_[at(i + k)];
      op.waiters.push_back(Waiter{kNoThread, ctx_.now_ns, Access::kRead});
      op.copy_to = copy_to ? copy_to + (i + k) * kPageSize : nullptr;
      op.copied = copy_to ? copied + i + k : nullptr;
      entry(at(i + k)).pending = Pending::kPeek;
    }
    send_peek(at(i), n, to);
    asked += n;
    i += n;
  }
  return asked;
}

void Cache::send_peek(PageKey first, uint64_t count, NodeId to) {
  for (uint64_t k = 0; k < count; ++k) {
    Op& op = ops_.at(PageKey(first.region(), first.index() + k));
    op.deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
    op.asked = to;
  }
  const PeekWire w{.count = static_cast<uint32_t>(count), .reserved = 0};
  ctx_.send_to(MsgType::kPeek, to, first, 0, 0, std::as_bytes(std::span(&w, 1)));
}

void Cache::on_peek_resp(const Message& m) {
  const PeekWire w = peek_run(m, *ctx_.space);
  std::vector<uint16_t> answers(w.count);
  if (m.payload.size() < peek_resp_size(w.count, 0))
    throw Rejected(fmt::format("PeekResp of {} bytes too short for {} answers", m.payload.size(), w.count));
  std::memcpy(answers.data(), m.payload.data() + sizeof(w), w.count * sizeof(uint16_t));
  auto at = [&](uint64_t i) { return PageKey(m.page.region(), m.page.index() + i); };
  // Everything is checked before anything is installed.
  uint32_t with_data = 0;
  for (uint32_t i = 0; i < w.count; ++i) {
    uint16_t& a = answers[i];
    auto it = ops_.find(at(i));
    if (entry(at(i)).pending != Pending::kPeek || it == ops_.end() || it->second.asked != m.src)
      throw Rejected(fmt::format("PeekResp for page {:#x}, which this node did not ask node {} for",
                                 ctx_.space->gpa(at(i)), m.src));
    if (a != kPeekData && a != kPeekZero && a != kPeekRefused && a >= kMaxNodes)
      throw Rejected(fmt::format("PeekResp answers {:#x} for page {:#x}", a, ctx_.space->gpa(at(i))));
    // Only the page's home names its owner, and only once: the owner
    // answers for itself.  Any other name (this node, the answering node,
    // one not in the cluster) is a refusal: the page is asked for as usual.
    const bool owner_ok = a < ctx_.n_nodes && a != ctx_.self && a != m.src && !ctx_.gone.test(a) &&
                          m.src == home(at(i));
    if (a < kMaxNodes && !owner_ok) a = kPeekRefused;
    with_data += a == kPeekData;
  }
  if (m.payload.size() != peek_resp_size(w.count, with_data))
    throw Rejected(fmt::format("PeekResp of {} bytes for {} pages of data", m.payload.size(), with_data));

  const std::byte* data = m.payload.data() + peek_resp_size(w.count, 0);
  auto copy_to = [&](uint32_t i) { return ops_.at(at(i)).copy_to; };
  for (uint32_t i = 0; i < w.count;) {
    const uint16_t a = answers[i];
    const bool copy = copy_to(i) != nullptr;
    uint32_t n = 1;  // a run of the same answer, for the same kind of peek
    while (i + n < w.count && answers[i + n] == a && (copy_to(i + n) != nullptr) == copy) ++n;
    if (a < kMaxNodes) {  // the owner has them: one message for the run
      send_peek(at(i), n, a);
    } else if (a == kPeekData && copy) {  // into the caller's buffer
      for (uint32_t k = 0; k < n; ++k) std::memcpy(copy_to(i + k), data + k * kPageSize, kPageSize);
      data += n * kPageSize;
    } else if (a == kPeekData) {  // pages in a row: mapped in one go
      ctx_.env->install_range(at(i), n, std::span(data, n * kPageSize));
      data += n * kPageSize;
    }
    if (a >= kMaxNodes)
      for (uint32_t k = i; k < i + n; ++k) snapshot_answered(at(k), a, m.src);
    i += n;
  }
}

// A page answered with data (mapped already), zero or a refusal.
void Cache::snapshot_answered(PageKey page, uint16_t answer, NodeId from) {
  Entry& e = entry(page);
  e.pending = Pending::kNone;
  if (Op& op = ops_.at(page); op.copy_to) return copy_answered(page, e, op, answer);
  if (answer == kPeekRefused) {  // asked for as usual: a fetch ahead of use
    ++ctx_.counters.peeks_refused;
    return request_for_waiters(page, e);
  }
  if (answer == kPeekZero) ctx_.env->install(page, {}, false);
  e.snapshot = true;
  ++snapshots_;
  ++ctx_.counters.snapshots;
  Op& op = ops_.at(page);
  std::erase_if(op.waiters, [&](const Waiter& waiter) {
    if (waiter.access == Access::kWrite) return false;
    ctx_.env->resolved(page, waiter, from, ctx_.now_ns);
    return true;
  });
  if (!op.waiters.empty()) drop_snapshots(page, 1);  // a writer joined: it needs the page itself
  request_for_waiters(page, e);
}

// A page answered for a private buffer: its data is there already, or it
// was never written, or it is refused and fetched as usual.  Nothing is
// mapped; a thread that faulted on the page meanwhile asks for it now.
void Cache::copy_answered(PageKey page, Entry& e, Op& op, uint16_t answer) {
  std::byte* to = std::exchange(op.copy_to, nullptr);
  bool* copied = std::exchange(op.copied, nullptr);
  if (answer == kPeekRefused) {  // the copier's waiter stays: a fetch
    ++ctx_.counters.peeks_refused;
    return request_for_waiters(page, e);
  }
  if (answer == kPeekZero) std::memset(to, 0, kPageSize);
  *copied = true;
  ++ctx_.counters.copied;
  std::erase_if(op.waiters, [](const Waiter& w) { return w.tid == kNoThread; });
  request_for_waiters(page, e);
}

void Cache::drop_snapshots(PageKey first, uint64_t count) {
  ctx_.env->release_range(first, count);
  for (uint64_t k = 0; k < count; ++k) entry(PageKey(first.region(), first.index() + k)).snapshot = false;
  snapshots_ -= count;
}

void Cache::evict(PageKey page, Entry& e) {
  if (e.state == PageState::kShared) {
    unmapped(page, e);
    return send_evict(page, e);
  }
  ctx_.env->write_protect(page);
  Op& op = copy_out(page);
  unmapped(page, e);
  send_writeback(page, e, op);
}

Cache::Op& Cache::copy_out(PageKey page) {
  Op& op = ops_[page];
  op.writeback = std::make_unique<std::array<std::byte, kPageSize>>();
  ctx_.env->read(page, *op.writeback);
  return op;
}

void Cache::send_writeback(PageKey page, Entry& e, Op& op) {
  op.deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
  op.asked = home(page);
  ++ctx_.counters.writebacks;
  e.pending = Pending::kWriteback;
  ctx_.send(Message{.type = MsgType::kWriteback, .flags = kFlagData, .src = ctx_.self, .dst = op.asked,
                    .page = page, .payload = *op.writeback});
}

void Cache::send_evict(PageKey page, Entry& e) {
  Op& op = ops_[page];
  op.deadline_ns = ctx_.now_ns + ctx_.timeout_ns;
  op.asked = home(page);
  ++ctx_.counters.evictions;
  e.pending = Pending::kEvict;
  ctx_.send(Message{.type = MsgType::kEvict, .src = ctx_.self, .dst = op.asked, .page = page});
}

void Cache::check_timeouts() const {
  for (const auto& [page, op] : ops_) {
    const Entry& e = entry(page);
    // A page homed here is this node's own directory transaction, which
    // times out on its own and names the peer it waits for (an owner or a
    // sharer): blaming this node instead would name the wrong one.
    if (e.pending != Pending::kNone && op.deadline_ns <= ctx_.now_ns && op.asked != ctx_.self)
      fail_peer(op.asked, ETIMEDOUT, "node {} (home of page {:#x}) did not answer within {} ms", op.asked,
           ctx_.space->gpa(page), ctx_.timeout_ns / 1'000'000);
  }
}

}  // namespace aggvm::dsm
