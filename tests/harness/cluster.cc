// Cluster: the namespaces, the bridge and the veths, and their teardown.
//
//   switch netns (prefix-sw):  br0 <- p0, p1, ... p<N-1>
//   host netns (prefix-h<i>):  lo, eth0 = 10.199.<k>.<i+1>/24 (peer of p<i>)
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <iostream>
#include <stdexcept>

#include "harness.h"
#include "internal/command.h"
#include "internal/host_context.h"
#include "internal/netns.h"
#include "internal/reaper.h"

namespace aggvm::harness {
namespace {

constexpr int kMaxHosts = 16;
constexpr size_t kMaxTagLength = 12;
constexpr auto kEndTimeout = std::chrono::milliseconds(3000);

// Numbers the clusters of this process: part of every name, so that two
// clusters never share a namespace.  The only process-wide state here, and
// it is write-once-per-cluster.
unsigned next_cluster_number() {
  static std::atomic<unsigned> counter{0};
  return counter.fetch_add(1);
}

void check_options(const ClusterOptions& options) {
  if (options.hosts < 1 || options.hosts > kMaxHosts)
    throw std::runtime_error("aggvm-harness: hosts must be 1.." + std::to_string(kMaxHosts) + ", not " +
                             std::to_string(options.hosts));
  const bool tag_ok = !options.name.empty() && options.name.size() <= kMaxTagLength &&
                      std::all_of(options.name.begin(), options.name.end(), [](char c) {
                        return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
                      });
  if (!tag_ok)
    throw std::runtime_error("aggvm-harness: cluster name '" + options.name + "' must be 1.." +
                             std::to_string(kMaxTagLength) + " characters of [A-Za-z0-9_]");
}

void ip(const std::vector<std::string>& args) {
  std::vector<std::string> argv{internal::tool("ip")};
  argv.insert(argv.end(), args.begin(), args.end());
  internal::run_checked(argv);
}

}  // namespace

Cluster::Cluster(const ClusterOptions& options) : options_(options) {
  check_options(options_);
  if (auto reason = unavailable_reason()) throw std::runtime_error("aggvm-harness: " + *reason);
  const unsigned number = next_cluster_number();
  const pid_t pid = ::getpid();
  prefix_ = std::string(internal::kNetnsPrefix) + std::to_string(pid) + "-" + std::to_string(number) + "-" +
            options_.name;
  // Each cluster has its own bridge, so equal subnets could not meet; a
  // per-cluster subnet just keeps logs and captures unambiguous.
  subnet_ = "10.199." + std::to_string((static_cast<unsigned>(pid) * 17 + number) % 254 + 1) + ".";
  switch_netns_ = prefix_ + "-sw";
  log_dir_ = options_.log_dir.empty() ? std::filesystem::path("/tmp/aggvm-harness-" + std::to_string(pid) + "-" +
                                                              options_.name + "-" + std::to_string(number))
                                      : options_.log_dir;
  std::error_code ec;
  std::filesystem::create_directories(log_dir_, ec);
  if (ec) throw std::runtime_error("aggvm-harness: cannot create log dir " + log_dir_.string() + ": " + ec.message());

  internal::remove_stale_netns();
  reaper_ = std::make_unique<internal::Reaper>();
  try {
    build();
  } catch (const std::exception& e) {
    teardown();
    throw std::runtime_error("aggvm-harness: setting up cluster " + prefix_ + ": " + e.what());
  }
}

Cluster::~Cluster() { teardown(); }

void Cluster::progress(const std::string& line) const {
  if (options_.on_progress) options_.on_progress(line);
}

void Cluster::build() {
  // Every namespace is announced to the reaper before it exists, so that
  // dying half-way still leaves nothing behind.
  reaper_->watch_netns(switch_netns_);
  created_netns_.push_back(switch_netns_);
  ip({"netns", "add", switch_netns_});
  ip({"-n", switch_netns_, "link", "set", "lo", "up"});
  ip({"-n", switch_netns_, "link", "add", "br0", "type", "bridge"});
  ip({"-n", switch_netns_, "link", "set", "br0", "up"});
  progress("switch: netns " + switch_netns_ + ", bridge br0");

  for (int i = 0; i < options_.hosts; ++i) {
    auto ctx = std::make_unique<internal::HostContext>();
    ctx->index = i;
    ctx->netns = prefix_ + "-h" + std::to_string(i);
    ctx->address = subnet_ + std::to_string(i + 1);
    ctx->log_dir = log_dir_;
    ctx->reaper = reaper_.get();
    const std::string port = "p" + std::to_string(i);

    reaper_->watch_netns(ctx->netns);
    created_netns_.push_back(ctx->netns);
    ip({"netns", "add", ctx->netns});
    ip({"-n", ctx->netns, "link", "set", "lo", "up"});
    // Both ends are created inside our namespaces: nothing ever touches the
    // root namespace.
    ip({"-n", ctx->netns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", switch_netns_});
    ip({"-n", ctx->netns, "addr", "add", ctx->address + "/24", "dev", "eth0"});
    ip({"-n", ctx->netns, "link", "set", "eth0", "up"});
    ip({"-n", switch_netns_, "link", "set", port, "master", "br0", "up"});
    progress("host " + std::to_string(i) + ": netns " + ctx->netns + ", eth0 " + ctx->address + "/24");
    hosts_.push_back(std::unique_ptr<Host>(new Host(std::move(ctx))));
  }
}

Host& Cluster::host(int i) {
  if (i < 0 || i >= size())
    throw std::out_of_range("aggvm-harness: host " + std::to_string(i) + " of " + std::to_string(size()));
  return *hosts_[static_cast<size_t>(i)];
}

int Cluster::size() const { return static_cast<int>(hosts_.size()); }
const std::filesystem::path& Cluster::log_dir() const { return log_dir_; }
const std::string& Cluster::switch_netns() const { return switch_netns_; }
int Cluster::reaper_pid() const { return reaper_ ? reaper_->pid() : -1; }

void Cluster::teardown() {
  if (torn_down_) return;
  torn_down_ = true;
  bool clean = true;
  try {
    for (auto& host : hosts_) host->end_processes(kEndTimeout);
    // Descendants that left their group, or anything else that entered.
    for (const auto& name : created_netns_) {
      if (int left = internal::kill_netns_processes(name, kEndTimeout)) {
        std::cerr << "aggvm-harness: " << left << " processes survive in " << name << "\n";
        clean = false;
      }
      if (auto error = internal::delete_netns(name)) {
        std::cerr << "aggvm-harness: " << *error << "\n";
        clean = false;
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "aggvm-harness: teardown of " << prefix_ << ": " << e.what() << "\n";
    clean = false;
  }
  // If anything went wrong, the reaper makes a second attempt.
  if (reaper_) reaper_->release(clean);
}

}  // namespace aggvm::harness
