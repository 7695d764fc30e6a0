// What an aggregated domain's XML says about its cluster: which host runs
// each guest NUMA cell, the hosts' addresses, the secret, the timeout.
//
// It lives in a namespaced <metadata> element, the one place of a libvirt
// domain that libvirt keeps verbatim through define, dumpxml, edit and
// restarts without understanding it (<cpu><numa><cell> takes no foreign
// attributes):
//
//   <metadata>
//     <aggvm:cluster xmlns:aggvm="https://aggvm.dev/xmlns/libvirt/1"
//                    port="7100" timeout-ms="5000">
//       <aggvm:secret file="/etc/aggvm/cluster.key"/>
//       <aggvm:host id="0" address="10.0.0.1" cells="0"/>
//       <aggvm:host id="1" address="10.0.0.2" cells="1" noded-port="7150"/>
//     </aggvm:cluster>
//   </metadata>
//
// Host 0 is the head: libvirt runs there and starts node 0 (devices,
// console, monitor).  docs/libvirt.md explains every attribute.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aggvm::libvirt {

inline constexpr std::string_view kMetadataNamespace = "https://aggvm.dev/xmlns/libvirt/1";
inline constexpr uint16_t kDefaultFabricPort = 7100;
inline constexpr uint16_t kDefaultNodedPort = 7150;
inline constexpr uint32_t kDefaultTimeoutMs = 5000;

struct ClusterHost {
  uint16_t id = 0;
  std::string address;        // IPv4 or IPv6 literal
  uint16_t fabric_port = kDefaultFabricPort;
  uint16_t noded_port = kDefaultNodedPort;
  std::vector<uint32_t> cells;  // guest NUMA cells this host runs
};

struct NumaCell {
  uint32_t id = 0;
  std::vector<uint32_t> vcpus;
};

struct ClusterSpec {
  std::string domain;          // the libvirt domain's name
  std::string uuid;
  std::vector<ClusterHost> hosts;  // by node id: hosts[i].id == i
  std::vector<NumaCell> cells;     // the domain's <cpu><numa>, by cell id
  std::string secret_file;
  uint32_t timeout_ms = kDefaultTimeoutMs;
  // <aggvm:cluster cpu-latency-us>: every node holds its host's CPU wake-up
  // latency at this bound while it runs (aggvm-cluster cpu-latency-us);
  // unset: the hosts' idle states are left alone.
  std::optional<uint32_t> cpu_latency_us;
  // <aggvm:cluster dma-prefetch='on|off'>: node 0's virtio devices ask for
  // the pages of other nodes' buffers at once (aggvm-cluster dma-prefetch);
  // unset: QEMU's default (on).
  std::optional<bool> dma_prefetch;

  // "address:port" of every node's fabric endpoint, by node id.
  std::vector<std::string> fabric_addresses() const;
  // Node of each guest NUMA cell, by cell id.
  std::vector<uint16_t> cell_hosts() const;
};

// Parses a libvirt domain XML document (a <domain>, or the <domstatus>
// libvirt keeps in its state directory).  Returns nullopt when the domain
// has no aggvm metadata: a plain domain.  Throws DriverError naming the
// element at fault when the metadata is wrong or does not match the
// domain: a cell with no host, vCPU 0 away from the head, a bad address.
std::optional<ClusterSpec> parse_cluster_spec(std::string_view xml);

// The same for a file; throws if it cannot be read or parsed.
std::optional<ClusterSpec> load_cluster_spec(const std::string& path);

// "0-3,6" -> {0,1,2,3,6}; throws on anything else.
std::vector<uint32_t> parse_id_list(std::string_view text, std::string_view what);

}  // namespace aggvm::libvirt
