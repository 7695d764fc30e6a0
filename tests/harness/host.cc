#include <fcntl.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <system_error>

#include "harness.h"
#include "internal/command.h"
#include "internal/host_context.h"
#include "internal/netns.h"
#include "internal/spawn.h"

namespace aggvm::harness {
namespace {

// Drops everything but loopback: inet covers IPv4 and IPv6, the arp table
// stops address resolution too.  One nft transaction, passed as one argument.
constexpr const char* kCutRuleset =
    "add table inet aggvm_cut; "
    "add chain inet aggvm_cut input { type filter hook input priority -300; policy drop; }; "
    "add rule inet aggvm_cut input iif lo accept; "
    "add chain inet aggvm_cut output { type filter hook output priority -300; policy drop; }; "
    "add rule inet aggvm_cut output oif lo accept; "
    "add table arp aggvm_cut; "
    "add chain arp aggvm_cut input { type filter hook input priority 0; policy drop; }; "
    "add chain arp aggvm_cut output { type filter hook output priority 0; policy drop; }";
constexpr const char* kRestoreRuleset = "delete table inet aggvm_cut; delete table arp aggvm_cut";

std::string log_name(int host, unsigned n, const std::string& argv0) {
  std::string base = std::filesystem::path(argv0).filename().string();
  for (char& c : base) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  }
  char prefix[32];
  std::snprintf(prefix, sizeof prefix, "h%d-%03u-", host, n);
  return prefix + base.substr(0, 40) + ".log";
}

}  // namespace

Host::Host(std::unique_ptr<internal::HostContext> ctx) : ctx_(std::move(ctx)) {}
Host::~Host() = default;

int Host::index() const { return ctx_->index; }
const std::string& Host::netns() const { return ctx_->netns; }
const std::string& Host::address() const { return ctx_->address; }
bool Host::is_cut_off() const { return ctx_->cut; }

Process Host::spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& extra_env) {
  if (!ctx_->alive) throw std::runtime_error("host " + std::to_string(ctx_->index) + ": cluster torn down");
  if (argv.empty()) throw std::runtime_error("host " + std::to_string(ctx_->index) + ": spawn with empty argv");
  const auto log = ctx_->log_dir / log_name(ctx_->index, ctx_->spawned++, argv[0]);
  internal::Fd log_fd(::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644));
  if (!log_fd.valid()) throw std::system_error(errno, std::generic_category(), "open " + log.string());
  internal::Fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull.valid()) throw std::system_error(errno, std::generic_category(), "open /dev/null");
  internal::Fd netns = internal::open_netns(ctx_->netns);

  internal::SpawnSpec spec;
  spec.argv = argv;
  spec.env = internal::environment_with(extra_env);
  spec.netns_fd = netns.get();
  spec.stdin_fd = devnull.get();
  spec.stdout_fd = log_fd.get();
  spec.stderr_fd = log_fd.get();
  spec.new_process_group = true;
  spec.die_with_parent = true;
  pid_t pid;
  try {
    pid = internal::spawn_child(spec);
  } catch (const std::exception& e) {
    throw std::runtime_error("host " + std::to_string(ctx_->index) + " (" + ctx_->netns + "): " + e.what());
  }
  auto state = std::make_shared<internal::ProcState>(pid, log);
  ctx_->processes.push_back(state);
  ctx_->reaper->watch_process_group(pid);
  return Process(std::move(state));
}

void Host::cut_off() {
  if (ctx_->cut) return;
  internal::run_checked({internal::tool("nft"), kCutRuleset}, {.netns = ctx_->netns});
  ctx_->cut = true;
}

void Host::restore() {
  if (!ctx_->cut) return;
  internal::run_checked({internal::tool("nft"), kRestoreRuleset}, {.netns = ctx_->netns});
  ctx_->cut = false;
}

void Host::kill_all(int sig) {
  for (const auto& process : ctx_->processes) process->signal(sig, true);
}

void Host::end_processes(std::chrono::milliseconds timeout) {
  ctx_->alive = false;
  kill_all(SIGKILL);
  for (const auto& process : ctx_->processes) {
    try {
      if (!process->reap(timeout))
        std::cerr << "aggvm-harness: host " << ctx_->index << ": pid " << process->pid << " survived SIGKILL\n";
    } catch (const std::exception& e) {
      std::cerr << "aggvm-harness: host " << ctx_->index << ": reaping pid " << process->pid << ": " << e.what()
                << "\n";
    }
  }
}

}  // namespace aggvm::harness
