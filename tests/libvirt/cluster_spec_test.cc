// The aggvm metadata of a libvirt domain: what parses, and the error each
// mistake gets (these texts reach `virsh start`).
#include "cluster_spec.h"

#include <gtest/gtest.h>

#include <string>

#include "error.h"

namespace aggvm::libvirt {
namespace {

std::string domain(const std::string& cluster, const std::string& cells =
                       "<cell id='0' cpus='0-1' memory='512' unit='MiB'/>"
                       "<cell id='1' cpus='2-3' memory='512' unit='MiB'/>",
                   int vcpus = 4) {
  return "<domain type='qemu'><name>g1</name><uuid>6f0c7d0e-0000-4000-8000-000000000001</uuid>"
         "<vcpu>" + std::to_string(vcpus) + "</vcpu><metadata>" + cluster +
         "<other:x xmlns:other='urn:x'/></metadata><cpu><numa>" + cells + "</numa></cpu></domain>";
}

std::string cluster(const std::string& body, const std::string& attrs = "") {
  return "<aggvm:cluster xmlns:aggvm='https://aggvm.dev/xmlns/libvirt/1' " + attrs + ">" +
         "<aggvm:secret file='/etc/aggvm/cluster.key'/>" + body + "</aggvm:cluster>";
}

const std::string kTwoHosts = "<aggvm:host id='0' address='10.0.0.1' cells='0'/>"
                              "<aggvm:host id='1' address='10.0.0.2' cells='1'/>";

std::string error_of(const std::string& xml) {
  try {
    parse_cluster_spec(xml);
  } catch (const DriverError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ClusterSpec, ParsesTwoHosts) {
  auto spec = parse_cluster_spec(domain(cluster(kTwoHosts, "port='7200' timeout-ms='3000'")));
  ASSERT_TRUE(spec);
  EXPECT_EQ(spec->domain, "g1");
  EXPECT_EQ(spec->uuid, "6f0c7d0e-0000-4000-8000-000000000001");
  ASSERT_EQ(spec->hosts.size(), 2u);
  EXPECT_EQ(spec->fabric_addresses(), (std::vector<std::string>{"10.0.0.1:7200", "10.0.0.2:7200"}));
  EXPECT_EQ(spec->hosts[1].noded_port, kDefaultNodedPort);
  EXPECT_EQ(spec->timeout_ms, 3000u);
  EXPECT_EQ(spec->cell_hosts(), (std::vector<uint16_t>{0, 1}));
  EXPECT_EQ(spec->secret_file, "/etc/aggvm/cluster.key");
  EXPECT_FALSE(spec->cpu_latency_us);  // the hosts' idle states left alone
  EXPECT_FALSE(spec->dma_prefetch);    // QEMU's default
}

TEST(ClusterSpec, ReadsDmaPrefetch) {
  auto off = parse_cluster_spec(domain(cluster(kTwoHosts, "dma-prefetch='off'")));
  ASSERT_TRUE(off);
  ASSERT_TRUE(off->dma_prefetch);
  EXPECT_FALSE(*off->dma_prefetch);
  auto on = parse_cluster_spec(domain(cluster(kTwoHosts, "dma-prefetch='on'")));
  ASSERT_TRUE(on && on->dma_prefetch);
  EXPECT_TRUE(*on->dma_prefetch);
}

TEST(ClusterSpec, ReadsTheCpuLatencyBound) {
  auto spec = parse_cluster_spec(domain(cluster(kTwoHosts, "cpu-latency-us='0'")));
  ASSERT_TRUE(spec);
  ASSERT_TRUE(spec->cpu_latency_us);
  EXPECT_EQ(*spec->cpu_latency_us, 0u);
}

TEST(ClusterSpec, ReadsLibvirtStatusXml) {
  auto spec = parse_cluster_spec("<domstatus state='paused'>" + domain(cluster(kTwoHosts)) + "</domstatus>");
  ASSERT_TRUE(spec);
  EXPECT_EQ(spec->hosts.size(), 2u);
}

TEST(ClusterSpec, PlainDomainHasNoSpec) {
  EXPECT_FALSE(parse_cluster_spec(domain("")));
}

TEST(ClusterSpec, Ipv6HostsAreBracketed) {
  auto spec = parse_cluster_spec(domain(cluster("<aggvm:host id='0' address='fd00::1' cells='0'/>"
                                                "<aggvm:host id='1' address='fd00::2' cells='1'/>")));
  ASSERT_TRUE(spec);
  EXPECT_EQ(spec->fabric_addresses()[1], "[fd00::2]:7100");
}

TEST(ClusterSpec, MistakesAreNamed) {
  struct Case {
    std::string xml, expect;
  } cases[] = {
      {"<domain><name>x</name", "does not parse"},
      {domain(cluster("<aggvm:host id='0' address='10.0.0.1' cells='0-1'/>")), "needs 2 or more"},
      {domain(cluster(kTwoHosts), "<cell id='0' cpus='0-1' memory='512'/><cell id='1' cpus='2-3' memory='512'/>"
                                  "<cell id='2' cpus='4-5' memory='512'/>", 6),
       "guest NUMA cell 2 (vCPUs 4-5) has no host"},
      {domain(cluster("<aggvm:host id='0' address='10.0.0.1' cells='1'/>"
                      "<aggvm:host id='1' address='10.0.0.2' cells='0'/>")),
       "vCPU 0 is in cell 0, on host 1; it must be on the head host"},
      {domain(cluster("<aggvm:host id='0' address='10.0.0.1' cells='0'/>"
                      "<aggvm:host id='1' address='node-b' cells='1'/>")),
       "<aggvm:host id='1'>: address 'node-b' is not an IPv4 or IPv6 address"},
      {domain(cluster("<aggvm:host id='0' address='10.0.0.1' cells='0'/>"
                      "<aggvm:host id='1' adress='10.0.0.2' cells='1'/>")),
       "<aggvm:host id='1'>: unknown attribute 'adress'"},
      {domain(cluster("<aggvm:host id='0' address='10.0.0.1' cells='0'/>"
                      "<aggvm:host id='1' address='10.0.0.2' cells='1' colour='red'/>")),
       "unknown attribute 'colour'"},
      {domain(cluster("<aggvm:host id='0' address='10.0.0.1' cells='0'/>"
                      "<aggvm:host id='2' address='10.0.0.2' cells='1'/>")),
       "ids must be 0..1"},
      {domain(cluster("<aggvm:host id='0' address='10.0.0.1' cells='0'/>"
                      "<aggvm:host id='1' address='10.0.0.2' cells='0-1'/>")),
       "cell 0 is given to more than one"},
      {domain(cluster("<aggvm:host id='0' address='10.0.0.1' cells='0'/>"
                      "<aggvm:host id='1' address='10.0.0.2' cells='7'/>")),
       "names cell 7, but the domain's <cpu><numa> has 2 cell(s)"},
      {domain(cluster(kTwoHosts, "port='99999'")), "<aggvm:cluster port>: '99999' is not a number"},
      {domain(cluster(kTwoHosts, "cpu-latency-us='-1'")), "<aggvm:cluster cpu-latency-us>: '-1'"},
      {domain(cluster(kTwoHosts, "cpu-latency='0'")), "unknown attribute 'cpu-latency'"},
      {domain(cluster(kTwoHosts, "dma-prefetch='yes'")), "<aggvm:cluster dma-prefetch>: 'yes' is neither 'on' nor 'off'"},
      {domain(cluster(kTwoHosts + "<aggvm:hots/>")), "unknown element <hots>"},
      {domain("<cluster xmlns='https://aggvm.dev/xmlns/libvirt/2'/>"), "aggvm's is 'https://aggvm.dev"},
      {domain("<aggvm:cluster xmlns:aggvm='https://aggvm.dev/xmlns/libvirt/1'>" + kTwoHosts +
              "</aggvm:cluster>"),
       "has no <aggvm:secret"},
      {domain(cluster(kTwoHosts), "<cell id='0' cpus='0-1' memory='512'/><cell id='1' cpus='2-9' memory='512'/>"),
       "names vCPU 4, but <vcpu> is 4"},
      {domain(cluster(kTwoHosts), "<cell id='0' cpus='0' memory='512'/><cell id='1' cpus='2-3' memory='512'/>"),
       "cover 3 of the 4 vCPUs"},
  };
  for (const auto& c : cases) {
    const std::string got = error_of(c.xml);
    EXPECT_NE(got.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in: " << got;
  }
}

TEST(ClusterSpec, IdLists) {
  EXPECT_EQ(parse_id_list("0-2,5", "x"), (std::vector<uint32_t>{0, 1, 2, 5}));
  EXPECT_THROW(parse_id_list("2-1", "x"), DriverError);
  EXPECT_THROW(parse_id_list("1,1", "x"), DriverError);
  EXPECT_THROW(parse_id_list("^1", "x"), DriverError);
  EXPECT_THROW(parse_id_list("", "x"), DriverError);
}

}  // namespace
}  // namespace aggvm::libvirt
