// aggvmctl: an operator's view of aggregated libvirt domains, through
// libvirt's C API (libvirt-qemu for node 0's monitor), so that nobody types
// QMP JSON.
//
//   aggvmctl [-c URI] status DOMAIN
//   aggvmctl [-c URI] move DOMAIN VCPU NODE
//   aggvmctl [-c URI] evacuate DOMAIN NODE [--to NODE]
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <nlohmann/json.hpp>

#include "error.h"

namespace aggvm::libvirt {
namespace {

using nlohmann::json;

std::string last_libvirt_error() {
  const virError* e = virGetLastError();
  return e && e->message ? e->message : "unknown libvirt error";
}

struct ConnectClose { void operator()(virConnectPtr c) const { virConnectClose(c); } };
struct DomainFree { void operator()(virDomainPtr d) const { virDomainFree(d); } };

class Domain {
 public:
  Domain(const std::string& uri, const std::string& name)
      : conn_(virConnectOpen(uri.empty() ? nullptr : uri.c_str())) {
    if (!conn_) fail("cannot connect to libvirt{}: {}", uri.empty() ? "" : " at " + uri, last_libvirt_error());
    dom_.reset(virDomainLookupByName(conn_.get(), name.c_str()));
    if (!dom_) fail("no domain '{}': {}", name, last_libvirt_error());
    name_ = name;
  }

  // One QMP command on node 0; returns its "return" or throws its error.
  json qmp(const std::string& command, const json& arguments = json::object()) {
    json request = {{"execute", command}};
    if (!arguments.empty()) request["arguments"] = arguments;
    char* reply = nullptr;
    if (virDomainQemuMonitorCommand(dom_.get(), request.dump().c_str(), &reply, 0) < 0)
      fail("{}: {}", command, last_libvirt_error());
    json r = json::parse(reply, nullptr, false);
    free(reply);
    if (r.is_discarded()) fail("{}: the monitor's answer does not parse", command);
    if (r.contains("error"))
      fail("{}: {}", command, r["error"].value("desc", r["error"].dump()));
    return r.value("return", json::object());
  }

  std::string state() {
    int state = 0, reason = 0;
    if (virDomainGetState(dom_.get(), &state, &reason, 0) < 0) fail("{}", last_libvirt_error());
    static const std::map<int, const char*> names = {
        {VIR_DOMAIN_RUNNING, "running"}, {VIR_DOMAIN_PAUSED, "paused"}, {VIR_DOMAIN_SHUTOFF, "shut off"},
        {VIR_DOMAIN_CRASHED, "crashed"}, {VIR_DOMAIN_SHUTDOWN, "shutting down"}, {VIR_DOMAIN_BLOCKED, "blocked"}};
    auto it = names.find(state);
    return it == names.end() ? "unknown" : it->second;
  }

  const std::string& name() const { return name_; }

