// aggvm-qemu: the <emulator> of an aggregated libvirt domain.
//
// libvirt runs it as it would run QEMU.  Runs that are not a domain
// (capability probes: -machine none, -version) and domains without aggvm
// metadata go straight to the patched QEMU, unchanged.  For an aggregated
// domain it reads the domain's XML from libvirt's state directory (libvirt
// writes it there before it lets the emulator run, and the emulator must
// not call back into libvirt), starts one worker on each other host
// through that host's aggvm-noded, then becomes node 0 (exec, so libvirt
// keeps the pid, the monitor and the console it set up).  The connections
// to the daemons are inherited by node 0 and are the workers' leases: when
// node 0 ends, however it ends, every worker is stopped.
//
// Everything it prints goes to the domain's log, which libvirt quotes when
// `virsh start` fails, so each error names the host and the cause.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "channel.h"
#include "cluster_spec.h"
#include "error.h"
#include "qemu_argv.h"
#include "transport/auth.h"

#ifndef AGGVM_SYSCONFDIR
#define AGGVM_SYSCONFDIR "/etc"
#endif
#ifndef AGGVM_DEFAULT_QEMU
#define AGGVM_DEFAULT_QEMU "/usr/libexec/aggvm/qemu-system-x86_64"
#endif

namespace aggvm::libvirt {
namespace {

struct WrapperConfig {
  std::string qemu = AGGVM_DEFAULT_QEMU;
  std::string state_dir = "/run/libvirt/qemu";
  unsigned connect_timeout_ms = 5000;
  unsigned start_check_ms = 300;
};

// /etc/aggvm/aggvm.conf: `key = value` lines, '#' comments.
WrapperConfig load_config(const std::string& path) {
  WrapperConfig c;
  std::ifstream in(path);
  if (!in) return c;  // defaults
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    line = line.substr(0, line.find('#'));
    const size_t eq = line.find('=');
    auto trim = [](std::string s) {
      s.erase(0, s.find_first_not_of(" \t\r"));
      s.erase(s.find_last_not_of(" \t\r") + 1);
      return s;
    };
    if (trim(line).empty()) continue;
    if (eq == std::string::npos) fail("{}:{}: expected key = value", path, number);
    const std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    try {
      if (key == "qemu") c.qemu = value;
      else if (key == "libvirt-state-dir") c.state_dir = value;
      else if (key == "connect-timeout-ms") c.connect_timeout_ms = static_cast<unsigned>(std::stoul(value));
      else if (key == "start-check-ms") c.start_check_ms = static_cast<unsigned>(std::stoul(value));
      else fail("{}:{}: unknown key '{}'", path, number, key);
    } catch (const std::logic_error&) {
      fail("{}:{}: '{}' is not a number", path, number, value);
    }
  }
  return c;
}

[[noreturn]] void exec_qemu(const std::string& qemu, std::vector<std::string> argv) {
  argv[0] = qemu;
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  execv(qemu.c_str(), args.data());
  fail_errno(fmt::format("cannot execute QEMU {}", qemu));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail_errno(fmt::format("cannot read {}", path));
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

void say(const std::string& what) { std::cerr << "aggvm: " << what << std::endl; }

struct Worker {
  uint16_t node;
  std::string where;
  Channel channel;
};

Worker start_worker(const ClusterSpec& spec, uint16_t node, const dsm::ClusterKey& key,
                    const std::vector<std::string>& argv, const std::string& xml, const WrapperConfig& cfg) {
  const ClusterHost& host = spec.hosts[node];
  const std::string where = fmt::format("host {} ({} port {})", node, host.address, host.noded_port);
  const auto timeout = std::chrono::milliseconds(cfg.connect_timeout_ms);
  try {
    Channel channel(connect_to(host.address, host.noded_port, timeout), Channel::Side::kHead);
    channel.authenticate(key, Clock::now() + timeout);
    noded::HeadMessage request;
    auto* start = request.mutable_start();
    start->set_domain(spec.domain);
    start->set_node(node);
    for (const auto& a : argv) start->add_head_argv(a);
    start->set_domain_xml(xml);
    channel.send(request);
    auto answer = channel.receive_daemon(Clock::now() + timeout);
    if (!answer) fail("aggvm-noded closed the connection without an answer");
    if (answer->has_refusal()) fail("aggvm-noded refused: {}", answer->refusal().reason());
    if (!answer->has_started()) fail("aggvm-noded answered out of protocol");
    say(fmt::format("node {} started on {} (pid {}, log {}:{})", node, where, answer->started().pid(),
                    host.address, answer->started().log_file()));
    return Worker{node, where, std::move(channel)};
  } catch (const DriverError& e) {
    fail("node {} on {}: {}", node, where, e.what());
  }
}

// A worker that could not even start (a missing kernel file on its host,
// an option its QEMU refuses) ends at once: say so now rather than let
// node 0 wait for it.
void check_workers_alive(std::vector<Worker>& workers, std::chrono::milliseconds window) {
  const auto deadline = Clock::now() + window;
  while (Clock::now() < deadline) {
    std::vector<pollfd> fds;
    for (auto& w : workers) fds.push_back({w.channel.fd(), POLLIN, 0});
    const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          deadline - Clock::now()).count());
    if (::poll(fds.data(), fds.size(), std::max(left, 0)) <= 0) return;
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      auto m = workers[i].channel.receive_daemon(Clock::now() + std::chrono::seconds(1));
      if (m && m->has_exited()) {
        const auto& x = m->exited();
        std::string status = x.signal() ? fmt::format("killed by signal {}", x.signal())
                                        : fmt::format("exit status {}", x.exit_status());
        fail("node {} on {} ended at start ({}):\n{}", workers[i].node, workers[i].where, status,
             x.stderr_tail());
      }
      fail("node {} on {}: aggvm-noded closed the connection", workers[i].node, workers[i].where);
    }
  }
}

