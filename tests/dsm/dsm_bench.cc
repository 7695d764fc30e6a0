// make bench-dsm: two hosts (network namespaces), node 0 home, node 1
// faulting.  In one run, on the same two hosts, for each UCX transport set
// (TCP over the veth, as the DSM runs by default; then UCX's shared memory,
// which crosses network namespaces on one machine: a stand-in for an RDMA
// fabric's latency):
//   1. the raw fabric floor: dsm-ucx-floor, a UCP stream ping-pong of 64 B
//      and 4 KiB without libaggvm-dsm (server on host 0, client on host 1,
//      polling, pinned to CPUs 0 and 1: the best case);
//   2. dsm-worker --mode bench: the library's service round trip, the local
//      userfaultfd floor, remote read faults, write faults that invalidate
//      one sharer, fault throughput.
// Every latency is reported as p50 / p99 beside its floor:
//   read fault  >= 64 B one-way (request) + 4 KiB one-way (page) + local uffd fault
//   write fault >= 64 B round trip (request, grant; the home is the sharer) + local uffd fault
// Two more runs over TCP: spin (the service thread polls 100 us before it
// sleeps) and qos (the host's CPU wake-up latency held at 0 us for the run,
// floor included: idle CPUs poll instead of halting).
// The last line is "dsm-fault-latency: key=value ...": unprefixed keys are
// the DSM and its TCP floor, spin_ and qos_ keys those runs, shm_ keys the
// DSM over shared memory (its service threads polling) and that floor;
// floor_us/ratio are the read fault's, ucx_rtt/ucx_one_way the raw 4 KiB
// ping-pong's.
//
//   dsm-bench [DSM_WORKER [FAULTS [UCX_FLOOR]]]
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "node/cpu_latency.h"

namespace {

using namespace std::chrono_literals;
using Figures = std::map<std::string, double>;

struct Fabric {
  std::string name;  // key prefix and label
  std::string tls;   // UCX_TLS, for the floor and the DSM alike
  std::map<std::string, std::string> env;
  std::string why;       // what it stands for
  std::string spin_us = "0";  // the DSM service thread's polling before it sleeps
  // Empty: the host's idle states as they are.  Else the bound the run
  // holds on the host (cpu_latency.h), for the floor and the DSM alike.
  std::string cpu_latency_us = "";
};

// Longer than the bench: a service thread that polls "for good".
constexpr const char* kWholeRunUs = "600000000";

// "tcp" carries the connection manager in the shared-memory set; data goes
// over posix (the floor's log shows the lanes, the DSM's log says so too).
// UCX 1.13 selects shared memory for endpoints with peer error handling
// only with UCX_MM_ERROR_HANDLING=y (the DSM sets it itself).  UCX wakes a sleeping receiver of shared memory
// through an abstract unix socket, which belongs to one network namespace:
// between the two hosts no wake-up arrives, so the DSM's service threads
// poll all through that run (as the floor does).
const std::vector<Fabric> kFabrics = {
    {"tcp", "tcp", {}, "UCX/TCP on veth (the DSM's default)"},
    // Where a core is free for the service thread, polling saves its
    // wake-up at every hop.  This machine has 2 cores for 2 service threads
    // and 2 faulting threads: the figure swings with what else runs.
    {"spin", "tcp", {}, "UCX/TCP, the DSM's service thread polling 100 us before it sleeps (service_spin_us)",
     "100"},
    // A thread woken on a CPU that halted waits for the CPU first: on this
    // virtualised host, for the hypervisor.  Holding the host's wake-up
    // latency at 0 us keeps idle CPUs polling (QEMU's cpu-latency-us=0).
    {"qos", "tcp", {}, "UCX/TCP, the host's CPU wake-up latency held at 0 us (cpu_latency_us; idle CPUs poll)",
     "0", "0"},
    {"shm", "posix,cma,self,tcp", {{"UCX_MM_ERROR_HANDLING", "y"}},
     "UCX shared memory across namespaces (stand-in for an RDMA fabric's latency), the DSM's service threads "
     "polling all through (shared memory's wake-ups do not cross namespaces)",
     kWholeRunUs},
};

// key=value words of the lines that start with `prefix`; keys get `tag`.
void parse_figures(const std::string& log, const std::string& prefix, const std::string& tag, Figures& out) {
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) != 0) continue;
    std::istringstream words(line.substr(prefix.size()));
    for (std::string w; words >> w;) {
      const auto eq = w.find('=');
      if (eq == std::string::npos) continue;
      try {
        out[tag + w.substr(0, eq)] = std::stod(w.substr(eq + 1));
      } catch (const std::exception&) {  // a word like tls=tcp: not a figure
      }
    }
  }
}

