// Request/reply calls over a node's service channels.
//
// I/O forwarding needs a synchronous round trip: a vCPU thread on one node
// asks node 0 to carry out a device access and waits for the value.  A call
// is two service messages, a request on kRequestChannel and its reply on
// kReplyChannel, matched by a per-node call id.  Handlers run on the service
// thread and must not block: they hand the request to whoever can serve it,
// which answers later with reply().
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "node/node.h"

namespace aggvm::dsm {

class Calls final {
 public:
  static constexpr uint16_t kRequestChannel = 0xfff0;
  static constexpr uint16_t kReplyChannel = 0xfff1;
  // Channels at or above this are reserved for the library.
  static constexpr uint16_t kFirstReservedChannel = 0xff00;

  using Handler = std::function<void(NodeId from, uint64_t call_id, std::span<const std::byte> request)>;

  // Registers the two channels on node; call before node.start().
  explicit Calls(Node& node);
  Calls(const Calls&) = delete;
  Calls& operator=(const Calls&) = delete;

  void handle(uint16_t channel, Handler handler);
  // The same for the library's own services, on reserved channels.
  void handle_reserved(uint16_t channel, Handler handler);

  // Sends request to node `to` on channel and waits for the reply, which is
  // copied into reply (truncation is an error).  Returns the reply's length.
  // Throws DsmError: ETIMEDOUT, the handler's status, ESHUTDOWN when `to`
  // is leaving, ECANCELED once this node stops, the node's failure, or
  // what cancel_all() gave.  Only the timeout waits: the others end the
  // call as soon as they happen.
  size_t call(NodeId to, uint16_t channel, std::span<const std::byte> request, std::span<std::byte> reply,
              std::chrono::milliseconds timeout);

  // Ends every call in flight now with err (positive errno); later calls
  // proceed as usual.  Returns how many were in flight.
  size_t cancel_all(int err, const std::string& why);

  // Answers call_id from node `to`; status 0 is success, else a positive errno.
  void reply(NodeId to, uint64_t call_id, int status, std::span<const std::byte> data);

 private:
  struct Pending {
    std::condition_variable cv;
    bool done = false;
    int status = 0;
    std::vector<std::byte> data;
    std::string cancelled;  // why it ended without a reply; empty for a reply
  };

  void add_handler(uint16_t channel, Handler handler);
  void on_request(NodeId from, std::span<const std::byte> payload);
  void on_reply(NodeId from, std::span<const std::byte> payload);
  // Ends the pending calls matching pred; mu_ must be held.
  template <typename Pred>
  size_t cancel_locked(int err, const std::string& why, Pred pred);

  Node& node_;
  std::map<uint16_t, Handler> handlers_;  // fixed once the node starts
  std::atomic<uint64_t> next_id_{1};
  std::mutex mu_;
  std::map<uint64_t, std::pair<NodeId, Pending*>> pending_;
  // Set once the node stopped or failed: every later call fails at once.
  int closed_err_ = 0;
  std::string closed_why_;
};

}  // namespace aggvm::dsm