 private:
  std::unique_ptr<virConnect, ConnectClose> conn_;
  std::unique_ptr<virDomain, DomainFree> dom_;
  std::string name_;
};

std::string mib(uint64_t pages) { return fmt::format("{:.1f} MiB", pages * 4096.0 / (1 << 20)); }

// Remote faults per second of each node between two x-query-aggvm samples.
// Another node's counters are as of its last heartbeat (stats-age-ms ago),
// so its rate is taken between the two heartbeats' times; none when both
// samples carry the same heartbeat.
struct Sample {
  json info;
  std::chrono::steady_clock::time_point at;
};

std::map<int, double> fault_rates(const Sample& a, const Sample& b) {
  auto figures = [](const Sample& s) {
    std::map<int, std::pair<uint64_t, double>> out;  // faults, seconds (heartbeat's time)
    const double at = std::chrono::duration<double>(s.at.time_since_epoch()).count();
    for (const auto& n : s.info["nodes"])
      if (n.contains("read-faults"))
        out[n.value("id", 0)] = {n.value("read-faults", 0ull) + n.value("write-faults", 0ull),
                                 at - n.value("stats-age-ms", 0ull) / 1000.0};
    return out;
  };
  const auto before = figures(a), after = figures(b);
  std::map<int, double> rates;
  for (const auto& [id, now] : after) {
    auto it = before.find(id);
    if (it == before.end() || now.second - it->second.second < 0.1) continue;
    rates[id] = double(now.first - it->second.first) / (now.second - it->second.second);
  }
  return rates;
}

int status(Domain& d, double interval_s) {
  const Sample first{d.qmp("x-query-aggvm"), std::chrono::steady_clock::now()};
  std::this_thread::sleep_for(std::chrono::duration<double>(interval_s));
  const Sample second{d.qmp("x-query-aggvm"), std::chrono::steady_clock::now()};
  const json& b = second.info;
  const auto rates = fault_rates(first, second);
  std::map<int, std::vector<int>> vcpus;
  for (const auto& v : b["vcpus"]) vcpus[v.value("node", 0)].push_back(v.value("vcpu", 0));
  fmt::print("domain {}: {}, accelerator {}, cluster {}\n", d.name(), d.state(), b.value("accelerator", "?"),
             b.value("cluster", "?"));
  fmt::print("{:<5} {:<24} {:<11} {:<14} {:>12} {:>10}\n", "node", "address", "state", "vCPUs", "resident",
             "faults/s");
  for (const auto& n : b["nodes"]) {
    const int id = n.value("id", 0);
    std::string list;
    for (int v : vcpus[id]) list += (list.empty() ? "" : ",") + std::to_string(v);
    const auto rate = rates.find(id);
    fmt::print("{:<5} {:<24} {:<11} {:<14} {:>12} {:>10}\n", id, n.value("address", "?"), n.value("state", "?"),
               list.empty() ? "-" : list,
               n.contains("resident-pages") ? mib(n.value("resident-pages", 0ull)) : "-",
               rate != rates.end() ? fmt::format("{:.0f}", rate->second) : "-");
  }
  const json& dsm = b["dsm"];
  fmt::print("node 0's memory service: {} remote faults so far ({} read, {} write), {:.0f} us average; "
             "sent {}, received {}\n",
             dsm.value("read-faults", 0ull) + dsm.value("write-faults", 0ull), dsm.value("read-faults", 0ull),
             dsm.value("write-faults", 0ull), static_cast<double>(dsm.value("fault-latency-avg-us", 0ull)),
             mib(dsm.value("bytes-sent", 0ull) / 4096), mib(dsm.value("bytes-received", 0ull) / 4096));
  if (b.contains("evacuation")) {
    const auto& e = b["evacuation"];
    fmt::print("last evacuation: node {} {}, {}/{} vCPUs, {}/{} pages\n", e.value("node", 0),
               e.value("phase", "?"), e.value("vcpus-moved", 0), e.value("vcpus-total", 0),
               e.value("pages-moved", 0ull), e.value("pages-total", 0ull));
  }
  return 0;
}

void progress_bar(const std::string& label, double fraction, const std::string& detail) {
  const int width = 30;
  const int filled = static_cast<int>(fraction * width + 0.5);
  fmt::print(stderr, "\r{} [{}{}] {:3.0f}% {}   ", label, std::string(filled, '#'), std::string(width - filled, '.'),
             fraction * 100, detail);
  std::fflush(stderr);
}

int move(Domain& d, unsigned vcpu, unsigned node, double timeout_s) {
  d.qmp("x-aggvm-migrate-vcpu", {{"cpu-index", vcpu}, {"node", node}});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    const json info = d.qmp("x-query-aggvm");
    for (const auto& v : info["vcpus"])
      if (v.value("vcpu", -1) == static_cast<int>(vcpu) && !v.value("moving", false)) {
        if (v.value("node", -1) == static_cast<int>(node)) {
          fmt::print("vCPU {} now runs on node {}\n", vcpu, node);
          return 0;
        }
        fail("vCPU {} stayed on node {}: the move failed (see the AGGVM_VCPU_MIGRATED event)", vcpu,
             v.value("node", -1));
      }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  fail("vCPU {} still moving after {} s", vcpu, timeout_s);
}

int evacuate(Domain& d, unsigned node, int to, double timeout_s) {
  json args = {{"node", node}};
  if (to >= 0) args["to"] = to;
  d.qmp("x-aggvm-evacuate-node", args);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    const json info = d.qmp("x-query-aggvm");
    if (info.contains("evacuation") && info["evacuation"].value("node", -1) == static_cast<int>(node)) {
      const auto& e = info["evacuation"];
      const std::string phase = e.value("phase", "?");
      const bool past_memory = phase == "leaving" || phase == "done";
      // The memory phase counts its pages only once it starts.
      const double v = e.value("vcpus-total", 0) ? double(e.value("vcpus-moved", 0)) / e.value("vcpus-total", 1) : 1;
      const double p = e.value("pages-total", 0ull) ? double(e.value("pages-moved", 0ull)) /
                                                          double(e.value("pages-total", 1ull))
                                                    : (past_memory ? 1 : 0);
      progress_bar(fmt::format("evacuating node {}", node), 0.1 * v + 0.9 * p,
                   fmt::format("{} ({}/{} vCPUs, {} of {})", phase, e.value("vcpus-moved", 0),
                               e.value("vcpus-total", 0), mib(e.value("pages-moved", 0ull)),
                               mib(e.value("pages-total", 0ull))));
      if (phase == "done") {
        fmt::print(stderr, "\n");
        fmt::print("node {} is empty and has left the guest\n", node);
        return 0;
      }
      if (phase == "failed") {
        fmt::print(stderr, "\n");
        fail("the evacuation of node {} failed (see the AGGVM_NODE_EVACUATED event)", node);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  fmt::print(stderr, "\n");
  fail("the evacuation of node {} did not end within {} s", node, timeout_s);
}

}  // namespace
}  // namespace aggvm::libvirt

int main(int argc, char** argv) {
  using namespace aggvm::libvirt;
  CLI::App app{"aggvmctl: status and operations of aggregated libvirt domains"};
  std::string uri;
  app.add_option("-c,--connect", uri, "libvirt URI (default: libvirt's, e.g. qemu:///system)");
  app.require_subcommand(1);
  std::string name;
  double interval = 2.0, timeout = 600;
  unsigned vcpu = 0, node = 0;
  int to = -1;
  auto* st = app.add_subcommand("status", "hosts, their state and address, vCPUs, memory, fault rates");
  st->add_option("domain", name)->required();
  st->add_option("--interval", interval, "seconds between the two samples of the fault rate")
      ->capture_default_str();
  auto* mv = app.add_subcommand("move", "move one vCPU to another host, live");
  mv->add_option("domain", name)->required();
  mv->add_option("vcpu", vcpu)->required();
  mv->add_option("node", node)->required();
  mv->add_option("--timeout", timeout)->capture_default_str();
  auto* ev = app.add_subcommand("evacuate", "empty a host (its vCPUs and memory), live, with progress");
  ev->add_option("domain", name)->required();
  ev->add_option("node", node)->required();
  ev->add_option("--to", to, "the one node to move everything to (default: spread)");
  ev->add_option("--timeout", timeout)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  virSetErrorFunc(nullptr, [](void*, virErrorPtr) {});  // errors are reported once, by us
  try {
    Domain d(uri, name);
    if (*st) return status(d, interval);
    if (*mv) return move(d, vcpu, node, timeout);
    return evacuate(d, node, to, timeout);
  } catch (const std::exception& e) {
    std::cerr << "aggvmctl: " << e.what() << std::endl;
    return 1;
  }
}
