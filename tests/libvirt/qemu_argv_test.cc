// Node 0's and the workers' command lines from the one libvirt 9.0 builds.
#include "qemu_argv.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "error.h"

namespace aggvm::libvirt {
namespace {

// What libvirt 9.0 ran for docs/examples/aggvm-guest.xml (trimmed).
const std::vector<std::string> kLibvirtArgv = {
    "/usr/bin/aggvm-qemu", "-name", "guest=g1,debug-threads=on", "-S", "-object",
    R"({"qom-type":"secret","id":"masterKey0","format":"raw","file":"/var/lib/libvirt/qemu/domain-1-g1/master-key.aes"})",
    "-machine", "pc-i440fx-10.0,usb=off,dump-guest-core=off", "-accel", "tcg", "-cpu", "qemu64,x2apic=off",
    "-m", "1024", "-object", R"({"qom-type":"memory-backend-ram","id":"ram-node0","size":536870912})",
    "-numa", "node,nodeid=0,cpus=0-1,memdev=ram-node0", "-smp", "4,sockets=4,cores=1,threads=1",
    "-uuid", "6f0c7d0e-0000-4000-8000-000000000001", "-no-user-config", "-nodefaults",
    "-chardev", "socket,id=charmonitor,fd=30,server=on,wait=off", "-mon", "chardev=charmonitor,id=monitor,mode=control",
    "-rtc", "base=utc", "-no-shutdown", "-boot", "strict=on", "-kernel", "/img/vmlinuz",
    "-blockdev", R"({"driver":"file","filename":"/img/data.img","node-name":"libvirt-1-storage","auto-read-only":true})",
    "-blockdev", R"({"node-name":"libvirt-1-format","read-only":false,"driver":"raw","file":"libvirt-1-storage"})",
    "-device", R"({"driver":"virtio-blk-pci","bus":"pci.0","addr":"0x3","drive":"libvirt-1-format","id":"virtio-disk0"})",
    "-netdev", R"({"type":"tap","fd":"24","id":"hostnet0"})",
    "-device", R"({"driver":"virtio-net-pci","netdev":"hostnet0","id":"net0","mac":"52:54:00:a1:4a:cc","bus":"pci.0","addr":"0x2"})",
    "-add-fd", "set=0,fd=24,opaque=serial0-log",
    "-chardev", "pty,id=charserial0,logfile=/dev/fdset/0,logappend=on",
    "-device", R"({"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0})",
    "-object", R"({"qom-type":"rng-random","id":"objrng0","filename":"/dev/urandom"})",
    "-device", R"({"driver":"virtio-rng-pci","rng":"objrng0","id":"rng0","bus":"pci.0","addr":"0x5"})",
    "-audiodev", R"({"id":"audio1","driver":"wav","path":"/tmp/out.wav"})",
    "-fw_cfg", "name=opt/x,file=/etc/hostname",
    "-msg", "timestamp=on"};

ClusterSpec two_hosts() {
  ClusterSpec spec;
  spec.domain = "g1";
  spec.uuid = "6f0c7d0e-0000-4000-8000-000000000001";
  spec.hosts = {{0, "10.0.0.1", 7100, 7150, {0}}, {1, "10.0.0.2", 7100, 7150, {1}}};
  spec.cells = {{0, {0, 1}}, {1, {2, 3}}};
  spec.secret_file = "/etc/aggvm/head.key";
  spec.timeout_ms = 4000;
  return spec;
}

std::string value_after(const std::vector<std::string>& argv, const std::string& opt, int nth = 0) {
  for (size_t i = 0; i + 1 < argv.size(); ++i)
    if (argv[i] == opt && nth-- == 0) return argv[i + 1];
  return "";
}

bool mentions(const std::vector<std::string>& argv, const std::string& text) {
  return std::any_of(argv.begin(), argv.end(), [&](auto& a) { return a.find(text) != std::string::npos; });
}