// The transports of the floor's lanes ("posix/memory"), from ucp_ep_print_info.
std::string lanes(const std::string& log) {
  std::string out;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    const auto l = line.find("lane[");
    const auto colon = line.find(':', l == std::string::npos ? 0 : l);
    if (line.rfind("#", 0) != 0 || l == std::string::npos || colon == std::string::npos) continue;
    std::istringstream words(line.substr(colon + 1));
    std::string first, second;
    words >> first >> second;
    std::string tl = first == "cm" ? "cm:" + second : first.substr(first.find(':') + 1);
    out += (out.empty() ? "" : ", ") + tl;
  }
  return out.empty() ? "?" : out;
}

std::optional<std::string> failed(aggvm::harness::Process& p, const char* who, std::chrono::seconds timeout) {
  const auto st = p.wait(timeout);
  if (st.exited && st.code == 0) return std::nullopt;
  if (st.timed_out) p.kill();
  return std::string(who) + " " + aggvm::harness::describe(st) + "\n" + p.log();
}

// The raw fabric floor: dsm-ucx-floor between the two hosts.
std::optional<std::string> run_floor(aggvm::harness::Cluster& cluster, const Fabric& f, const std::string& floor_bin,
                                     int port, const std::string& iterations, Figures& out, std::string& lane_info) {
  auto env = f.env;
  env["UCX_TLS"] = f.tls;
  const std::string addr = cluster.host(0).address() + ":" + std::to_string(port);
  // Pinned to different cores: a floor is the best case, and two spinning
  // processes on one core would measure time slices.
  const bool two_cpus = std::thread::hardware_concurrency() >= 2;
  std::vector<std::string> server_argv = {floor_bin, "server", "--listen", addr, "--sizes", "64,4096",
                                          "--iterations", iterations};
  std::vector<std::string> client_argv = {floor_bin, "client", "--connect", addr, "--sizes", "64,4096",
                                          "--iterations", iterations};
  if (two_cpus) {
    server_argv.insert(server_argv.end(), {"--cpu", "0"});
    client_argv.insert(client_argv.end(), {"--cpu", "1"});
  }
  auto server = cluster.host(0).spawn(server_argv, env);
  if (!server.wait_for_line("ucx-floor: listening", 30s)) {
    server.kill();
    return "dsm-ucx-floor server did not listen\n" + server.log();
  }
  auto client = cluster.host(1).spawn(client_argv, env);
  auto bad = failed(client, "dsm-ucx-floor client", 180s);
  if (auto s = failed(server, "dsm-ucx-floor server", 30s); s && !bad) bad = s;
  if (bad) return bad;
  std::istringstream in(client.log());
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("ucx-floor: size=", 0) != 0) continue;
    const std::string size = line.substr(16, line.find(' ', 16) - 16);
    parse_figures(line, "ucx-floor: ", "ucx_" + size + "_", out);
  }
  lane_info = lanes(client.log());
  if (!out.count("ucx_4096_rtt_p50_us") || !out.count("ucx_64_rtt_p50_us"))
    return "dsm-ucx-floor printed no result\n" + client.log();
  return std::nullopt;
}

std::optional<std::string> run_dsm(aggvm::harness::Cluster& cluster, const Fabric& f, const std::string& worker,
                                   int port, const std::string& faults, Figures& out) {
  const auto secret = cluster.log_dir() / "secret";
  std::ofstream(secret) << "benchmark cluster secret, 32 bytes";
  const std::string addresses = cluster.host(0).address() + ":" + std::to_string(port) + "," +
                                cluster.host(1).address() + ":" + std::to_string(port + 1);
  std::vector<aggvm::harness::Process> procs;
  for (int i = 0; i < 2; ++i)
    procs.push_back(cluster.host(i).spawn({worker, "--node", std::to_string(i), "--addresses", addresses,
                                           "--secret-file", secret.string(), "--mode", "bench", "--region-mib",
                                           "256", "--iterations", faults, "--ucx-transports", f.tls,
                                           "--spin-us", f.spin_us, "--cpu-latency-us",
                                           f.cpu_latency_us.empty() ? "-1" : f.cpu_latency_us},
                                          f.env));
  std::optional<std::string> bad;
  for (int i = 0; i < 2; ++i)
    if (auto s = failed(procs[i], i ? "dsm-worker node 1" : "dsm-worker node 0", 300s); s && !bad) bad = s;
  if (bad) return bad;
  parse_figures(procs[1].log(), "bench: ", "", out);
  if (!out.count("remote_read_fault_p50_us") || !out.count("write_invalidate_one_sharer_p50_us"))
    return "dsm-worker node 1 printed no result\n" + procs[1].log();
  return std::nullopt;
}

