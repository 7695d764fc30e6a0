#include "node_daemon.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "cluster_spec.h"
#include "error.h"
#include "qemu_argv.h"
#include "transport/auth.h"
#include "worker_process.h"

namespace aggvm::libvirt {
namespace {

std::string peer_name(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(ss).sin_addr, buf, sizeof buf);
  else if (ss.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr, buf, sizeof buf);
  return buf;
}

bool safe_name(const std::string& s) {
  if (s.empty() || s.size() > 200 || s.front() == '.') return false;
  for (char c : s)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  return true;
}

}  // namespace

NodeDaemon::NodeDaemon(DaemonConfig config)
    : config_(std::move(config)),
      key_(load_cluster_key(config_.secret_file)),
      listener_(listen_on(config_.listen_address, config_.port)),
      stop_event_(::eventfd(0, EFD_CLOEXEC)) {
  if (!stop_event_) fail_errno("eventfd");
  if (::access(config_.qemu.c_str(), X_OK) != 0) fail_errno(fmt::format("qemu {}", config_.qemu));
  if (::access(config_.log_dir.c_str(), W_OK) != 0) fail_errno(fmt::format("log-dir {}", config_.log_dir));
}

NodeDaemon::~NodeDaemon() {
  const uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(stop_event_.get(), &one, sizeof one);
  for (auto& [id, t] : threads_)
    if (t.joinable()) t.join();
}

void NodeDaemon::serve(int stop_fd) {
  spdlog::info("aggvm-noded listening on {} port {} (QEMU {}, logs in {})", config_.listen_address, config_.port,
               config_.qemu, config_.log_dir);
  while (true) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
    if (::poll(fds, 2, 1000) < 0 && errno != EINTR) fail_errno("poll");
    {
      std::lock_guard lock(mu_);
      for (uint64_t id : finished_) {
        threads_[id].join();
        threads_.erase(id);
      }
      finished_.clear();
    }
    if (fds[1].revents) break;
    if (!(fds[0].revents & POLLIN)) continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    Fd fd(::accept4(listener_.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC));
    if (!fd) continue;
    const std::string peer = peer_name(ss);
    if (sessions_.load() >= config_.max_connections) {
      spdlog::warn("{}: refused, {} connections already open", peer, config_.max_connections);
      continue;
    }
    sessions_++;
    std::lock_guard lock(mu_);
    const uint64_t id = next_session_++;
    threads_[id] = std::thread([this, id, peer, f = std::move(fd)]() mutable {
      session(std::move(f), peer);
      sessions_--;
      std::lock_guard l(mu_);
      finished_.insert(id);
    });
  }
  spdlog::info("aggvm-noded stopping: ending its workers");
  const uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(stop_event_.get(), &one, sizeof one);
  for (auto& [id, t] : threads_) t.join();
  threads_.clear();
}

void NodeDaemon::session(Fd fd, std::string peer) {
  Channel channel(std::move(fd), Channel::Side::kDaemon);
  try {
    channel.authenticate(*key_, Clock::now() + config_.handshake_timeout);
  } catch (const DriverError& e) {
    spdlog::warn("{}: refused: {}", peer, e.what());
    return;
  }
  try {
    run_worker(channel, peer);
  } catch (const std::exception& e) {
    spdlog::error("{}: {}", peer, e.what());
    try {
      noded::DaemonMessage refusal;
      refusal.mutable_refusal()->set_reason(e.what());
      channel.send(refusal);
    } catch (const DriverError&) {
      // The head has gone: nothing to tell.
    }
  }
}

void NodeDaemon::run_worker(Channel& channel, const std::string& peer) {
  auto request = channel.receive_head(Clock::now() + config_.handshake_timeout);
  if (!request) return;  // a probe of the secret, or the head gave up
  if (!request->has_start()) fail("expected StartWorker");
  const auto& start = request->start();
  if (!safe_name(start.domain())) fail("domain name '{}' is not a plain name", start.domain());
  auto spec = parse_cluster_spec(start.domain_xml());
  if (!spec) fail("domain {}: its XML has no <aggvm:cluster> metadata", start.domain());
  if (spec->domain != start.domain()) fail("domain {}: the XML names domain '{}'", start.domain(), spec->domain);
  const uint32_t node = start.node();
  if (node == 0 || node >= spec->hosts.size())
    fail("domain {}: node {} is not a worker of its {} hosts", start.domain(), node, spec->hosts.size());
  if (spec->hosts[node].address != config_.listen_address)
    fail("domain {}: node {} is at {} in the domain XML, but this host's aggvm-noded listens on {}",
         start.domain(), node, spec->hosts[node].address, config_.listen_address);
  std::vector<std::string> head_argv(start.head_argv().begin(), start.head_argv().end());
  const auto argv = worker_command(head_argv, config_.qemu, *spec, static_cast<uint16_t>(node),
                                   config_.secret_file);
  const auto key = std::make_pair(start.domain(), node);
  {
    std::lock_guard lock(mu_);
    if (!running_.insert(key).second)
      fail("domain {} node {} already runs on this host", start.domain(), node);
  }
  struct Release {
    NodeDaemon* d;
    std::pair<std::string, uint32_t> k;
    ~Release() {
      std::lock_guard lock(d->mu_);
      d->running_.erase(k);
    }
  } release{this, key};

  const std::string log_file = fmt::format("{}/{}-node{}.log", config_.log_dir, start.domain(), node);
  WorkerProcess worker(argv, log_file);
  spdlog::info("domain {} node {}: started pid {} for head {} (log {})", start.domain(), node, worker.pid(), peer,
               log_file);
  noded::DaemonMessage started;
  started.mutable_started()->set_pid(static_cast<uint32_t>(worker.pid()));
  started.mutable_started()->set_log_file(log_file);
  channel.send(started);

  std::string ended_by;
  while (worker.running()) {
    pollfd fds[3] = {{worker.exit_fd(), POLLIN, 0}, {channel.fd(), POLLIN, 0}, {stop_event_.get(), POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      fail_errno("poll");
    }
    if (fds[0].revents) break;
    if (fds[1].revents) {
      char byte;
      const ssize_t n = ::recv(channel.fd(), &byte, 1, MSG_DONTWAIT);
      ended_by = n == 0 ? "the head closed its lease (node 0 ended)"
                        : "the head sent unexpected data or the connection failed";
    } else if (fds[2].revents) {
      ended_by = "aggvm-noded is stopping";
    } else {
      continue;
    }
    spdlog::info("domain {} node {}: stopping pid {}: {}", start.domain(), node, worker.pid(), ended_by);
    worker.terminate(config_.stop_timeout);
  }
  const ExitStatus st = worker.reap();
  spdlog::info("domain {} node {}: pid {} ended, {}", start.domain(), node, worker.pid(), st.describe());
  if (!ended_by.empty()) return;
  noded::DaemonMessage exited;
  exited.mutable_exited()->set_exit_status(st.exit_status);
  exited.mutable_exited()->set_signal(st.signal);
  exited.mutable_exited()->set_stderr_tail(worker.output_tail(2048));
  try {
    channel.send(exited);
  } catch (const DriverError&) {
    // The head has gone; the log has it.
  }
}

}  // namespace aggvm::libvirt