TEST(QemuArgv, ProbesAndPlainRunsAreRecognised) {
  EXPECT_TRUE(is_probe({"q", "-S", "-no-user-config", "-nodefaults", "-nographic", "-machine",
                        "none,accel=kvm:tcg", "-qmp", "unix:/x,server=on,wait=off"}));
  EXPECT_TRUE(is_probe({"q", "-version"}));
  EXPECT_FALSE(is_probe(kLibvirtArgv));
  EXPECT_EQ(domain_name(kLibvirtArgv), "g1");
}

TEST(QemuArgv, HeadKeepsLibvirtsLineAndAddsTheCluster) {
  const auto argv = head_command(kLibvirtArgv, "/usr/libexec/aggvm/qemu-system-x86_64", two_hosts());
  EXPECT_EQ(argv[0], "/usr/libexec/aggvm/qemu-system-x86_64");
  EXPECT_EQ(value_after(argv, "-accel"), "tcg,thread=multi,aggregate=aggvm0");
  EXPECT_EQ(value_after(argv, "-chardev"), "socket,id=charmonitor,fd=30,server=on,wait=off");
  // libvirt's three objects, then the secret and the cluster.
  auto cluster = nlohmann::json::parse(value_after(argv, "-object", 4));
  EXPECT_EQ(cluster["qom-type"], "aggvm-cluster");
  EXPECT_EQ(cluster["node"], 0);
  EXPECT_EQ(cluster["addresses"], nlohmann::json({"10.0.0.1:7100", "10.0.0.2:7100"}));
  EXPECT_EQ(cluster["numa-node-hosts"], nlohmann::json({0, 1}));
  EXPECT_EQ(cluster["timeout"], 4000);
  EXPECT_FALSE(cluster.contains("cpu-latency-us"));  // left to QEMU's default
  EXPECT_FALSE(cluster.contains("dma-prefetch"));
  auto secret = nlohmann::json::parse(value_after(argv, "-object", 3));
  EXPECT_EQ(secret["file"], "/etc/aggvm/head.key");  // a path: the secret itself is on no command line
}

TEST(QemuArgv, EveryNodeHoldsTheCpuLatencyTheDomainAsks) {
  ClusterSpec spec = two_hosts();
  spec.cpu_latency_us = 0;
  auto head = nlohmann::json::parse(
      value_after(head_command(kLibvirtArgv, "/usr/libexec/aggvm/qemu-system-x86_64", spec), "-object", 4));
  auto worker = nlohmann::json::parse(
      value_after(worker_command(kLibvirtArgv, "/opt/q", spec, 1, "/etc/aggvm/cluster.key"), "-object", 3));
  EXPECT_EQ(head["cpu-latency-us"], 0);
  EXPECT_EQ(worker["cpu-latency-us"], 0);
}

TEST(QemuArgv, DmaPrefetchTurnedOffReachesTheHead) {
  ClusterSpec spec = two_hosts();
  spec.dma_prefetch = false;
  auto head = nlohmann::json::parse(
      value_after(head_command(kLibvirtArgv, "/usr/libexec/aggvm/qemu-system-x86_64", spec), "-object", 4));
  EXPECT_EQ(head["dma-prefetch"], false);
}