struct Summary {
  double read50, read99, write50, write99;
  double read_floor50, read_floor99, write_floor50, write_floor99;
};

Summary summarize(const Figures& g) {
  auto v = [&](const std::string& k) { return g.at(k); };
  const double u50 = v("local_uffd_fault_p50_us"), u99 = v("local_uffd_fault_p99_us");
  return {
      .read50 = v("remote_read_fault_p50_us"),
      .read99 = v("remote_read_fault_p99_us"),
      .write50 = v("write_invalidate_one_sharer_p50_us"),
      .write99 = v("write_invalidate_one_sharer_p99_us"),
      .read_floor50 = v("ucx_64_one_way_p50_us") + v("ucx_4096_one_way_p50_us") + u50,
      .read_floor99 = v("ucx_64_one_way_p99_us") + v("ucx_4096_one_way_p99_us") + u99,
      .write_floor50 = v("ucx_64_rtt_p50_us") + u50,
      .write_floor99 = v("ucx_64_rtt_p99_us") + u99,
  };
}

void print_readable(const Fabric& f, const Figures& g, const std::string& lane_info) {
  auto v = [&](const std::string& k) { return g.at(k); };
  auto pp = [&](const std::string& k) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%7.1f / %7.1f", v(k + "_p50_us"), v(k + "_p99_us"));
    return std::string(buf);
  };
  const Summary s = summarize(g);
  const char* n = f.name.c_str();
  std::printf("dsm-bench: [%s] raw UCX stream ping-pong, lanes %s\n", n, lane_info.c_str());
  std::printf("dsm-bench: [%s]   64 B round trip           %s us   one-way %s us\n", n, pp("ucx_64_rtt").c_str(),
              pp("ucx_64_one_way").c_str());
  std::printf("dsm-bench: [%s]   4 KiB round trip          %s us   one-way %s us\n", n, pp("ucx_4096_rtt").c_str(),
              pp("ucx_4096_one_way").c_str());
  std::printf("dsm-bench: [%s] local uffd fault (COPY)     %s us%s\n", n, pp("local_uffd_fault").c_str(),
              f.spin_us != "0" ? "   (its handler polling)" : "");
  // More polling threads than CPUs: a thread they wake waits for a CPU.
  // The service round trip's caller sleeps on a condition variable, so it
  // measures that wait; a fault's thread is woken by the kernel's
  // UFFDIO_COPY on the polling thread's CPU and mostly runs at once.
  if (f.spin_us == kWholeRunUs && std::thread::hardware_concurrency() < 4)
    std::printf("dsm-bench: [%s] note: 2 service threads poll on this machine's %u CPUs: a thread they wake waits "
                "for a CPU, so the service round trip measures the host's scheduler, not the path\n",
                n, std::thread::hardware_concurrency());
  std::printf("dsm-bench: [%s] DSM service 4 KiB rtt      %s us   (%.1fx the raw 4 KiB rtt at p50)\n", n,
              pp("service_rtt").c_str(), v("service_rtt_p50_us") / v("ucx_4096_rtt_p50_us"));
  std::printf("dsm-bench: [%s] remote read fault         %s us   floor %7.1f / %7.1f us   ratio %.2f / %.2f\n", n,
              pp("remote_read_fault").c_str(), s.read_floor50, s.read_floor99, s.read50 / s.read_floor50,
              s.read99 / s.read_floor99);
  std::printf("dsm-bench: [%s] write, 1 sharer inv.      %s us   floor %7.1f / %7.1f us   ratio %.2f / %.2f\n", n,
              pp("write_invalidate_one_sharer").c_str(), s.write_floor50, s.write_floor99,
              s.write50 / s.write_floor50, s.write99 / s.write_floor99);
  std::printf("dsm-bench: [%s] faults/s: %.0f with 1 thread, %.0f with 2\n", n, v("faults_per_s_1_thread"),
                v("faults_per_s_2_threads"));
}

