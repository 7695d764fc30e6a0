// A cluster of protocol engines joined by a model network whose messages
// can be delivered in any order, and model memory that checks every copy.
// Used by the unit tests: no userfaultfd, no sockets.
#pragma once

#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "protocol/engine.h"

namespace aggvm::dsm::testing {

struct InFlight {
  Message msg;
  std::vector<std::byte> payload;
};

class ModelNode;

class ModelNetwork {
 public:
  std::vector<InFlight> in_flight;
  uint64_t page_bytes_sent = 0;
  uint64_t sent = 0;  // messages, of every type
};

// One node's memory as the engine sees it through Env.
class ModelNode : public Env {
 public:
  struct Page {
    bool mapped = false;
    bool writable = false;
    std::array<std::byte, kPageSize> data{};
  };

  ModelNode(NodeId id, ModelNetwork& net) : id_(id), net_(net) {}

  void send(const Message& m) override {
    // A message that lets another node write must leave this node's copy
    // dropped first: the drop is where TCG drops the code translated from
    // the page (Node::drop -> on_page_change), so old code cannot run once
    // the writer may write.
    const bool gives_up = m.type == MsgType::kInvAck || m.type == MsgType::kEvict ||
                          m.type == MsgType::kWriteback ||
                          (m.type == MsgType::kFetchResp && !m.has(kFlagRetained));
    if (gives_up && pages_[m.page.raw()].mapped)
      throw std::logic_error("node " + std::to_string(id_) + " sent " + std::string(to_string(m.type)) +
                             " while it still maps the page");
    InFlight f{m, {m.payload.begin(), m.payload.end()}};
    if (m.has(kFlagData)) net_.page_bytes_sent += kPageSize;
    ++net_.sent;
    net_.in_flight.push_back(std::move(f));
  }
  void install(PageKey p, std::span<const std::byte> data, bool writable) override {
    Page& pg = pages_[p.raw()];
    if (pg.mapped) throw std::logic_error("install over a mapped page");
    pg.mapped = true;
    pg.writable = writable;
    if (data.empty())
      pg.data.fill(std::byte{0});
    else
      std::memcpy(pg.data.data(), data.data(), kPageSize);
    ++wakes;
  }
  void set_writable(PageKey p) override {
    Page& pg = pages_.at(p.raw());
    if (!pg.mapped) throw std::logic_error("set_writable on an unmapped page");
    pg.writable = true;
    ++wakes;
  }
  void write_protect(PageKey p) override { pages_.at(p.raw()).writable = false; }
  void read(PageKey p, PageBuffer out) override {
    const Page& pg = pages_.at(p.raw());
    if (!pg.mapped) throw std::logic_error("read of an unmapped page");
    std::memcpy(out.data(), pg.data.data(), kPageSize);
  }
  void drop(PageKey p) override {
    Page& pg = pages_[p.raw()];
    pg.mapped = false;
    pg.writable = false;
    pg.data.fill(std::byte{0xee});  // poison: a stale read would show
  }
  void wake(PageKey) override { ++wakes; }
  void resolved(PageKey, const Waiter& w, NodeId, uint64_t) override {
    ++resolved_count;
    blocked.erase(w.tid);
  }
  void rejected(NodeId from, std::string_view why) override {
    rejections.push_back(std::to_string(from) + ": " + std::string(why));
  }

  Page& page(PageKey p) { return pages_[p.raw()]; }
  NodeId id() const { return id_; }

  uint64_t wakes = 0;
  uint64_t resolved_count = 0;
  std::set<int> blocked;  // threads waiting in a fault: a real thread can wait on one page only
  std::vector<std::string> rejections;