TEST(QemuArgv, WorkerRunsTheSameMachineWithNullBackends) {
  const auto argv = worker_command(kLibvirtArgv, "/opt/q", two_hosts(), 1, "/etc/aggvm/cluster.key");
  EXPECT_EQ(argv[0], "/opt/q");
  // The head's alone: its fds, monitor, tap, master key, its -S and -no-shutdown.
  for (const char* gone : {"fd=", "/dev/fdset", "charmonitor,id=monitor", "masterKey0", "hostnet0",
                           "/img/data.img", "/dev/urandom", "/tmp/out.wav", "/etc/hostname", "-fw_cfg"})
    EXPECT_FALSE(mentions(argv, gone)) << gone;
  EXPECT_EQ(std::count(argv.begin(), argv.end(), "-S"), 0);
  EXPECT_EQ(std::count(argv.begin(), argv.end(), "-no-shutdown"), 0);
  EXPECT_EQ(std::count(argv.begin(), argv.end(), "-mon"), 0);
  // The machine and the devices, at the same addresses.
  EXPECT_EQ(value_after(argv, "-machine"), "pc-i440fx-10.0,usb=off,dump-guest-core=off");
  EXPECT_EQ(value_after(argv, "-numa"), "node,nodeid=0,cpus=0-1,memdev=ram-node0");
  EXPECT_EQ(value_after(argv, "-kernel"), "/img/vmlinuz");
  EXPECT_EQ(value_after(argv, "-chardev"), "null,id=charmonitor");
  EXPECT_EQ(value_after(argv, "-chardev", 1), "null,id=charserial0");
  auto storage = nlohmann::json::parse(value_after(argv, "-blockdev"));
  EXPECT_EQ(storage, nlohmann::json({{"driver", "null-co"}, {"node-name", "libvirt-1-storage"}}));
  auto format = nlohmann::json::parse(value_after(argv, "-blockdev", 1));
  EXPECT_EQ(format["driver"], "raw");
  EXPECT_EQ(format["file"], "libvirt-1-storage");
  auto nic = nlohmann::json::parse(value_after(argv, "-device", 1));
  EXPECT_EQ(nic["driver"], "virtio-net-pci");
  EXPECT_EQ(nic["addr"], "0x2");
  EXPECT_FALSE(nic.contains("netdev"));
  auto rng = nlohmann::json::parse(value_after(argv, "-object", 1));
  EXPECT_EQ(rng, nlohmann::json({{"qom-type", "rng-builtin"}, {"id", "objrng0"}}));
  EXPECT_EQ(nlohmann::json::parse(value_after(argv, "-audiodev")),
            nlohmann::json({{"id", "audio1"}, {"driver", "none"}}));
  auto cluster = nlohmann::json::parse(value_after(argv, "-object", 3));
  EXPECT_EQ(cluster["node"], 1);
  auto secret = nlohmann::json::parse(value_after(argv, "-object", 2));
  EXPECT_EQ(secret["file"], "/etc/aggvm/cluster.key");  // the worker host's own file
}

TEST(QemuArgv, WorkerRefusesWhatItDoesNotKnow) {
  auto with = [](std::vector<std::string> extra) {
    auto argv = kLibvirtArgv;
    argv.insert(argv.end(), extra.begin(), extra.end());
    try {
      worker_command(argv, "/opt/q", two_hosts(), 1, "/k");
    } catch (const DriverError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_NE(with({"-virtfs", "local,path=/etc"}).find("option '-virtfs'"), std::string::npos);
  EXPECT_NE(with({"-object", R"({"qom-type":"memory-backend-file","id":"m","mem-path":"/dev/shm/x"})"})
                .find("qom-type 'memory-backend-file'"),
            std::string::npos);
  EXPECT_NE(with({"-object", "{not json"}).find("not a JSON object"), std::string::npos);
  EXPECT_NE(with({"-chardev"}).find("has no argument"), std::string::npos);
  EXPECT_NE(with({"-smbios", "file=/etc/shadow"}).find("reads a file"), std::string::npos);
  EXPECT_THROW(worker_command(kLibvirtArgv, "/opt/q", two_hosts(), 0, "/k"), DriverError);
  EXPECT_THROW(worker_command(kLibvirtArgv, "/opt/q", two_hosts(), 2, "/k"), DriverError);
}

TEST(QemuArgv, AcceleratorMustBeKvmOrTcg) {
  auto argv = kLibvirtArgv;
  *std::find(argv.begin(), argv.end(), "tcg") = "kvm";
  EXPECT_EQ(value_after(head_command(argv, "/q", two_hosts()), "-accel"),
            "kvm,kernel-irqchip=off,aggregate=aggvm0");
  *std::find(argv.begin(), argv.end(), "kvm") = "xen";
  EXPECT_THROW(head_command(argv, "/q", two_hosts()), DriverError);
}

}  // namespace
}  // namespace aggvm::libvirt
