// Unit tests of snapshot reads (protocol/peek.h): what a peek maps, what it
// leaves unchanged, when it falls back to the usual request, and what a
// hostile answer gets.
#include <gtest/gtest.h>

#include <cstring>

#include "model_cluster.h"

namespace aggvm::dsm::testing {
namespace {

using S = PageState;

// One page of each kind a home can answer for, all homed on node 1 of 3.
struct EveryKindOfPage {
  PageKey home_owned, third_owned, shared;  // then one never written
};

// Writes them: 11 by the home, 22 by node 2 (it owns it), 33 by node 2
// then read by the home (no owner: the home's copy).
EveryKindOfPage write_every_kind_of_page(ModelCluster& c) {
  const EveryKindOfPage p{c.page_homed_on(1, 0), c.page_homed_on(1, 1), c.page_homed_on(1, 2)};
  c.write_byte(1, p.home_owned, 11);
  c.write_byte(2, p.third_owned, 22);
  c.write_byte(2, p.shared, 33);
  EXPECT_EQ(c.read_byte(1, p.shared), 33);
  return p;
}

// One page of each kind a home can answer for, all homed on node 1 of 3:
// written and owned by the home, owned by node 2 (the home names it),
// written by node 2 then read by node 1 (no owner: the home's copy), and
// never written.  One message each way to the home, one each way to node
// 2 for its page; no directory entry changes; releasing sends nothing.
TEST(Peek, MapsSnapshotsWithoutChangingTheDirectory) {
  ModelCluster c(3, 8);
  const auto [home_owned, third_owned, shared] = write_every_kind_of_page(c);  // and page 3, never written
  std::vector<DirEntry> before;
  for (uint64_t i = 0; i < 4; ++i) before.push_back(c.engine(1).directory().entry(c.page_homed_on(1, i)));
  const uint64_t sent = c.net().sent;

  EXPECT_EQ(c.engine(0).peek(home_owned, 4, c.now() + 1), 4u);
  EXPECT_EQ(c.engine(0).cache().pending(home_owned), Cache::Pending::kPeek);
  c.deliver_all_fifo();
  EXPECT_EQ(c.net().sent - sent, 4u) << "a Peek and its answer to the home, and again to node 2";

  const uint8_t expect[] = {11, 22, 33, 0};
  for (uint64_t i = 0; i < 4; ++i) {
    const PageKey p = c.page_homed_on(1, i);
    EXPECT_TRUE(c.node(0).page(p).mapped) << i;
    EXPECT_FALSE(c.node(0).page(p).writable) << i;
    EXPECT_EQ(static_cast<uint8_t>(c.node(0).page(p).data[0]), expect[i]) << i;
    EXPECT_TRUE(c.engine(0).cache().snapshot(p)) << i;
    EXPECT_EQ(c.engine(0).cache().state(p), S::kInvalid) << "no copy the home knows of";
    const DirEntry& d = c.engine(1).directory().entry(p);
    EXPECT_EQ(d.owner, before[i].owner) << i;
    EXPECT_EQ(d.sharers, before[i].sharers) << i;
  }
  EXPECT_EQ(c.engine(2).cache().state(third_owned), S::kModified) << "the owner kept it writable";
  EXPECT_TRUE(c.node(2).page(third_owned).writable);
  EXPECT_EQ(c.engine(0).cache().snapshot_pages(), 4u);
  EXPECT_EQ(c.engine(0).counters().snapshots, 4u);
  EXPECT_EQ(c.engine(1).counters().peeks_answered, 3u);
  EXPECT_EQ(c.engine(2).counters().peeks_answered, 1u);
  EXPECT_TRUE(c.engine(0).idle());

  // Peeking again asks for nothing: every page is mapped.
  EXPECT_EQ(c.engine(0).peek(home_owned, 4, c.now() + 1), 0u);
  EXPECT_TRUE(c.net().in_flight.empty());

  EXPECT_EQ(c.engine(0).release(home_owned, 4, c.now() + 1), 4u);
  EXPECT_TRUE(c.net().in_flight.empty()) << "dropping a snapshot told someone";
  EXPECT_EQ(c.engine(0).cache().snapshot_pages(), 0u);
  for (uint64_t i = 0; i < 4; ++i) EXPECT_FALSE(c.node(0).page(c.page_homed_on(1, i)).mapped) << i;

  // Written elsewhere since: node 0 reads the new values (no stale snapshot).
  c.write_byte(2, shared, 44);
  c.write_byte(1, third_owned, 55);
  EXPECT_EQ(c.read_byte(0, shared), 44);
  EXPECT_EQ(c.read_byte(0, third_owned), 55);
  for (NodeId k = 0; k < 3; ++k) EXPECT_TRUE(c.node(k).rejections.empty()) << c.node(k).rejections.front();
}

// A home with a transaction running on the page refuses; the requester then
// asks as a fetch ahead of use does, and that copy is released the usual
// way, with an eviction.
TEST(Peek, RefusedWhileATransactionRunsAndFetchedAsUsual) {
  ModelCluster c(3, 8);
  const PageKey p = c.page_homed_on(1, 0);
  c.write_byte(1, p, 7);
  c.fault(2, p, Access::kRead);  // the home grants node 2 and waits for its Unblock
  c.deliver(static_cast<size_t>(c.find(MsgType::kReadReq, 1)));
  ASSERT_TRUE(c.engine(1).directory().busy(p));
  c.engine(0).peek(p, 1, c.now() + 1);
  c.deliver(static_cast<size_t>(c.find(MsgType::kPeek, 1)));
  ASSERT_GE(c.find(MsgType::kPeekResp, 0), 0);
  c.deliver_all_fifo();

  EXPECT_EQ(c.engine(0).counters().peeks_refused, 1u);
  EXPECT_FALSE(c.engine(0).cache().snapshot(p));
  EXPECT_EQ(c.engine(0).cache().state(p), S::kShared) << "fetched as usual";
  EXPECT_EQ(static_cast<uint8_t>(c.node(0).page(p).data[0]), 7);
  EXPECT_TRUE(c.engine(1).directory().entry(p).sharers.test(0));
  EXPECT_EQ(c.engine(0).release(p, 1, c.now() + 1), 1u);
  EXPECT_GE(c.find(MsgType::kEvict, 1), 0) << "a fetched copy goes with an eviction";
  c.deliver_all_fifo();
  EXPECT_FALSE(c.engine(1).directory().entry(p).sharers.test(0));
}

// A write on this node to a snapshot drops it and asks for the page as
// usual; the write then lands at the home's directory like any other.
TEST(Peek, WriteHereDropsTheSnapshotAndAsks) {
  ModelCluster c(2, 8);
  const PageKey p = c.page_homed_on(1, 0);
  c.write_byte(1, p, 3);
  c.engine(0).peek(p, 1, c.now() + 1);
  c.deliver_all_fifo();
  ASSERT_TRUE(c.engine(0).cache().snapshot(p));
  c.write_byte(0, p, 4);
  EXPECT_FALSE(c.engine(0).cache().snapshot(p));
  EXPECT_EQ(c.engine(0).cache().snapshot_pages(), 0u);
  EXPECT_EQ(c.engine(0).cache().state(p), S::kModified);
  EXPECT_EQ(c.engine(1).directory().entry(p).owner, 0);
  EXPECT_EQ(c.read_byte(1, p), 4);
  EXPECT_EQ(c.engine(0).release(p, 1, c.now() + 1), 0u) << "a page a thread wrote stays";
}

// A thread that faults on a page while its peek is in flight waits for the
// snapshot and is served by it; a writer that joins is served by a write
// request once the snapshot is in.
TEST(Peek, FaultsJoiningAPeekAreServed) {
  ModelCluster c(2, 8);
  const PageKey read = c.page_homed_on(1, 0), written = c.page_homed_on(1, 1);
  c.write_byte(1, read, 5);
  c.write_byte(1, written, 6);
  c.engine(0).peek(read, 2, c.now() + 1);
  c.fault(0, read, Access::kRead, 1);
  c.fault(0, written, Access::kWrite, 2);
  EXPECT_EQ(c.net().in_flight.size(), 1u) << "the faults joined the peek";
  c.deliver_all_fifo();
  EXPECT_TRUE(c.node(0).blocked.empty()) << "a thread still waits";
  EXPECT_TRUE(c.engine(0).cache().snapshot(read));
  EXPECT_EQ(static_cast<uint8_t>(c.node(0).page(read).data[0]), 5);
  EXPECT_FALSE(c.engine(0).cache().snapshot(written));
  EXPECT_EQ(c.engine(0).cache().state(written), S::kModified);
  EXPECT_EQ(static_cast<uint8_t>(c.node(0).page(written).data[0]), 6);
  EXPECT_TRUE(c.engine(0).idle());
}

// A peek into a private buffer (Node::read): the same answers, copied
// into the buffer and mapped nowhere.  Nothing is left here to drop, the
// owner keeps writing its Modified copy, and node 0 reads its next value.
TEST(Peek, CopiesIntoABufferAndMapsNothing) {
  ModelCluster c(3, 8);
  const auto [home_owned, third_owned, shared] = write_every_kind_of_page(c);  // and page 3, never written
  std::vector<std::byte> buf(4 * kPageSize, std::byte{0x5a});
  bool copied[4] = {};

  EXPECT_EQ(c.engine(0).peek(home_owned, 4, c.now() + 1, buf.data(), copied), 4u);
  c.deliver_all_fifo();

  const uint8_t expect[] = {11, 22, 33, 0};
  for (uint64_t i = 0; i < 4; ++i) {
    const PageKey p = c.page_homed_on(1, i);
    EXPECT_TRUE(copied[i]) << i;
    EXPECT_EQ(static_cast<uint8_t>(buf[i * kPageSize]), expect[i]) << i;
    EXPECT_EQ(static_cast<uint8_t>(buf[i * kPageSize + kPageSize - 1]), 0) << i << ": the page's last byte";
    EXPECT_FALSE(c.node(0).page(p).mapped) << i;
    EXPECT_FALSE(c.engine(0).cache().snapshot(p)) << i;
    EXPECT_EQ(c.engine(0).cache().state(p), S::kInvalid) << i;
  }
  EXPECT_EQ(c.engine(0).counters().copied, 4u);
  EXPECT_EQ(c.engine(0).counters().snapshots, 0u);
  EXPECT_EQ(c.engine(0).cache().snapshot_pages(), 0u);
  EXPECT_EQ(c.engine(2).cache().state(third_owned), S::kModified) << "the owner kept it writable";
  EXPECT_TRUE(c.engine(0).idle());
  EXPECT_EQ(c.engine(0).release(home_owned, 4, c.now() + 1), 0u) << "nothing to give back";

  c.write_byte(2, third_owned, 23);
  EXPECT_TRUE(c.net().in_flight.empty()) << "the owner's write asked for something";
  EXPECT_EQ(c.read_byte(0, third_owned), 23);
  for (NodeId k = 0; k < 3; ++k) EXPECT_TRUE(c.node(k).rejections.empty()) << c.node(k).rejections.front();
}

// A copy the home refuses (a transaction runs) is fetched as usual and not
// marked copied: the caller reads it from the mapping.
TEST(Peek, CopyRefusedIsFetchedAndLeftToTheMapping) {
  ModelCluster c(3, 8);
  const PageKey p = c.page_homed_on(1, 0);
  c.write_byte(1, p, 7);
  c.fault(2, p, Access::kRead);
  c.deliver(static_cast<size_t>(c.find(MsgType::kReadReq, 1)));
  ASSERT_TRUE(c.engine(1).directory().busy(p));
  std::vector<std::byte> buf(kPageSize);
  bool copied = false;
  c.engine(0).peek(p, 1, c.now() + 1, buf.data(), &copied);
  c.deliver_all_fifo();
  EXPECT_FALSE(copied);
  EXPECT_EQ(c.engine(0).counters().peeks_refused, 1u);
  EXPECT_EQ(c.engine(0).counters().copied, 0u);
  EXPECT_EQ(c.engine(0).cache().state(p), S::kShared) << "fetched as usual";
  EXPECT_EQ(static_cast<uint8_t>(c.node(0).page(p).data[0]), 7);
  EXPECT_TRUE(c.engine(0).idle());
}

// A thread that faults on a page while its copy is in flight is not served
// by the copy (nothing is mapped): it asks for the page as usual after it.
TEST(Peek, FaultJoiningACopyAsksAsUsual) {
  ModelCluster c(2, 8);
  const PageKey p = c.page_homed_on(1, 0);
  c.write_byte(1, p, 5);
  std::vector<std::byte> buf(kPageSize);
  bool copied = false;
  c.engine(0).peek(p, 1, c.now() + 1, buf.data(), &copied);
  c.fault(0, p, Access::kRead, 1);
  c.deliver_all_fifo();
  EXPECT_TRUE(copied);
  EXPECT_EQ(static_cast<uint8_t>(buf[0]), 5);
  EXPECT_TRUE(c.node(0).blocked.empty()) << "the thread still waits";
  EXPECT_EQ(c.engine(0).cache().state(p), S::kShared);
  EXPECT_EQ(static_cast<uint8_t>(c.node(0).page(p).data[0]), 5);
  EXPECT_TRUE(c.engine(0).idle());
}

Message peek_resp(PageKey first, NodeId src, std::vector<uint16_t> answers, uint32_t data_pages,
                  std::vector<std::byte>& buf) {
  const PeekWire w{.count = static_cast<uint32_t>(answers.size()), .reserved = 0};
  buf.assign(peek_resp_size(w.count, data_pages), std::byte{0x5a});
  std::memcpy(buf.data(), &w, sizeof(w));
  std::memcpy(buf.data() + sizeof(w), answers.data(), answers.size() * sizeof(uint16_t));
  return Message{.type = MsgType::kPeekResp, .src = src, .dst = 0, .page = first, .payload = buf};
}

// Answers nobody asked for, from the wrong node, of the wrong size or with
// answers that make no sense are rejected whole: nothing is mapped.  Peeks
// for runs that are empty, too long or past the region are rejected too.
TEST(Peek, HostileMessagesAreRejectedAndChangeNothing) {
  ModelCluster c(3, 8);
  const PageKey p = c.page_homed_on(1, 0);
  std::vector<std::byte> buf;
  auto inject = [&](NodeId dst, const Message& m) { c.engine(dst).on_message(m, c.now() + 1); };

  inject(0, peek_resp(p, 1, {kPeekData}, 1, buf));  // never asked
  c.engine(0).peek(p, 2, c.now() + 1);
  ASSERT_EQ(c.net().in_flight.size(), 1u);
  inject(0, peek_resp(p, 2, {kPeekData, kPeekData}, 2, buf));  // asked node 1, not node 2
  inject(0, peek_resp(p, 1, {kPeekData, kPeekZero}, 2, buf));  // data for one page, two sent
  inject(0, peek_resp(p, 1, {kPeekZero, 0x7777}, 0, buf));    // no such answer
  inject(0, peek_resp(p, 1, {kPeekZero, kPeekZero, kPeekZero}, 0, buf));  // a page not asked for
  EXPECT_EQ(c.node(0).rejections.size(), 5u);
  for (uint64_t i = 0; i < 2; ++i) EXPECT_FALSE(c.node(0).page(c.page_homed_on(1, i)).mapped) << i;
  EXPECT_EQ(c.engine(0).cache().snapshot_pages(), 0u);

  const auto peek = [&](PageKey first, uint32_t count) {
    static PeekWire w;
    w = PeekWire{.count = count, .reserved = 0};
    return Message{.type = MsgType::kPeek, .src = 0, .dst = 1, .page = first,
                   .payload = std::as_bytes(std::span(&w, 1))};
  };
  const size_t in_flight = c.net().in_flight.size();
  inject(1, peek(p, 0));
  inject(1, peek(p, kMaxPeekRun + 1));
  inject(1, peek(PageKey(0, 3 * 8 - 1), 2));  // past the region's end
  EXPECT_EQ(c.node(1).rejections.size(), 3u);
  EXPECT_EQ(c.net().in_flight.size(), in_flight) << "a rejected Peek was answered";

  c.deliver_all_fifo();  // the real answer still lands
  EXPECT_EQ(c.engine(0).cache().snapshot_pages(), 2u);
  EXPECT_TRUE(c.engine(0).idle());
}

// Only a page's home may name its owner, and never this node, itself or a
// node gone: any other name is a refusal, and the page is asked for as
// usual.  An owner that names yet another owner is refused too, so that a
// peek takes one hop at most (two peers naming each other would bounce it
// until the timeout).
TEST(Peek, OnlyTheHomeNamesAnOwnerOnce) {
  ModelCluster c(3, 8);
  const PageKey p = c.page_homed_on(1, 0), q = c.page_homed_on(1, 1), r = c.page_homed_on(1, 2);
  for (PageKey k : {p, q}) c.write_byte(1, k, 4);
  c.write_byte(2, r, 6);  // homed on 1, owned by 2
  std::vector<std::byte> buf;
  auto inject = [&](NodeId dst, const Message& m) { c.engine(dst).on_message(m, c.now() + 1); };

  c.engine(0).peek(p, 2, c.now() + 1);
  const int real = c.find(MsgType::kPeek, 1);
  ASSERT_GE(real, 0);
  c.net().in_flight.erase(c.net().in_flight.begin() + real);  // the home's own answer is not heard
  inject(0, peek_resp(p, 1, {0, 1}, 0, buf));  // names the asker, then itself
  EXPECT_EQ(c.engine(0).counters().peeks_refused, 2u);
  EXPECT_EQ(c.engine(0).cache().pending(p), Cache::Pending::kRead) << "asked for as usual";

  c.engine(0).peek(r, 1, c.now() + 1);
  c.deliver(static_cast<size_t>(c.find(MsgType::kPeek, 1)));  // the home names node 2
  c.deliver(static_cast<size_t>(c.find(MsgType::kPeekResp, 0)));
  const int to_owner = c.find(MsgType::kPeek, 2);
  ASSERT_GE(to_owner, 0) << "node 0 did not ask the owner the home named";
  c.net().in_flight.erase(c.net().in_flight.begin() + to_owner);
  inject(0, peek_resp(r, 2, {1}, 0, buf));  // the owner names the home back
  EXPECT_EQ(c.engine(0).counters().peeks_refused, 3u);
  EXPECT_TRUE(c.node(0).rejections.empty()) << c.node(0).rejections.front();

  c.deliver_all_fifo();
  for (PageKey k : {p, q}) {
    EXPECT_EQ(c.engine(0).cache().state(k), S::kShared);
    EXPECT_EQ(static_cast<uint8_t>(c.node(0).page(k).data[0]), 4);
  }
  EXPECT_EQ(c.engine(0).cache().state(r), S::kShared);
  EXPECT_EQ(static_cast<uint8_t>(c.node(0).page(r).data[0]), 6);
  EXPECT_EQ(c.engine(0).cache().snapshot_pages(), 0u);
  EXPECT_TRUE(c.engine(0).idle());
}

// While a range's home moves, the new home holds empty entries until the
// old home's arrive: it refuses a peek there (a written page is not zero),
// and the page asked for as usual waits for the move.
TEST(Peek, NewHomeRefusesWhileItsEntriesAreOnTheWay) {
  ModelCluster c(3, 8);
  const PageKey p = c.page_homed_on(1, 0);
  c.write_byte(1, p, 9);
  c.engine(1).rehome(PageRange{0, c.pages_per_node(), 2 * c.pages_per_node()}, 2, c.now() + 1);
  // Deliver the move's messages until node 0 routes p to node 2 while
  // node 2 has not had p's entry yet.
  for (int i = 0; i < 100 && c.engine(0).home(p) != 2; ++i) {
    const int k = c.find(MsgType::kHomeEntry, 2);
    ASSERT_TRUE(k < 0 || c.net().in_flight.size() > 1) << "the entry would go before node 0 hears";
    size_t next = 0;
    while (next < c.net().in_flight.size() && c.net().in_flight[next].msg.type == MsgType::kHomeEntry) ++next;
    ASSERT_LT(next, c.net().in_flight.size());
    c.deliver(next);
  }
  ASSERT_EQ(c.engine(0).home(p), 2);
  ASSERT_TRUE(c.engine(2).directory().held(p));
  c.engine(0).peek(p, 1, c.now() + 1);
  c.deliver(static_cast<size_t>(c.find(MsgType::kPeek, 2)));
  c.deliver(static_cast<size_t>(c.find(MsgType::kPeekResp, 0)));
  EXPECT_EQ(c.engine(0).counters().peeks_refused, 1u);
  EXPECT_FALSE(c.engine(0).cache().snapshot(p)) << "a zero snapshot of a written page";
  c.deliver_all_fifo();
  EXPECT_EQ(c.read_byte(0, p), 9);
  for (NodeId k = 0; k < 3; ++k) EXPECT_TRUE(c.node(k).rejections.empty()) << c.node(k).rejections.front();
}

// A snapshot on a page's home is replaced when the home installs its own
// copy (the owner wrote the page back): no install over a mapped page.
TEST(Peek, HomeCopyReplacesTheHomesSnapshot) {
  ModelCluster c(2, 8);
  const PageKey p = c.page_homed_on(0, 0);
  c.write_byte(1, p, 5);  // homed on 0, owned by 1
  c.engine(0).peek(p, 1, c.now() + 1);
  c.deliver_all_fifo();
  ASSERT_TRUE(c.engine(0).cache().snapshot(p));
  c.engine(1).shed_copies(8, c.now() + 1);  // node 1 writes its copy back home
  ASSERT_GE(c.find(MsgType::kWriteback, 0), 0);
  c.deliver_all_fifo();
  EXPECT_FALSE(c.engine(0).cache().snapshot(p));
  EXPECT_EQ(c.engine(0).cache().state(p), S::kShared) << "the home's own copy";
  EXPECT_EQ(c.read_byte(0, p), 5);
  EXPECT_TRUE(c.node(0).rejections.empty());
}

// A peer that never answers a peek is named within the timeout, as for any
// request.
TEST(Peek, SilentHomeTimesOut) {
  ModelCluster c(2, 8);
  const PageKey p = c.page_homed_on(1, 0);
  c.engine(0).peek(p, 1, c.now() + 1);
  c.net().in_flight.clear();  // lost
  try {
    c.engine(0).check_timeouts(c.now() + 2'000'000'000);
    FAIL() << "no timeout";
  } catch (const PeerError& e) {
    EXPECT_EQ(e.node(), 1);
    EXPECT_EQ(e.err(), ETIMEDOUT);
  }
}

// A home that moves a range away drops its snapshots of it with its copies:
// none is left mapped behind a page state that says otherwise.
TEST(Peek, SnapshotsGoWhenTheirHomeMovesAway) {
  ModelCluster c(2, 8);
  const PageKey zero = c.page_homed_on(0, 1), written = c.page_homed_on(0, 2);
  c.write_byte(1, written, 8);
  c.engine(0).peek(zero, 2, c.now() + 1);
  c.deliver_all_fifo();
  ASSERT_EQ(c.engine(0).cache().snapshot_pages(), 2u);
  c.engine(0).rehome(PageRange{0, 0, c.pages_per_node()}, 1, c.now() + 1);
  c.deliver_all_fifo();
  ASSERT_FALSE(c.engine(0).moving_home());
  EXPECT_EQ(c.engine(0).cache().snapshot_pages(), 0u);
  EXPECT_FALSE(c.engine(0).cache().snapshot(zero));
  EXPECT_FALSE(c.node(0).page(zero).mapped);
  EXPECT_FALSE(c.node(0).page(written).mapped);
  EXPECT_EQ(c.read_byte(0, written), 8);
  EXPECT_EQ(c.read_byte(0, zero), 0);
  for (NodeId k = 0; k < 2; ++k) EXPECT_TRUE(c.node(k).rejections.empty()) << c.node(k).rejections.front();
}

}  // namespace
}  // namespace aggvm::dsm::testing
