// aggvm-noded's channel and supervision, on loopback: authentication both
// ways, a wrong secret, a tampered frame, a worker's exit reported, and a
// closed lease stopping the worker.
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <sstream>
#include <string>
#include <vector>
#include <thread>

#include "channel.h"
#include "error.h"
#include "node_daemon.h"
#include "transport/auth.h"

namespace aggvm::libvirt {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/aggvm-noded-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string write_key(const fs::path& dir, const std::string& name, char fill, mode_t mode = 0600) {
  const fs::path p = dir / name;
  std::ofstream(p) << std::string(32, fill);
  chmod(p.c_str(), mode);
  return p;
}

std::pair<Fd, Fd> socket_pair() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) fail_errno("socketpair");
  return {Fd(sv[0]), Fd(sv[1])};
}

std::string auth_error(Channel& ch, const dsm::ClusterKey& key) {
  try {
    ch.authenticate(key, Clock::now() + 2s);
  } catch (const DriverError& e) {
    return e.what();
  }
  return "";
}

TEST(NodedChannel, SameSecretAuthenticatesAndSeals) {
  TempDir dir;
  auto key = load_cluster_key(write_key(dir.path(), "k", 'a'));
  auto [a, b] = socket_pair();
  Channel head(std::move(a), Channel::Side::kHead), daemon(std::move(b), Channel::Side::kDaemon);
  auto d = std::async(std::launch::async, [&] { return auth_error(daemon, *key); });
  EXPECT_EQ(auth_error(head, *key), "");
  EXPECT_EQ(d.get(), "");
  noded::HeadMessage m;
  m.mutable_start()->set_domain("g1");
  head.send(m);
  auto got = daemon.receive_head(Clock::now() + 2s);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->start().domain(), "g1");
}

TEST(NodedChannel, WrongSecretIsRefusedBothWays) {
  TempDir dir;
  auto head_key = load_cluster_key(write_key(dir.path(), "h", 'a'));
  auto daemon_key = load_cluster_key(write_key(dir.path(), "d", 'b'));
  auto [a, b] = socket_pair();
  Channel head(std::move(a), Channel::Side::kHead), daemon(std::move(b), Channel::Side::kDaemon);
  auto d = std::async(std::launch::async, [&] { return auth_error(daemon, *daemon_key); });
  EXPECT_NE(auth_error(head, *head_key).find("refused the cluster secret"), std::string::npos);
  EXPECT_NE(d.get().find("could not prove the cluster secret"), std::string::npos);
}

TEST(NodedChannel, TamperedFrameIsRejected) {
  TempDir dir;
  auto key = load_cluster_key(write_key(dir.path(), "k", 'a'));
  auto [a, b] = socket_pair();
  const int raw = a.get();
  Channel head(std::move(a), Channel::Side::kHead), daemon(std::move(b), Channel::Side::kDaemon);
  auto d = std::async(std::launch::async, [&] { return auth_error(daemon, *key); });
  ASSERT_EQ(auth_error(head, *key), "");
  ASSERT_EQ(d.get(), "");
  // A frame that claims the sealed magic but carries a forged tag.
  std::string frame(32, '\0');
  frame.replace(0, 8, "AGGVMND1");
  frame[11] = 4;  // 4 bytes of payload
  frame += std::string(4 + 16, 'x');
  write_all(raw, frame.data(), frame.size());
  try {
    daemon.receive_head(Clock::now() + 2s);
    ADD_FAILURE() << "a forged frame was accepted";
  } catch (const DriverError& e) {
    EXPECT_NE(std::string(e.what()).find("failed authentication"), std::string::npos) << e.what();
  }
}

TEST(NodedChannel, GarbageBeforeAuthenticationIsRefused) {
  TempDir dir;
  auto key = load_cluster_key(write_key(dir.path(), "k", 'a'));
  auto [a, b] = socket_pair();
  Channel daemon(std::move(b), Channel::Side::kDaemon);
  const std::string junk = "\xff\xff\xff\xffGET / HTTP/1.0\r\n\r\n";
  write_all(a.get(), junk.data(), junk.size());
  EXPECT_NE(auth_error(daemon, *key).find("malformed handshake"), std::string::npos);
}

