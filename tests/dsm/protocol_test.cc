// Unit tests of the coherence protocol: every transition and the races
// between messages in flight, on model memory and a model network.
#include <gtest/gtest.h>

#include <random>

#include "error.h"
#include "model_cluster.h"

namespace aggvm::dsm::testing {
namespace {

using S = PageState;

TEST(Protocol, ReadOfNeverWrittenPageMovesNoData) {
  ModelCluster c(2, 4);
  const PageKey p = c.page_homed_on(1);
  EXPECT_EQ(c.read_byte(0, p), 0);
  EXPECT_EQ(c.engine(0).cache().state(p), S::kShared);
  EXPECT_EQ(c.net().page_bytes_sent, 0u) << "a zero page crossed the network";
  EXPECT_TRUE(c.engine(1).directory().entry(p).sharers.test(0));
  EXPECT_FALSE(c.engine(1).directory().entry(p).touched);
  EXPECT_EQ(c.engine(1).cache().state(p), S::kInvalid) << "the home mapped a zero page it never used";
}

TEST(Protocol, WriteOfNeverWrittenPageMovesNoData) {
  ModelCluster c(2, 4);
  const PageKey p = c.page_homed_on(1);
  c.write_byte(0, p, 7);
  EXPECT_EQ(c.engine(0).cache().state(p), S::kModified);
  EXPECT_EQ(c.engine(1).directory().entry(p).owner, 0);
  EXPECT_EQ(c.net().page_bytes_sent, 0u);
}

TEST(Protocol, RemoteReadDowngradesOwnerAndHomeKeepsCopy) {
  ModelCluster c(3, 4);
  const PageKey p = c.page_homed_on(2);
  c.write_byte(0, p, 42);
  EXPECT_EQ(c.read_byte(1, p), 42);
  EXPECT_EQ(c.engine(0).cache().state(p), S::kShared) << "owner should be downgraded";
  EXPECT_EQ(c.engine(1).cache().state(p), S::kShared);
  EXPECT_EQ(c.engine(2).cache().state(p), S::kShared) << "home must keep a copy";
  const DirEntry& d = c.engine(2).directory().entry(p);
  EXPECT_EQ(d.owner, kNoNode);
  EXPECT_EQ(d.sharers.count(), 3u);
  EXPECT_FALSE(c.node(0).page(p).writable);
}

TEST(Protocol, WriteInvalidatesEverySharer) {
  ModelCluster c(4, 4);
  const PageKey p = c.page_homed_on(3);
  c.write_byte(3, p, 1);
  for (NodeId n = 0; n < 3; ++n) EXPECT_EQ(c.read_byte(n, p), 1);
  c.write_byte(1, p, 2);
  for (NodeId n : {0, 2, 3}) EXPECT_EQ(c.engine(n).cache().state(p), S::kInvalid) << "node " << n;
  EXPECT_EQ(c.engine(1).cache().state(p), S::kModified);
  for (NodeId n : {0, 2, 3}) EXPECT_EQ(c.read_byte(n, p), 2) << "node " << n;
}

TEST(Protocol, UpgradeOfSharedCopyMovesNoData) {
  ModelCluster c(2, 4);
  const PageKey p = c.page_homed_on(1);
  c.write_byte(1, p, 5);
  EXPECT_EQ(c.read_byte(0, p), 5);
  const uint64_t before = c.net().page_bytes_sent;
  c.write_byte(0, p, 6);
  EXPECT_EQ(c.net().page_bytes_sent, before) << "an upgrade should not resend the page";
  EXPECT_EQ(c.read_byte(1, p), 6);
}

TEST(Protocol, OwnerWriteAfterFetchInvalidate) {
  ModelCluster c(3, 4);
  const PageKey p = c.page_homed_on(0);
  c.write_byte(1, p, 9);
  c.write_byte(2, p, 10);  // fetch-invalidate from node 1
  EXPECT_EQ(c.engine(1).cache().state(p), S::kInvalid);
  EXPECT_EQ(c.engine(0).cache().state(p), S::kInvalid) << "home keeps no copy while owned";
  EXPECT_EQ(c.engine(0).directory().entry(p).owner, 2);
  EXPECT_EQ(c.read_byte(0, p), 10);
}

TEST(Protocol, HomeOwnsItsOwnPage) {
  ModelCluster c(2, 4);
  const PageKey p = c.page_homed_on(0);
  c.write_byte(0, p, 3);
  EXPECT_EQ(c.engine(0).directory().entry(p).owner, 0);
  EXPECT_EQ(c.read_byte(1, p), 3);  // fetch from the home itself
  EXPECT_EQ(c.engine(0).cache().state(p), S::kShared);
  c.write_byte(0, p, 4);
  EXPECT_EQ(c.read_byte(1, p), 4);
}

TEST(Protocol, ConcurrentFaultsOnOnePageSendOneRequest) {
  ModelCluster c(2, 4);
  const PageKey p = c.page_homed_on(1);
  c.fault(0, p, Access::kRead, 101);
  c.fault(0, p, Access::kRead, 102);
  c.fault(0, p, Access::kRead, 103);
  ASSERT_EQ(c.net().in_flight.size(), 1u) << "one page is requested at most once per node";
  c.deliver_all_fifo();
  EXPECT_EQ(c.node(0).resolved_count, 3u);
}

TEST(Protocol, FaultsOnDifferentPagesProceedInParallel) {
  ModelCluster c(2, 8);
  for (uint64_t i = 0; i < 8; ++i) c.fault(0, c.page_homed_on(1, i), Access::kWrite, 100 + int(i));
  EXPECT_EQ(c.net().in_flight.size(), 8u) << "every page's request should be in flight at once";
  c.deliver_all_fifo();
  for (uint64_t i = 0; i < 8; ++i) EXPECT_EQ(c.engine(0).cache().state(c.page_homed_on(1, i)), S::kModified);
}

TEST(Protocol, WriteFaultDuringReadRequestUpgradesAfterGrant) {
  ModelCluster c(2, 4);
  const PageKey p = c.page_homed_on(1);
  c.fault(0, p, Access::kRead, 1);
  c.fault(0, p, Access::kWrite, 2);
  c.deliver_all_fifo();
  EXPECT_EQ(c.engine(0).cache().state(p), S::kModified);
  EXPECT_EQ(c.node(0).resolved_count, 2u);
}

// Read-modify-write by one node after another (a lock word, a counter, a
// list head): once an upgrade finds one other copy, the page is migratory
// and each later read takes it whole (Exclusive), so the write after it is
// local: one remote fault per move instead of two.
TEST(Protocol, MigratoryPageMovesWithOneFault) {
  ModelCluster c(3, 4);
  const PageKey p = c.page_homed_on(2);
  c.write_byte(0, p, 1);
  EXPECT_EQ(c.read_byte(1, p), 1);
  c.write_byte(1, p, 2);  // the upgrade finds node 0's copy: migratory
  EXPECT_TRUE(c.engine(2).directory().entry(p).migratory);
  for (uint8_t v = 3; v < 9; ++v) {
    const NodeId n = (v + 1) % 2;  // 0, 1, 0, 1...: never the owner
    EXPECT_EQ(c.read_byte(n, p), v - 1);
    EXPECT_EQ(c.engine(n).cache().state(p), S::kExclusive) << "round " << int(v);
    EXPECT_FALSE(c.node(n).page(p).writable) << "Exclusive is mapped write-protected";
    EXPECT_EQ(c.engine(1 - n).cache().state(p), S::kInvalid) << "the last owner gave it up";
    const size_t sent = c.net().sent;
    c.write_byte(n, p, v);
    EXPECT_EQ(c.net().sent, sent) << "the write to an Exclusive page sent a message";
    EXPECT_EQ(c.engine(n).cache().state(p), S::kModified);
  }
  EXPECT_EQ(c.engine(2).counters().exclusive_grants, 6u);
  EXPECT_EQ(c.engine(0).counters().silent_upgrades + c.engine(1).counters().silent_upgrades, 6u);
  EXPECT_EQ(c.read_byte(2, p), 8) << "the home reads the last value";
}

// A migratory page that is then only read: the owner fetched from never
// wrote its Exclusive copy (FetchResp kFlagClean), the mark goes, and the
// readers share the page instead of taking it from each other.
TEST(Protocol, ReadSharedPageLosesTheMigratoryMark) {
  ModelCluster c(3, 4);
  const PageKey p = c.page_homed_on(2);
  c.write_byte(0, p, 1);
  EXPECT_EQ(c.read_byte(1, p), 1);
  c.write_byte(1, p, 2);
  ASSERT_TRUE(c.engine(2).directory().entry(p).migratory);
  EXPECT_EQ(c.read_byte(0, p), 2);
  EXPECT_EQ(c.engine(0).cache().state(p), S::kExclusive);
  EXPECT_EQ(c.read_byte(1, p), 2);  // node 0 never wrote: clean
  EXPECT_FALSE(c.engine(2).directory().entry(p).migratory);
  EXPECT_EQ(c.engine(1).cache().state(p), S::kShared);
  EXPECT_EQ(c.read_byte(0, p), 2);
  EXPECT_EQ(c.engine(0).cache().state(p), S::kShared) << "readers share the page again";
  EXPECT_EQ(c.engine(1).cache().state(p), S::kShared);
}

// Threads that wait on an Exclusive grant to a read: a writer among them
// gets the page writable at once.
TEST(Protocol, WriterJoiningAnExclusiveReadIsServedByIt) {
  ModelCluster c(2, 4);
  const PageKey p = c.page_homed_on(1);
  c.write_byte(0, p, 1);
  EXPECT_EQ(c.read_byte(1, p), 1);
  c.write_byte(1, p, 2);  // migratory
  c.fault(0, p, Access::kRead, 11);
  c.fault(0, p, Access::kWrite, 12);
  c.deliver_all_fifo();
  EXPECT_EQ(c.engine(0).cache().state(p), S::kModified);
  EXPECT_TRUE(c.node(0).page(p).writable);
  EXPECT_TRUE(c.node(0).blocked.empty()) << "a thread is still waiting";
}

// A page held Exclusive is the cluster's only copy: an invalidation of it
// is a broken peer's, and an eviction writes it back.
TEST(Protocol, ExclusiveCopyIsEvictedWithItsContent) {
  ModelCluster c(2, 4, /*cap_pages=*/6);
  for (uint64_t i = 0; i < 4; ++i) c.write_byte(0, c.page_homed_on(0, i), 20);  // 4 resident for good
  const PageKey p = c.page_homed_on(1);
  c.write_byte(0, p, 1);
  EXPECT_EQ(c.read_byte(1, p), 1);
  c.write_byte(1, p, 2);
  EXPECT_EQ(c.read_byte(0, p), 2);
  ASSERT_EQ(c.engine(0).cache().state(p), S::kExclusive);
  c.write_byte(0, c.page_homed_on(1, 1), 11);
  c.write_byte(0, c.page_homed_on(1, 2), 12);  // the cap: the oldest remote page goes
  EXPECT_EQ(c.engine(0).cache().state(p), S::kInvalid) << "the cap did not evict it";
  EXPECT_EQ(c.engine(0).counters().writebacks, 1u) << "an Exclusive copy is the only one: written back";
  EXPECT_EQ(c.read_byte(1, p), 2) << "its content went home";
}

// A fetch ahead of use (no thread waiting) maps a shared copy that a
// release gives up again, as an eviction: the home forgets the sharer, so
// a later write elsewhere sends node 0 nothing, and node 0 reads the new
// value back.  A copy a thread faulted in, a Modified one and one of a
// page homed here are left.
TEST(Protocol, ReleaseGivesUpOnlyWhatAFetchBrought) {
  ModelCluster c(2, 8);
  const PageKey fetched = c.page_homed_on(1, 0), faulted = c.page_homed_on(1, 1),
                modified = c.page_homed_on(1, 2), own = c.page_homed_on(0, 0);
  for (PageKey p : {fetched, faulted, modified, own}) c.write_byte(1, p, 5);
  c.engine(0).fetch(fetched, Access::kRead, c.now() + 1);
  c.engine(0).fetch(own, Access::kRead, c.now() + 1);
  c.deliver_all_fifo();
  ASSERT_EQ(c.engine(0).cache().state(fetched), S::kShared);
  ASSERT_EQ(c.engine(0).cache().state(own), S::kShared);
  EXPECT_EQ(c.read_byte(0, faulted), 5);
  c.write_byte(0, modified, 6);

  EXPECT_EQ(c.engine(0).release(fetched, 3, c.now() + 1), 1u);
  EXPECT_EQ(c.engine(0).release(own, 1, c.now() + 1), 0u) << "a page homed here";
  EXPECT_EQ(c.engine(0).cache().state(own), S::kShared);
  EXPECT_EQ(c.engine(0).cache().state(fetched), S::kInvalid);
  EXPECT_FALSE(c.node(0).page(fetched).mapped);
  EXPECT_EQ(c.engine(0).cache().state(faulted), S::kShared) << "a thread here uses it";
  EXPECT_EQ(c.engine(0).cache().state(modified), S::kModified);
  c.deliver_all_fifo();
  EXPECT_EQ(c.engine(0).cache().requests_in_flight(), 0u) << "the home did not ack the eviction";
  EXPECT_FALSE(c.engine(1).directory().entry(fetched).sharers.test(0));

  const uint64_t invalidations = c.engine(0).counters().invalidations_received;
  c.write_byte(1, fetched, 7);
  EXPECT_EQ(c.engine(0).counters().invalidations_received, invalidations) << "node 0 was still a sharer";
  EXPECT_EQ(c.read_byte(0, fetched), 7);
  // Faulted back by a thread: in use now, a release leaves it.
  EXPECT_EQ(c.engine(0).release(fetched, 1, c.now() + 1), 0u);
}

// A restore's stream writes what node 0 fetched for writing, without a
// fault: released, the page goes home with what was written, and no copy
// stays on node 0.
TEST(Protocol, ReleaseSendsAWrittenFetchHome) {
  ModelCluster c(2, 8);
  const PageKey written = c.page_homed_on(1, 0), untouched = c.page_homed_on(1, 1);
  for (PageKey p : {written, untouched}) c.engine(0).fetch(p, Access::kWrite, c.now() + 1);
  c.deliver_all_fifo();
  ASSERT_EQ(c.engine(0).cache().state(written), S::kModified);
  c.write_byte(0, written, 9);  // mapped writable: no fault, no request
  ASSERT_EQ(c.engine(0).cache().requests_in_flight(), 0u);

  EXPECT_EQ(c.engine(0).release(written, 2, c.now() + 1), 2u);
  EXPECT_EQ(c.engine(0).counters().writebacks, 2u);
  for (PageKey p : {written, untouched}) {
    EXPECT_EQ(c.engine(0).cache().state(p), S::kInvalid);
    EXPECT_FALSE(c.node(0).page(p).mapped);
  }
  c.deliver_all_fifo();
  EXPECT_EQ(c.engine(0).cache().requests_in_flight(), 0u) << "the home did not ack the write-back";
  EXPECT_EQ(c.engine(1).directory().entry(written).owner, kNoNode);
  EXPECT_EQ(c.engine(0).cache().resident_pages(), 0u);
  EXPECT_EQ(c.read_byte(1, written), 9) << "the written byte did not go home";
  EXPECT_EQ(c.read_byte(1, untouched), 0);
  EXPECT_EQ(c.read_byte(0, written), 9);
}

// The home granted a read to node 0 and, before node 0 confirmed, node 1
// asked to write: the invalidation must wait for the grant to land.
TEST(ProtocolRace, InvalidationNeverOvertakesGrantInFlight) {
  ModelCluster c(3, 4);
  const PageKey p = c.page_homed_on(2);
  c.write_byte(2, p, 1);
  c.fault(0, p, Access::kRead);
  c.deliver(c.find(MsgType::kReadReq, 2));            // home serves node 0 at once...
  ASSERT_GE(c.find(MsgType::kGrant, 0), 0);
  c.fault(1, p, Access::kWrite);
  c.deliver(c.find(MsgType::kWriteReq, 2));           // ...node 1's write arrives meanwhile
  EXPECT_LT(c.find(MsgType::kInvalidate, 0), 0) << "invalidate sent while a grant is in flight";
  EXPECT_TRUE(c.engine(2).directory().busy(p));
  c.deliver(c.find(MsgType::kGrant, 0));
  c.deliver(c.find(MsgType::kUnblock, 2));            // now the write may start
  ASSERT_GE(c.find(MsgType::kInvalidate, 0), 0);
  c.deliver_all_fifo();
  EXPECT_EQ(c.engine(0).cache().state(p), S::kInvalid);
  EXPECT_EQ(c.engine(1).cache().state(p), S::kModified);
}

// Node 0 holds a shared copy and asks to upgrade; node 1's write reaches
// the home first and invalidates node 0.  Node 0's upgrade must then get
// the data, since its copy is gone.
TEST(ProtocolRace, InvalidationCrossesUpgradeRequest) {
  ModelCluster d(3, 4);
  const PageKey q = d.page_homed_on(2);
  d.write_byte(2, q, 11);
  EXPECT_EQ(d.read_byte(0, q), 11);
  d.fault(0, q, Access::kWrite);
  d.fault(1, q, Access::kWrite);
  const int from1 = [&] {
    for (size_t i = 0; i < d.net().in_flight.size(); ++i)
      if (d.net().in_flight[i].msg.src == 1) return static_cast<int>(i);
    return -1;
  }();
  ASSERT_GE(from1, 0);
  d.deliver(from1);  // node 1's write starts, invalidating node 0 and the home
  d.deliver(d.find(MsgType::kInvalidate, 0));
  EXPECT_EQ(d.engine(0).cache().state(q), S::kInvalid);
  EXPECT_EQ(d.engine(0).cache().pending(q), Cache::Pending::kWrite);
  d.deliver_all_fifo();
  EXPECT_EQ(d.engine(1).cache().state(q), S::kInvalid) << "node 0's write came after node 1's";
  EXPECT_EQ(d.engine(0).cache().state(q), S::kModified);
  EXPECT_EQ(static_cast<uint8_t>(d.node(0).page(q).data[0]), 11) << "upgrade lost the data";
}

// Node 0 evicts its modified page (writeback) while the home fetches it
// for node 1: the fetch is answered from the copy in flight, then the
// stale writeback is acknowledged without effect.
TEST(ProtocolRace, WritebackCrossesFetch) {
  // A cap of one page forces node 0 to write page a back when it faults on b.
  ModelCluster small(3, 4, /*cap_pages=*/1);
  const PageKey a = small.page_homed_on(2, 0);
  const PageKey b = small.page_homed_on(2, 1);
  small.write_byte(0, a, 77);
  small.fault(1, a, Access::kWrite);
  small.deliver(small.find(MsgType::kWriteReq, 2));
  const int fetch = small.find(MsgType::kFetch, 0);
  ASSERT_GE(fetch, 0);
  small.fault(0, b, Access::kRead);  // cap 1: page a is written back
  ASSERT_GE(small.find(MsgType::kWriteback, 2), 0);
  EXPECT_EQ(small.engine(0).cache().state(a), S::kInvalid);
  small.deliver(small.find(MsgType::kFetch, 0));  // answered from the writeback copy
  small.deliver_all_fifo();
  EXPECT_EQ(small.engine(1).cache().state(a), S::kModified);
  EXPECT_EQ(static_cast<uint8_t>(small.node(1).page(a).data[0]), 77);
  EXPECT_EQ(small.engine(2).directory().entry(a).owner, 1);
  EXPECT_TRUE(small.node(0).rejections.empty()) << small.node(0).rejections.front();
  EXPECT_TRUE(small.node(2).rejections.empty()) << small.node(2).rejections.front();
}

TEST(ProtocolRace, InvalidateCrossesEviction) {
  ModelCluster c(3, 4, /*cap_pages=*/1);
  const PageKey a = c.page_homed_on(2, 0);
  const PageKey b = c.page_homed_on(2, 1);
  c.write_byte(2, a, 5);
  EXPECT_EQ(c.read_byte(0, a), 5);
  c.fault(1, a, Access::kWrite);
  c.deliver(c.find(MsgType::kWriteReq, 2));  // home invalidates node 0 and itself
  c.fault(0, b, Access::kRead);              // node 0 evicts a meanwhile
  ASSERT_GE(c.find(MsgType::kEvict, 2), 0);
  c.deliver(c.find(MsgType::kInvalidate, 0));  // acked though the copy is gone
  c.deliver_all_fifo();
  EXPECT_EQ(c.engine(1).cache().state(a), S::kModified);
  EXPECT_FALSE(c.engine(2).directory().entry(a).sharers.test(0));
  EXPECT_TRUE(c.node(2).rejections.empty());
}

TEST(Protocol, ResidentCapEvictsSharedFirstAndWritesModifiedBack) {
  ModelCluster c(2, 32, /*cap_pages=*/4);
  for (uint64_t i = 0; i < 16; ++i) c.write_byte(0, c.page_homed_on(1, i), uint8_t(i + 1));
  EXPECT_LE(c.engine(0).cache().resident_peak_pages(), 4u);
  EXPECT_GT(c.engine(0).counters().writebacks, 0u);
  for (uint64_t i = 0; i < 16; ++i) EXPECT_EQ(c.read_byte(0, c.page_homed_on(1, i)), i + 1);
  EXPECT_LE(c.engine(0).cache().resident_peak_pages(), 4u);
  EXPECT_GT(c.engine(0).counters().evictions, 0u);
}

TEST(Protocol, SilentPeerTimesOut) {
  ModelCluster c(2, 4);
  const PageKey p = c.page_homed_on(1);
  c.fault(0, p, Access::kRead);
  c.net().in_flight.clear();  // node 1 never answers
  EXPECT_NO_THROW(c.engine(0).check_timeouts(c.now() + 1));
  try {
    c.engine(0).check_timeouts(c.now() + 2'000'000'000);
    FAIL() << "no timeout";
  } catch (const DsmError& e) {
    EXPECT_EQ(e.err(), ETIMEDOUT);
    EXPECT_NE(std::string(e.what()).find("node 1"), std::string::npos) << e.what();
  }
}

TEST(Protocol, HomeTimesOutOnSilentSharer) {
  ModelCluster c(3, 4);
  const PageKey p = c.page_homed_on(2);
  EXPECT_EQ(c.read_byte(0, p), 0);
  c.fault(1, p, Access::kWrite);
  c.deliver(c.find(MsgType::kWriteReq, 2));
  ASSERT_GE(c.find(MsgType::kInvalidate, 0), 0);
  c.net().in_flight.clear();  // node 0 died
  EXPECT_THROW(c.engine(2).check_timeouts(c.now() + 2'000'000'000), DsmError);
}

TEST(Protocol, UnexpectedMessagesAreRejectedAndChangeNothing) {
  ModelCluster c(3, 4);
  const PageKey p = c.page_homed_on(2);
  auto inject = [&](NodeId dst, Message m) { c.engine(dst).on_message(m, c.now() + 1); };
  Message grant{.type = MsgType::kGrant, .flags = kFlagZero | kFlagWrite, .src = 1, .dst = 0, .txn = 1, .page = p};
  inject(0, grant);  // from a node that is not the home
  grant.src = 2;
  inject(0, grant);  // from the home, but never requested
  EXPECT_EQ(c.engine(0).cache().state(p), S::kInvalid);
  Message ack{.type = MsgType::kInvAck, .src = 0, .dst = 2, .txn = 99, .page = p};
  inject(2, ack);
  Message fetch{.type = MsgType::kFetch, .src = 2, .dst = 1, .txn = 5, .page = p};
  inject(1, fetch);
  Message req{.type = MsgType::kReadReq, .src = 0, .dst = 1, .page = p};
  inject(1, req);  // request to a node that is not the home
  EXPECT_EQ(c.node(0).rejections.size(), 2u);
  EXPECT_EQ(c.node(1).rejections.size(), 2u);
  EXPECT_EQ(c.node(2).rejections.size(), 1u);
  EXPECT_TRUE(c.net().in_flight.empty()) << "a rejected message caused a reply";
  EXPECT_EQ(c.read_byte(0, p), 0) << "the node must keep serving after rejections";
}

// Random operations with messages delivered in random order: at every step
// at most one writable copy exists, no shared copy coexists with it, and
// every mapped copy holds the last value written.
TEST(ProtocolRace, RandomDeliveryOrderKeepsSingleWriterAndFreshCopies) {
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    const uint16_t n = 3 + seed % 2;
    // Homed pages + faulting threads + 1: the least start-up accepts.
    const uint64_t cap = seed % 3 == 0 ? 3 + 4 + 1 : 0;
    ModelCluster c(n, 3, cap);
    std::mt19937_64 rng(seed);
    const uint64_t pages = n * 3;
    std::vector<uint8_t> truth(pages, 0);
    uint8_t next = 1;
    for (int step = 0; step < 4000; ++step) {
      const bool act = c.net().in_flight.empty() || rng() % 3 == 0;
      if (act) {
        random_access(c, rng, truth, next);
      } else {
        c.deliver(rng() % c.net().in_flight.size());
      }
      expect_coherent(c, truth, seed);
      if (::testing::Test::HasFatalFailure()) return;
    }
    c.deliver_all_fifo();
    for (NodeId k = 0; k < n; ++k) {
      EXPECT_TRUE(c.engine(k).idle()) << "seed " << seed << " node " << k << " still busy";
      EXPECT_TRUE(c.node(k).rejections.empty())
          << "seed " << seed << " node " << k << ": " << c.node(k).rejections.front();
      EXPECT_LE(c.engine(k).cache().resident_peak_pages(), cap ? cap : pages)
          << "seed " << seed;
    }
    for (uint64_t i = 0; i < pages; ++i)
      for (NodeId k = 0; k < n; ++k)
        ASSERT_EQ(c.read_byte(k, PageKey(0, i)), truth[i]) << "seed " << seed;
  }
}

// ---- bounded structures (issue 9, item 5) --------------------------------

// Pages node k holds (Shared or Modified) that are homed elsewhere: what
// eviction may pick, and all the victim list may hold.
uint64_t resident_non_home(ModelCluster& c, NodeId k, uint64_t pages) {
  uint64_t n = 0;
  for (uint64_t i = 0; i < pages; ++i) {
    const PageKey p(0, i);
    if (i / c.pages_per_node() != k && c.engine(k).cache().state(p) != S::kInvalid) ++n;
  }
  return n;
}

// 100k writes bouncing pages between two nodes, no cap: every install of a
// page homed elsewhere used to append to the victim list for good (50,000
// entries a node with nothing resident); now it holds exactly the pages
// resident here and homed elsewhere, and nothing else grows.
TEST(Bounded, VictimListHoldsOnlyResidentPagesUnderPingPong) {
  ModelCluster c(2, 4);
  const uint64_t pages = 8;
  size_t max_victims[2] = {0, 0};
  for (uint64_t i = 0; i < 100'000; ++i) {
    const NodeId k = i % 2;
    const PageKey p(0, (i / 2) % pages);
    c.write_byte(k, p, static_cast<uint8_t>(i));
    if (i % 1000 == 0 || i + 2 >= 100'000)
      for (NodeId n : {0, 1}) {
        const size_t v = c.engine(n).cache().victims();
        ASSERT_LE(v, resident_non_home(c, n, pages)) << "after write " << i << " node " << n;
        max_victims[n] = std::max(max_victims[n], v);
      }
  }
  for (NodeId n : {0, 1}) {
    EXPECT_LE(max_victims[n], 4u) << "node " << n;
    EXPECT_EQ(c.engine(n).cache().requests_in_flight(), 0u);
    EXPECT_EQ(c.engine(n).directory().transactions(), 0u);
    EXPECT_TRUE(c.node(n).rejections.empty()) << c.node(n).rejections.front();
  }
}

// The same with a cap: residency stays under it, and the victim list still
// lists exactly the resident pages homed elsewhere.
TEST(Bounded, CapHoldsUnderPingPong) {
  const uint64_t per_node = 16, pages = 2 * per_node, cap = per_node + 4;
  ModelCluster c(2, per_node, cap);
  std::mt19937_64 rng(9);
  std::vector<uint8_t> truth(pages, 0);
  for (uint64_t i = 0; i < 100'000; ++i) {
    const NodeId k = i % 2;
    const PageKey p(0, rng() % pages);
    if (rng() % 4 == 0) {
      ASSERT_EQ(c.read_byte(k, p), truth[p.index()]) << "read " << i;
    } else {
      truth[p.index()] = static_cast<uint8_t>(i);
      c.write_byte(k, p, truth[p.index()]);
    }
    for (NodeId n : {0, 1}) {
      ASSERT_LE(c.engine(n).cache().resident_pages(), cap) << "after op " << i;
      ASSERT_EQ(c.engine(n).cache().victims(), resident_non_home(c, n, pages)) << "after op " << i;
    }
  }
  for (NodeId n : {0, 1}) {
    EXPECT_LE(c.engine(n).cache().resident_peak_pages(), cap);
    EXPECT_GT(c.engine(n).counters().writebacks, 0u) << "the cap was never reached";
    EXPECT_EQ(c.engine(n).cache().requests_in_flight(), 0u);
  }
}

// Each node keeps directory entries only for the pages it homes; the
// cache keeps one byte for every page.
TEST(Bounded, DirectoryKeepsOnlyHomedPages) {
  ModelCluster c(4, 1000);
  for (NodeId n = 0; n < 4; ++n) EXPECT_EQ(c.engine(n).directory().entries(), 1000u) << "node " << n;
  EXPECT_EQ(Cache::kBytesPerPage, 1u);
  // Pages homed elsewhere have no entry here, but still answer as empty.
  const DirEntry& d = c.engine(0).directory().entry(c.page_homed_on(3));
  EXPECT_EQ(d.owner, kNoNode);
  EXPECT_TRUE(d.sharers.none());
  // What a 64 TiB guest costs each node of 8 (16 GiB of cache state plus
  // a 16-byte entry per homed page): printed for docs/dsm.md.
  EXPECT_EQ(sizeof(DirEntry), 16u);
  const double pages_64t = 64.0 * (1ull << 40) / kPageSize, gib = 1ull << 30;
  const double before = pages_64t * (24 + 2) / gib;  // a 24-byte entry for every page, 2 bytes of cache
  const double after = pages_64t * (Cache::kBytesPerPage + sizeof(DirEntry) / 8.0) / gib;
  std::printf("64 TiB guest, 8 nodes: %.0f GiB a node before, %.0f GiB after (DirEntry %zu bytes)\n", before,
              after, sizeof(DirEntry));
}

TEST(Bounded, HomedRunsFollowTheHomeMapAndGiveGapsToNodeZero) {
  // Region: pages [0, 100) at gpa 0.  Ranges: [10, 20) node 1, [20, 30) node 1, [50, 60) node 2.
  const uint64_t P = kPageSize;
  PageSpace space({{"ram", 0, 100}}, HomeMap({{10 * P, 20 * P, 1}, {50 * P, 60 * P, 2}, {20 * P, 30 * P, 1}}, 3));
  using Runs = std::vector<std::pair<uint64_t, uint64_t>>;
  EXPECT_EQ(space.homed_runs(0, 0), (Runs{{0, 10}, {30, 50}, {60, 100}}));
  EXPECT_EQ(space.homed_runs(0, 1), (Runs{{10, 30}}));
  EXPECT_EQ(space.homed_runs(0, 2), (Runs{{50, 60}}));
  EXPECT_EQ(space.pages_homed_on(0), 70u);
  for (uint64_t i = 0; i < 100; ++i) {
    const NodeId h = space.home(PageKey(0, i));
    bool found = false;
    for (const auto& [a, b] : space.homed_runs(0, h)) found |= a <= i && i < b;
    EXPECT_TRUE(found) << "page " << i;
  }
  // A region starting inside a range.
  PageSpace inner({{"hi", 55 * P, 10}}, HomeMap({{50 * P, 60 * P, 2}}, 3));
  EXPECT_EQ(inner.homed_runs(0, 2), (Runs{{0, 5}}));
  EXPECT_EQ(inner.homed_runs(0, 0), (Runs{{5, 10}}));
}

}  // namespace
}  // namespace aggvm::dsm::testing
