// make bench-dsm: two hosts (network namespaces), node 0 home, node 1
// faulting; prints latency, throughput and the floor measured in the same
// run, and ends with the dsm-fault-latency line.
#include <cstdio>
#include <fstream>
#include <regex>
#include <string>

#include "harness.h"

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  const std::string worker = argc > 1 ? argv[1] : "tests/dsm/dsm-worker";
  const std::string pages = argc > 2 ? argv[2] : "2000";
  if (auto why = aggvm::harness::unavailable_reason()) {
    std::fprintf(stderr, "dsm-bench: cannot create hosts: %s\n", why->c_str());
    return 2;
  }
  aggvm::harness::Cluster cluster({.hosts = 2, .name = "bench"});
  const auto secret = cluster.log_dir() / "secret";
  std::ofstream(secret) << "benchmark cluster secret, 32 bytes";
  const std::string addresses = cluster.host(0).address() + ":17500," + cluster.host(1).address() + ":17501";
  std::printf("dsm-bench: 2 hosts over UCX/TCP on veth (%s), %s pages per measurement\n", addresses.c_str(),
              pages.c_str());
  std::vector<aggvm::harness::Process> procs;
  for (int i = 0; i < 2; ++i)
    procs.push_back(cluster.host(i).spawn({worker, "--node", std::to_string(i), "--addresses", addresses,
                                           "--secret-file", secret.string(), "--mode", "bench", "--region-mib",
                                           "256", "--iterations", pages}));
  int rc = 0;
  for (int i = 0; i < 2; ++i) {
    const auto st = procs[i].wait(300s);
    if (!st.exited || st.code != 0) {
      std::fprintf(stderr, "dsm-bench: node %d %s\n%s", i, aggvm::harness::describe(st).c_str(),
                   procs[i].log().c_str());
      rc = 1;
    }
  }
  if (rc) return rc;
  std::string last;
  std::istringstream log(procs[1].log());
  for (std::string line; std::getline(log, line);) {
    if (line.rfind("bench: ", 0) == 0) std::printf("  %s\n", line.substr(7).c_str());
    if (line.rfind("dsm-fault-latency: ", 0) == 0) last = line;
  }
  if (last.empty()) {
    std::fprintf(stderr, "dsm-bench: node 1 printed no result\n%s", procs[1].log().c_str());
    return 1;
  }
  std::printf("%s\n", last.c_str());
  return 0;
}