constexpr const char* kConfigFile = AGGVM_SYSCONFDIR "/aggvm/aggvm.conf";

int run(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  if (args.size() == 2 && args[1] == "--aggvm-config-path") {  // not a QEMU option: no clash
    std::cout << kConfigFile << std::endl;
    return 0;
  }
  const WrapperConfig cfg = load_config(kConfigFile);
  if (is_probe(args)) exec_qemu(cfg.qemu, args);
  const std::string name = domain_name(args);
  const std::string status_xml = cfg.state_dir + "/" + name + ".xml";
  if (::access(status_xml.c_str(), R_OK) != 0) exec_qemu(cfg.qemu, args);  // not started by libvirt
  const std::string xml = read_file(status_xml);
  std::optional<ClusterSpec> spec;
  try {
    spec = parse_cluster_spec(xml);
  } catch (const DriverError& e) {
    fail("domain {}: aggvm metadata: {}", name, e.what());
  }
  if (!spec) exec_qemu(cfg.qemu, args);  // a plain domain

  say(fmt::format("domain {}: {} hosts, {} NUMA cells, head {}", name, spec->hosts.size(), spec->cells.size(),
                  spec->hosts[0].address));
  auto key = load_cluster_key(spec->secret_file);
  const auto node0 = head_command(args, cfg.qemu, *spec);
  std::vector<Worker> workers;
  for (uint16_t node = 1; node < spec->hosts.size(); ++node)
    workers.push_back(start_worker(*spec, node, *key, args, xml, cfg));
  check_workers_alive(workers, std::chrono::milliseconds(cfg.start_check_ms));
  for (auto& w : workers) {
    // Node 0 inherits the lease.
    const int fd = w.channel.release_fd().release();
    fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) & ~FD_CLOEXEC);
  }
  say(fmt::format("starting node 0 on {}", spec->hosts[0].address));
  exec_qemu(cfg.qemu, node0);
}

}  // namespace
}  // namespace aggvm::libvirt

int main(int argc, char** argv) {
  try {
    return aggvm::libvirt::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "aggvm: error: " << e.what() << std::endl;
    return 1;
  }
}
