// The multi-host memory demo (make demo until the QEMU work lands): three
// hosts share one 256 MiB region kept coherent by libaggvm-dsm; threads on
// every host hammer shared counters and records, and the demo shows what
// each host did and what crossed the network.
#include <cstdio>
#include <fstream>
#include <regex>
#include <string>

#include "harness.h"

namespace {

std::string field(const std::string& line, const std::string& key) {
  std::smatch m;
  std::regex re(key + "=([^ \\]]+)");
  return std::regex_search(line, m, re) ? m[1].str() : "?";
}

std::string line_with(const std::string& log, const std::string& prefix) {
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(prefix, 0) == 0) return line;
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  const std::string worker = argc > 1 ? argv[1] : "tests/dsm/dsm-worker";
  constexpr int kHosts = 3;
  std::printf("aggvm demo: one memory, three hosts\n\n");
  if (auto why = aggvm::harness::unavailable_reason()) {
    std::fprintf(stderr, "aggvm demo: cannot create hosts: %s\n", why->c_str());
    return 2;
  }
  std::printf("[1/3] creating %d hosts (network namespaces on a bridge)...\n", kHosts);
  aggvm::harness::Cluster cluster({.hosts = kHosts, .name = "demo"});
  std::string addresses;
  for (int i = 0; i < kHosts; ++i) {
    addresses += (i ? "," : "") + cluster.host(i).address() + ":17600";
    std::printf("      host %d  %-12s netns %s\n", i, cluster.host(i).address().c_str(),
                cluster.host(i).netns().c_str());
  }
  const auto secret = cluster.log_dir() / "secret";
  std::ofstream(secret) << "demo cluster secret: 32 bytes long";

  std::printf("[2/3] starting one DSM node per host: 256 MiB shared, homed 1/3 per host,\n"
              "      2 threads per host doing atomic adds and checksummed record writes...\n");
  std::vector<aggvm::harness::Process> procs;
  for (int i = 0; i < kHosts; ++i)
    procs.push_back(cluster.host(i).spawn({worker, "--node", std::to_string(i), "--addresses", addresses,
                                           "--secret-file", secret.string(), "--mode", "torture",
                                           "--region-mib", "256", "--threads", "2", "--ops", "4000"}));
  bool ok = true;
  for (int i = 0; i < kHosts; ++i) {
    const auto st = procs[i].wait(300s);
    if (!st.exited || st.code != 0) {
      std::fprintf(stderr, "host %d: %s\n%s", i, aggvm::harness::describe(st).c_str(), procs[i].log().c_str());
      ok = false;
    }
  }
  if (!ok) return 1;

  std::printf("[3/3] what each host did:\n\n");
  std::printf("      host  faults(read/write)  from-own-home  sent MiB  recv MiB  invalidated  resident MiB\n");
  for (int i = 0; i < kHosts; ++i) {
    const std::string s = line_with(procs[i].log(), "stats: ");
    auto mib = [&](const char* k) {
      const std::string v = field(s, k);
      return v == "?" ? 0.0 : std::stod(v) / (1 << 20);
    };
    std::printf("      %4d  %8s/%-9s  %13s  %8.1f  %8.1f  %11s  %12.1f\n", i, field(s, "read_faults").c_str(),
                field(s, "write_faults").c_str(), field(s, "local_faults").c_str(), mib("bytes_sent"),
                mib("bytes_received"), field(s, "invalidations").c_str(),
                std::stod(field(s, "resident_peak_pages") == "?" ? "0" : field(s, "resident_peak_pages")) / 256);
  }
  const std::string r = line_with(procs[0].log(), "result: ");
  std::printf("\n      shared counters total %s (expected %s), records written %s, torn %s\n",
              field(r, "counter_total").c_str(), field(r, "expected").c_str(), field(r, "records").c_str(),
              field(r, "torn").c_str());
  const bool pass = field(r, "status") == "pass";
  std::printf("\naggvm demo: %s hosts=%d memory_mib=256 coherent=%s\n", pass ? "ok" : "FAILED", kHosts,
              pass ? "yes" : "no");
  return pass ? 0 : 1;
}