 private:
  NodeId id_;
  ModelNetwork& net_;
  std::map<uint64_t, Page> pages_;
};

class ModelCluster {
 public:
  ModelCluster(uint16_t n, uint64_t pages_per_node, uint64_t cap_pages = 0)
      : space_(make_space(n, pages_per_node)) {
    for (NodeId i = 0; i < n; ++i) {
      nodes_.push_back(std::make_unique<ModelNode>(i, net_));
      EngineOptions o{.self = i, .n_nodes = n, .resident_cap_pages = cap_pages,
                      .timeout_ns = 1'000'000'000};
      engines_.push_back(std::make_unique<Engine>(o, space_, *nodes_.back()));
    }
  }

  static PageSpace make_space(uint16_t n, uint64_t pages_per_node) {
    std::vector<HomeRange> ranges;
    for (NodeId i = 0; i < n; ++i)
      ranges.push_back({i * pages_per_node * kPageSize, (i + 1) * pages_per_node * kPageSize, i});
    return PageSpace({{"ram", 0, n * pages_per_node}}, HomeMap(ranges, n));
  }

  // Page index homed on node.
  PageKey page_homed_on(NodeId node, uint64_t i = 0) const {
    return PageKey(0, node * pages_per_node() + i);
  }
  uint64_t pages_per_node() const { return space_.regions()[0].pages / nodes_.size(); }

  Engine& engine(NodeId i) { return *engines_[i]; }
  ModelNode& node(NodeId i) { return *nodes_[i]; }
  ModelNetwork& net() { return net_; }
  size_t size() const { return nodes_.size(); }

  // Delivers message k of those in flight.
  void deliver(size_t k) {
    InFlight f = std::move(net_.in_flight[k]);
    net_.in_flight.erase(net_.in_flight.begin() + static_cast<std::ptrdiff_t>(k));
    f.msg.payload = f.payload;
    engines_[f.msg.dst]->on_message(f.msg, ++now_);
  }
  void deliver_all_fifo() {
    while (!net_.in_flight.empty()) deliver(0);
  }
  // Index of the first in-flight message of a type, or -1.
  int find(MsgType t, NodeId dst) const {
    for (size_t i = 0; i < net_.in_flight.size(); ++i)
      if (net_.in_flight[i].msg.type == t && net_.in_flight[i].msg.dst == dst)
        return static_cast<int>(i);
    return -1;
  }
  void fault(NodeId n, PageKey p, Access a, int tid = 1) {
    nodes_[n]->blocked.insert(tid);
    engines_[n]->on_fault(p, a, tid, ++now_);
  }
  uint64_t now() const { return now_; }

  // Reads a page through node n as a thread would: faults until mapped.
  uint8_t read_byte(NodeId n, PageKey p) {
    for (int i = 0; i < 4 && !node(n).page(p).mapped; ++i) {
      fault(n, p, Access::kRead);
      deliver_all_fifo();
    }
    if (!node(n).page(p).mapped) throw std::runtime_error("read never resolved");
    return static_cast<uint8_t>(node(n).page(p).data[0]);
  }
  void write_byte(NodeId n, PageKey p, uint8_t v) {
    for (int i = 0; i < 4 && !node(n).page(p).writable; ++i) {
      fault(n, p, Access::kWrite);
      deliver_all_fifo();
    }
    if (!node(n).page(p).writable) throw std::runtime_error("write never resolved");
    node(n).page(p).data[0] = std::byte{v};
  }

 private:
  ModelNetwork net_;
  PageSpace space_;
  std::vector<std::unique_ptr<ModelNode>> nodes_;
  std::vector<std::unique_ptr<Engine>> engines_;
  uint64_t now_ = 0;
};

// One step of a random run: a random thread of a random node writes a
// random page of region 0 (recording the value in truth) or faults to,
// or reads it (faulting if it is not mapped); a thread already blocked
// does nothing.
inline void random_access(ModelCluster& c, std::mt19937_64& rng, std::vector<uint8_t>& truth, uint8_t& next) {
  const NodeId k = rng() % c.size();
  const PageKey p(0, rng() % truth.size());
  auto& pg = c.node(k).page(p);
  const int tid = 1 + int(rng() % 4);
  if (c.node(k).blocked.count(tid)) return;
  if (rng() % 2) {
    if (pg.writable) {
      truth[p.index()] = next;
      pg.data[0] = std::byte{next++};
    } else {
      c.fault(k, p, Access::kWrite, tid);
    }
  } else if (!pg.mapped) {
    c.fault(k, p, Access::kRead, tid);
  }
}

// At every step of a random run: at most one writable copy of each page
// 0..truth.size() of region 0, no shared copy beside it, and every mapped
// copy holding the last value written (truth).  Fails the test naming seed.
inline void expect_coherent(ModelCluster& c, const std::vector<uint8_t>& truth, uint64_t seed) {
  for (uint64_t i = 0; i < truth.size(); ++i) {
    const PageKey p(0, i);
    int writers = 0, readers = 0;
    for (NodeId k = 0; k < c.size(); ++k) {
      auto& pg = c.node(k).page(p);
      if (!pg.mapped) continue;
      pg.writable ? ++writers : ++readers;
      ASSERT_EQ(static_cast<uint8_t>(pg.data[0]), truth[i])
          << "seed " << seed << " node " << k << " page " << i << " holds a stale copy";
    }
    ASSERT_LE(writers, 1) << "seed " << seed << " page " << i;
    ASSERT_TRUE(writers == 0 || readers == 0) << "seed " << seed << " page " << i;
  }
}

}  // namespace aggvm::dsm::testing
