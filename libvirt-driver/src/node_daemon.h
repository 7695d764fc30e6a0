// aggvm-noded: runs, on a worker host, the nodes of aggregated domains that
// a head host asks for, after it proves it holds the cluster secret.
//
// It listens on the one address its configuration names.  Each connection
// is one worker: authenticate (channel.h), receive StartWorker, derive the
// worker's command line from the head's (qemu_argv.h, which refuses what
// it does not know), start it (worker_process.h), report Started, then
// supervise: the worker's exit is reported to the head and logged; the
// connection closing (the head's node 0 ended: virsh destroy, a crash)
// stops the worker.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "channel.h"

namespace aggvm::libvirt {

struct DaemonConfig {
  std::string listen_address;
  uint16_t port = 7150;
  std::string secret_file = "/etc/aggvm/cluster.key";
  std::string qemu = "/usr/libexec/aggvm/qemu-system-x86_64";
  std::string log_dir = "/var/log/aggvm";
  std::chrono::milliseconds handshake_timeout{5000};
  std::chrono::milliseconds stop_timeout{5000};
  unsigned max_connections = 64;
};

class NodeDaemon {
 public:
  // Loads the secret and binds the address; throws with what is wrong.
  explicit NodeDaemon(DaemonConfig config);
  ~NodeDaemon();

  // Serves until stop_fd (an eventfd or a signalfd) becomes readable, then
  // stops every worker and returns.
  void serve(int stop_fd);

 private:
  void session(Fd fd, std::string peer);
  void run_worker(Channel& channel, const std::string& peer);

  DaemonConfig config_;
  std::unique_ptr<dsm::ClusterKey> key_;
  Fd listener_;
  Fd stop_event_;  // eventfd: tells the sessions to stop their workers

  std::mutex mu_;
  std::set<std::pair<std::string, uint32_t>> running_;  // (domain, node)
  std::atomic<unsigned> sessions_{0};
  std::map<uint64_t, std::thread> threads_;
  std::set<uint64_t> finished_;
  uint64_t next_session_ = 0;
};

}  // namespace aggvm::libvirt