std::string last_line_keys(const std::string& prefix, const Figures& g) {
  auto v = [&](const std::string& k) { return g.at(k); };
  const Summary s = summarize(g);
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "%1$sread_p50_us=%2$.1f %1$sread_p99_us=%3$.1f %1$swrite_p50_us=%4$.1f %1$swrite_p99_us=%5$.1f "
                "%1$sfloor_us=%6$.1f %1$sratio=%7$.2f %1$swrite_floor_us=%8$.1f %1$swrite_ratio=%9$.2f "
                "%1$sucx_rtt_p50_us=%10$.1f %1$sucx_rtt_p99_us=%11$.1f %1$sucx_one_way_p50_us=%12$.1f "
                "%1$sucx_one_way_p99_us=%13$.1f %1$sucx_rtt_64_p50_us=%14$.1f %1$suffd_p50_us=%15$.1f "
                "%1$suffd_p99_us=%16$.1f %1$sservice_rtt_p50_us=%17$.1f %1$sservice_rtt_p99_us=%18$.1f",
                prefix.c_str(), s.read50, s.read99, s.write50, s.write99, s.read_floor50, s.read50 / s.read_floor50,
                s.write_floor50, s.write50 / s.write_floor50, v("ucx_4096_rtt_p50_us"), v("ucx_4096_rtt_p99_us"),
                v("ucx_4096_one_way_p50_us"), v("ucx_4096_one_way_p99_us"), v("ucx_64_rtt_p50_us"),
                v("local_uffd_fault_p50_us"), v("local_uffd_fault_p99_us"), v("service_rtt_p50_us"),
                v("service_rtt_p99_us"));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // in order with stderr
  const std::string worker = argc > 1 ? argv[1] : "tests/dsm/dsm-worker";
  const std::string faults = argc > 2 ? argv[2] : "2000";
  const std::string floor_bin =
      argc > 3 ? argv[3] : (std::filesystem::path(worker).parent_path() / "dsm-ucx-floor").string();
  if (auto why = aggvm::harness::unavailable_reason()) {
    std::fprintf(stderr, "dsm-bench: cannot create hosts: %s\n", why->c_str());
    return 2;
  }
  aggvm::harness::Cluster cluster({.hosts = 2, .name = "bench"});
  std::printf("dsm-bench: 2 hosts (%s, %s), floor ping-pongs of 10000 per size; figures are p50 / p99\n",
              cluster.host(0).address().c_str(), cluster.host(1).address().c_str());
  std::vector<Figures> figures(kFabrics.size());
  std::vector<std::string> lane_info(kFabrics.size());
  for (size_t k = 0; k < kFabrics.size(); ++k) {  // the floors, then the DSM, in one run
    const Fabric& f = kFabrics[k];
    const int port = 17500 + 10 * static_cast<int>(k);  // fresh ports per run: no TIME_WAIT clash
    std::optional<aggvm::dsm::CpuLatencyRequest> held;
    if (!f.cpu_latency_us.empty()) {
      try {
        held.emplace(static_cast<uint32_t>(std::stoul(f.cpu_latency_us)));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "dsm-bench: [%s] %s: %s\n", f.name.c_str(), f.why.c_str(), e.what());
        return 1;
      }
    }
    auto bad = run_floor(cluster, f, floor_bin, port + 5, "10000", figures[k], lane_info[k]);
    if (!bad) bad = run_dsm(cluster, f, worker, port, faults, figures[k]);
    if (bad) {
      std::fprintf(stderr, "dsm-bench: [%s] %s: %s", f.name.c_str(), f.why.c_str(), bad->c_str());
      return 1;
    }
  }
  for (size_t k = 0; k < kFabrics.size(); ++k) {
    const Fabric& f = kFabrics[k];
    // The local fault is part of the floor.  A DSM whose service thread
    // polls is put beside a fault whose handler polls too; dsm-worker
    // measures both kinds in its own process, and beside a polling service
    // thread it would measure the polling: a polling run takes the first
    // run's, measured while the service thread slept.
    if (f.spin_us != "0") {
      figures[k]["local_uffd_fault_p50_us"] = figures[0].at("polled_uffd_fault_p50_us");
      figures[k]["local_uffd_fault_p99_us"] = figures[0].at("polled_uffd_fault_p99_us");
    }
    std::printf("dsm-bench: [%s] %s, UCX_TLS=%s, DSM: %s faults per figure\n", f.name.c_str(), f.why.c_str(),
                f.tls.c_str(), faults.c_str());
    print_readable(f, figures[k], lane_info[k]);
  }
  std::string last = "dsm-fault-latency:";
  for (size_t k = 0; k < kFabrics.size(); ++k)
    last += " " + last_line_keys(k == 0 ? "" : kFabrics[k].name + "_", figures[k]);
  std::printf("%s\n", last.c_str());
  return 0;
}