TEST(NodedChannel, SilentPeerTimesOut) {
  TempDir dir;
  auto key = load_cluster_key(write_key(dir.path(), "k", 'a'));
  auto [a, b] = socket_pair();
  Channel head(std::move(a), Channel::Side::kHead);
  const auto t0 = Clock::now();
  try {
    head.authenticate(*key, Clock::now() + 300ms);
    ADD_FAILURE() << "authenticated against a silent peer";
  } catch (const DriverError& e) {
    EXPECT_NE(std::string(e.what()).find("nothing in time"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - t0, 2s);
}

TEST(NodedChannel, SecretFileMustBePrivate) {
  TempDir dir;
  try {
    load_cluster_key(write_key(dir.path(), "open", 'a', 0644));
    ADD_FAILURE() << "a world-readable secret was accepted";
  } catch (const DriverError& e) {
    EXPECT_NE(std::string(e.what()).find("make it 0600"), std::string::npos) << e.what();
  }
  const auto shorter = dir.path() / "short";
  std::ofstream(shorter) << "0123456789";
  chmod(shorter.c_str(), 0600);
  EXPECT_THROW(load_cluster_key(shorter), DriverError);
}

// A daemon on loopback with a stand-in QEMU (a shell script), so that the
// supervision is tested without a guest.
class NodedDaemon : public ::testing::Test {
 protected:
  void start_daemon(const std::string& qemu_script) {
    qemu_ = dir_.path() / "qemu";
    std::ofstream(qemu_) << "#!/bin/sh\n" << qemu_script << "\n";
    chmod(qemu_.c_str(), 0755);
    key_file_ = write_key(dir_.path(), "cluster.key", 'k');
    std::mt19937 rng(std::random_device{}());
    port_ = static_cast<uint16_t>(20000 + rng() % 20000);
    DaemonConfig cfg;
    cfg.listen_address = "127.0.0.1";
    cfg.port = port_;
    cfg.secret_file = key_file_;
    cfg.qemu = qemu_;
    cfg.log_dir = dir_.path();
    cfg.stop_timeout = 500ms;
    cfg.handshake_timeout = handshake_timeout_;
    cfg.max_connections = max_connections_;
    daemon_ = std::make_unique<NodeDaemon>(cfg);
    stop_ = Fd(eventfd(0, EFD_CLOEXEC));
    thread_ = std::thread([this] { daemon_->serve(stop_.get()); });
  }

  void TearDown() override {
    if (thread_.joinable()) {
      const uint64_t one = 1;
      ASSERT_EQ(write(stop_.get(), &one, sizeof one), 8);
      thread_.join();
    }
  }

  std::string domain_xml() const {
    return "<domain><name>g1</name><vcpu>2</vcpu><metadata><aggvm:cluster "
           "xmlns:aggvm='https://aggvm.dev/xmlns/libvirt/1'><aggvm:secret file='/k'/>"
           "<aggvm:host id='0' address='127.0.0.2' cells='0'/><aggvm:host id='1' address='127.0.0.1' "
           "cells='1'/></aggvm:cluster></metadata><cpu><numa><cell id='0' cpus='0'/><cell id='1' cpus='1'/>"
           "</numa></cpu></domain>";
  }

  Channel start_worker(const std::string& xml) {
    auto key = load_cluster_key(key_file_);
    Channel ch(connect_to("127.0.0.1", port_, 2s), Channel::Side::kHead);
    ch.authenticate(*key, Clock::now() + 2s);
    noded::HeadMessage m;
    auto* s = m.mutable_start();
    s->set_domain("g1");
    s->set_node(1);
    for (const char* a : {"/usr/bin/aggvm-qemu", "-name", "guest=g1", "-accel", "tcg", "-m", "64"})
      s->add_head_argv(a);
    s->set_domain_xml(xml);
    ch.send(m);
    return ch;
  }
  Channel start_worker() { return start_worker(domain_xml()); }

  std::chrono::milliseconds handshake_timeout_{5000};
  unsigned max_connections_ = 64;
  TempDir dir_;
  fs::path qemu_;
  std::string key_file_;
  uint16_t port_ = 0;
  std::unique_ptr<NodeDaemon> daemon_;
  Fd stop_;
  std::thread thread_;
};

TEST_F(NodedDaemon, ReportsTheWorkersExit) {
  start_daemon("echo \"worker args: $*\" >&2; exit 3");
  Channel ch = start_worker();
  auto started = ch.receive_daemon(Clock::now() + 5s);
  ASSERT_TRUE(started && started->has_started()) << (started ? started->DebugString() : "closed");
  auto exited = ch.receive_daemon(Clock::now() + 5s);
  ASSERT_TRUE(exited && exited->has_exited());
  EXPECT_EQ(exited->exited().exit_status(), 3);
  const std::string& tail = exited->exited().stderr_tail();
  EXPECT_NE(tail.find("aggregate=aggvm0"), std::string::npos) << tail;
  EXPECT_NE(tail.find("\"node\":1"), std::string::npos) << tail;
  EXPECT_EQ(tail.find("fd="), std::string::npos) << tail;
}

TEST_F(NodedDaemon, ClosedLeaseStopsTheWorker) {
  start_daemon("exec sleep 600");
  pid_t pid = 0;
  {
    Channel ch = start_worker();
    auto started = ch.receive_daemon(Clock::now() + 5s);
    ASSERT_TRUE(started && started->has_started());
    pid = static_cast<pid_t>(started->started().pid());
    ASSERT_EQ(kill(pid, 0), 0);
  }  // the head's side closes: node 0 ended
  const auto deadline = Clock::now() + 5s;
  while (kill(pid, 0) == 0 && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
  EXPECT_NE(kill(pid, 0), 0) << "worker " << pid << " still runs after its lease closed";
}

TEST_F(NodedDaemon, RefusesANodeOfAnotherHost) {
  start_daemon("exit 0");
  std::string xml = domain_xml();
  xml.replace(xml.find("127.0.0.1"), 9, "127.0.0.9");
  Channel ch = start_worker(xml);
  auto answer = ch.receive_daemon(Clock::now() + 5s);
  ASSERT_TRUE(answer && answer->has_refusal());
  EXPECT_NE(answer->refusal().reason().find("listens on 127.0.0.1"), std::string::npos)
      << answer->refusal().reason();
}

TEST_F(NodedDaemon, WrongSecretStartsNothing) {
  start_daemon("touch " + (dir_.path() / "ran").string());
  auto wrong = load_cluster_key(write_key(dir_.path(), "wrong.key", 'w'));
  Channel ch(connect_to("127.0.0.1", port_, 2s), Channel::Side::kHead);
  EXPECT_NE(auth_error(ch, *wrong).find("refused the cluster secret"), std::string::npos);
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(fs::exists(dir_.path() / "ran"));
}

// The listening sockets of this process on `port`, as /proc/net/tcp shows
// them: "local address:port" in hex (state 0A is LISTEN).
std::vector<std::string> listeners_on(uint16_t port) {
  std::ifstream tcp("/proc/net/tcp"), tcp6("/proc/net/tcp6");
  std::vector<std::string> out;
  for (std::ifstream* f : {&tcp, &tcp6}) {
    std::string line;
    while (std::getline(*f, line)) {
      std::istringstream in(line);
      std::string sl, local, remote, state;
      in >> sl >> local >> remote >> state;
      const auto colon = local.rfind(':');
      if (state == "0A" && colon != std::string::npos &&
          std::stoul(local.substr(colon + 1), nullptr, 16) == port)
        out.push_back(local);
    }
  }
  return out;
}

TEST_F(NodedDaemon, ListensOnlyOnItsAddress) {
  start_daemon("exit 0");
  // 127.0.0.1 is 0100007F in /proc/net/tcp; nothing on 0.0.0.0 or [::].
  EXPECT_EQ(listeners_on(port_), std::vector<std::string>{fmt::format("0100007F:{:04X}", port_)});
}

TEST_F(NodedDaemon, IdleConnectionsAreBoundedAndTimedOut) {
  handshake_timeout_ = 300ms;
  max_connections_ = 2;
  start_daemon("exit 0");
  // Two connections that never answer the greeting take the daemon's slots...
  std::vector<Fd> idle;
  for (int i = 0; i < 2; ++i) idle.push_back(connect_to("127.0.0.1", port_, 2s));
  std::this_thread::sleep_for(100ms);
  // ... a third is closed at once, without a greeting ...
  Fd third = connect_to("127.0.0.1", port_, 2s);
  char buf[64];
  EXPECT_FALSE(read_exact(third.get(), buf, 1, Clock::now() + 2s)) << "a connection over the cap was served";
  // ... and the idle ones are dropped after the handshake timeout, which
  // frees the slots for a head that authenticates.
  for (auto& fd : idle) {
    uint32_t len;
    ASSERT_TRUE(read_exact(fd.get(), &len, 4, Clock::now() + 2s));  // the greeting's length
    std::string rest(ntohl(len), '\0');
    ASSERT_TRUE(read_exact(fd.get(), rest.data(), rest.size(), Clock::now() + 2s));
    EXPECT_FALSE(read_exact(fd.get(), buf, 1, Clock::now() + 3s)) << "an idle connection was kept";
  }
  std::this_thread::sleep_for(200ms);  // the sessions have ended
  Channel ch = start_worker();
  auto started = ch.receive_daemon(Clock::now() + 5s);
  EXPECT_TRUE(started && started->has_started());
}

}  // namespace
}  // namespace aggvm::libvirt
