// dsm-probe: one node of a small DSM cluster that plays one failure
// scenario through the C API and prints "result:" lines for
// failure_test.cc.  The test orchestrates the nodes with signals (SIGSTOP,
// SIGKILL) and by creating files in a shared directory ("go" files).
//
//   dsm-probe NODE ADDRESSES SECRET_FILE DIR TIMEOUT_MS SCENARIO
//
// Scenarios (node 0 plays the part under test, the others serve it):
//   stop         every node: ready, wait for DIR/go, aggvm_dsm_stop (timed)
//   call-stop    node 0 calls node 1, which never answers; node 0 stops
//   call-fail    node 0 calls node 1, which never answers; the test kills node 2
//   call-cancel  node 0 calls node 1; aggvm_dsm_cancel_calls ends it
//   call-leave   node 0 calls node 1; node 1 stops (says goodbye)
//   poison       node 0 shares a page of node 1 and faults on others; the
//                test stops then kills node 1; node 0 poisons what it lost
//   idle         every node: ready, wait for DIR/go, then send nothing and
//                wait for a failure (the test freezes one node)
#include <execinfo.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "aggvm/dsm.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
constexpr uint64_t kPage = AGGVM_DSM_PAGE_SIZE;
constexpr uint64_t kPages = 256;  // region: node i homes slice i
constexpr uint16_t kSilentChannel = 1;

std::atomic<int> g_failure_node{-2};  // what on_failure reported
std::atomic<int> g_failure_err{0};

[[noreturn]] void die(const std::string& msg) {
  std::printf("dsm-probe: %s\n", msg.c_str());
  std::fflush(stdout);
  _exit(2);
}

long ms_since(Clock::time_point t0) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
}

void wait_for_file(const std::string& path) {
  while (access(path.c_str(), F_OK) != 0) std::this_thread::sleep_for(5ms);
}

// The message of a failed call, released; msg is reset for the next call.
std::string take(char*& msg) {
  std::string s = msg ? msg : "";
  aggvm_dsm_free_error(msg);
  msg = nullptr;
  return s;
}

struct Node {
  int self = 0;
  uint16_t n = 0;
  std::byte* base = nullptr;
  AggvmDsm* dsm = nullptr;
  std::string dir;

  std::byte* page(uint64_t i) const { return base + i * kPage; }
  // Page k of the slice homed on node.
  uint64_t homed_on(int node, uint64_t k) const { return node * (kPages / n) + k; }
};

Node start(int self, const std::string& addresses, const std::string& secret_file, uint32_t timeout_ms) {
  Node nd;
  nd.self = self;
  std::vector<std::string> addrs;
  for (size_t pos = 0;;) {
    const size_t comma = addresses.find(',', pos);
    addrs.push_back(addresses.substr(pos, comma - pos));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  nd.n = static_cast<uint16_t>(addrs.size());
  std::ifstream f(secret_file, std::ios::binary);
  const std::string secret((std::istreambuf_iterator<char>(f)), {});
  nd.base = static_cast<std::byte*>(
      mmap(nullptr, kPages * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (nd.base == MAP_FAILED) die("mmap failed");
  std::vector<const char*> cs;
  for (const auto& a : addrs) cs.push_back(a.c_str());
  std::vector<AggvmDsmHomeRange> homes;
  const uint64_t slice = kPages / nd.n * kPage;
  for (uint16_t i = 0; i < nd.n; ++i) homes.push_back({i * slice, (i + 1u == nd.n) ? kPages * kPage : (i + 1) * slice, i});
  AggvmDsmOptions o{};
  o.self = static_cast<uint16_t>(self);
  o.n_nodes = nd.n;
  o.addresses = cs.data();
  o.secret = reinterpret_cast<const uint8_t*>(secret.data());
  o.secret_len = secret.size();
  o.cluster_name = "probe";
  o.home_ranges = homes.data();
  o.n_home_ranges = homes.size();
  o.timeout_ms = timeout_ms;
  o.on_failure = [](void*, int err, int node, const char* message) {
    g_failure_err = err;
    g_failure_node = node;
    std::printf("dsm-probe: on_failure err=%d node=%d: %s\n", err, node, message);
    std::fflush(stdout);
  };
  char* err = nullptr;
  nd.dsm = aggvm_dsm_new(&o, &err);
  if (!nd.dsm) die("new: " + take(err));
  // Node 1 takes calls on a channel and never answers them.
  if (aggvm_dsm_register_call(nd.dsm, kSilentChannel, [](void*, uint16_t, uint64_t, const void*, size_t) {},
                              nullptr, &err) != 0)
    die("register_call: " + take(err));
  if (aggvm_dsm_add_region(nd.dsm, "ram", 0, nd.base, kPages * kPage, &err) != 0) die("add_region: " + take(err));
  if (aggvm_dsm_start(nd.dsm, &err) != 0) die("start: " + take(err));
  return nd;
}

void ready(const Node& nd) {
  std::printf("dsm-probe: node %d ready\n", nd.self);
  std::fflush(stdout);
}

// ---- stop ---------------------------------------------------------------

int scenario_stop(Node& nd) {
  ready(nd);
  wait_for_file(nd.dir + "/go");
  const auto t0 = Clock::now();
  char* err = nullptr;
  const int rc = aggvm_dsm_stop(nd.dsm, &err);
  std::printf("result: stop node=%d rc=%d ms=%ld failed_node=%d on_failure_node=%d msg=%s\n", nd.self, rc,
              ms_since(t0), aggvm_dsm_failed_node(nd.dsm), g_failure_node.load(), take(err).c_str());
  std::fflush(stdout);
  _exit(0);  // no aggvm_dsm_free: a stopped peer may still be connected
}

// ---- a frozen peer, no traffic -------------------------------------------

// No page is touched and no call made: only heartbeats can tell that a
// peer stopped answering.
int scenario_idle(Node& nd, uint32_t timeout_ms) {
  ready(nd);
  wait_for_file(nd.dir + "/go");
  const auto t0 = Clock::now();
  while (g_failure_node.load() == -2 && ms_since(t0) < 4L * timeout_ms) std::this_thread::sleep_for(5ms);
  std::printf("result: idle node=%d ms=%ld failed_node=%d on_failure_node=%d on_failure_err=%d\n", nd.self,
              ms_since(t0), aggvm_dsm_failed_node(nd.dsm), g_failure_node.load(), g_failure_err.load());
  std::fflush(stdout);
  // The other nodes time the frozen peer out a few milliseconds later;
  // vanishing at once would have them blame this node's closed connection
  // instead (seen in CI).  A real node does not vanish the instant it
  // notices a failure either.
  std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms));
  _exit(0);
}

// ---- calls cancelled ----------------------------------------------------

int scenario_call(Node& nd, const std::string& how) {
  ready(nd);
  if (nd.self != 0) {
    if (how == "call-leave" && nd.self == 1) {
      wait_for_file(nd.dir + "/go");
      std::this_thread::sleep_for(300ms);  // node 0's call is in flight by now
      char* err = nullptr;
      const int rc = aggvm_dsm_stop(nd.dsm, &err);  // the barrier completes when node 0 stops too
      std::printf("dsm-probe: node 1 stop rc=%d %s\n", rc, take(err).c_str());
    } else if (how == "call-stop" || how == "call-cancel" || how == "call-leave") {
      wait_for_file(nd.dir + "/go");
      std::this_thread::sleep_for(1500ms);  // after node 0's stop began
      char* err = nullptr;
      const int rc = aggvm_dsm_stop(nd.dsm, &err);
      std::printf("dsm-probe: node %d stop rc=%d %s\n", nd.self, rc, take(err).c_str());
    } else {
      pause();  // call-fail: killed by the test
    }
    std::fflush(stdout);
    _exit(0);
  }
  wait_for_file(nd.dir + "/go");
  std::atomic<int> rc{1};
  std::atomic<long> took{0};
  std::string msg;
  const auto t0 = Clock::now();
  std::thread caller([&] {
    char reply[16];
    size_t len = 0;
    char* err = nullptr;
    const int r = aggvm_dsm_call(nd.dsm, 1, kSilentChannel, "ping", 4, reply, sizeof reply, &len, 5000, &err);
    took = ms_since(t0);
    msg = take(err);
    rc = r;
  });
  std::this_thread::sleep_for(300ms);
  if (how == "call-stop") {
    std::thread stopper([&] {
      char* err = nullptr;
      const int r = aggvm_dsm_stop(nd.dsm, &err);
      std::printf("dsm-probe: node 0 stop rc=%d %s\n", r, take(err).c_str());
      std::fflush(stdout);
    });
    stopper.detach();
  } else if (how == "call-cancel") {
    if (aggvm_dsm_cancel_calls(nd.dsm, EINTR) != 0) die("cancel_calls failed");
  }  // call-fail: the test kills node 2 now; call-leave: node 1 says goodbye
  caller.join();
  // A call made now: a stopped or failed node, or a peer leaving, refuses it at once.
  const auto t1 = Clock::now();
  char reply[16];
  size_t len = 0;
  char* err = nullptr;
  const int again = how == "call-cancel" ? 0
                                         : aggvm_dsm_call(nd.dsm, 1, kSilentChannel, "ping", 4, reply, sizeof reply,
                                                          &len, 5000, &err);
  const long again_ms = ms_since(t1);
  const std::string again_msg = take(err);
  std::printf("result: %s rc=%d ms=%ld msg=%s\n", how.c_str(), rc.load(), took.load(), msg.c_str());
  std::printf("result: %s-again rc=%d ms=%ld msg=%s\n", how.c_str(), again, again_ms, again_msg.c_str());
  std::printf("result: %s failed_node=%d on_failure_node=%d on_failure_err=%d\n", how.c_str(),
              aggvm_dsm_failed_node(nd.dsm), g_failure_node.load(), g_failure_err.load());
  std::fflush(stdout);
  if (how == "call-leave" || how == "call-cancel") {
    // Node 1 stops 300 ms (call-leave) or 1500 ms (call-cancel) after go.
    std::this_thread::sleep_for(how == "call-leave" ? 100ms : 1500ms);
    const int r = aggvm_dsm_stop(nd.dsm, &err);
    std::printf("dsm-probe: node 0 stop rc=%d %s\n", r, take(err).c_str());
  } else if (how == "call-stop") {
    std::this_thread::sleep_for(3000ms);
  }
  std::fflush(stdout);
  _exit(0);
}

// ---- poison -------------------------------------------------------------

// volatile: the stores around the access must not be merged away.
thread_local sigjmp_buf* volatile t_jump = nullptr;
thread_local volatile int t_code = 0;

void on_sigbus(int, siginfo_t* info, void*) {
  if (!t_jump) {
    signal(SIGBUS, SIG_DFL);
    return;  // re-raised by the access, now fatal
  }
  t_code = info->si_code;
  siglongjmp(*t_jump, 1);
}

// Reads the first byte of p: "value=N", or "sigbus code=C" when it faults.
std::string guarded_read(const std::byte* p) {
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1) == 0) {
    t_jump = &jump;
    const int v = static_cast<int>(*reinterpret_cast<const volatile uint8_t*>(p));
    t_jump = nullptr;
    return "value=" + std::to_string(v);
  }
  t_jump = nullptr;
  // BUS_MCEERR_AR on kernels built with CONFIG_MEMORY_FAILURE, else BUS_ADRERR.
  const int code = t_code;
  return std::string("sigbus code=") + (code == BUS_MCEERR_AR ? "BUS_MCEERR_AR"
                                        : code == BUS_ADRERR  ? "BUS_ADRERR"
                                                              : std::to_string(code));
}

int scenario_poison(Node& nd) {
  const uint64_t shared = nd.homed_on(1, 0), lost = nd.homed_on(1, 1), untouched = nd.homed_on(1, 2);
  const uint64_t shared_later = nd.homed_on(1, 3);  // written only after the poison
  const uint64_t home_zero = nd.homed_on(0, 5);
  const uint64_t peeked = nd.homed_on(1, 4);  // a snapshot here (aggvm_dsm_peek)
  if (nd.self == 1) {
    std::memset(nd.page(peeked), 0x8d, kPage);
    std::memset(nd.page(shared), 0x5a, kPage);
    std::memset(nd.page(lost), 0x6b, kPage);
    std::memset(nd.page(shared_later), 0x7c, kPage);
    ready(nd);  // the test then creates DIR/written for node 0
    pause();  // stopped, then killed, by the test
    _exit(0);
  }
  // Node 0: a Shared copy of a page node 1 wrote (wait until it has).
  wait_for_file(nd.dir + "/written");
  const int first = static_cast<int>(*reinterpret_cast<volatile uint8_t*>(nd.page(shared)));
  const int later_first = static_cast<int>(*reinterpret_cast<volatile uint8_t*>(nd.page(shared_later)));
  char* peek_err = nullptr;
  uint64_t asked = 0;
  if (aggvm_dsm_peek(nd.dsm, peeked * kPage, kPage, &asked, &peek_err) != 0 || asked != 1)
    die("peek: asked " + std::to_string(asked) + ": " + take(peek_err));
  ready(nd);
  wait_for_file(nd.dir + "/go");  // node 1 is SIGSTOPped now
  std::atomic<bool> reader_done{false}, writer_done{false};
  std::string reader_saw;
  std::thread reader([&] {
    reader_saw = guarded_read(nd.page(lost));  // blocks: its home is stopped
    reader_done = true;
  });
  std::thread writer([&] {
    *reinterpret_cast<volatile uint8_t*>(nd.page(shared)) = 0x11;  // blocks: upgrade needs node 1
    writer_done = true;
  });
  std::this_thread::sleep_for(300ms);
  std::printf("dsm-probe: node 0 blocked reader_done=%d writer_done=%d\n", reader_done.load(), writer_done.load());
  std::fflush(stdout);
  char* err = nullptr;
  const int failed = aggvm_dsm_wait_failure(nd.dsm, 20000, &err);  // the test kills node 1
  std::printf("dsm-probe: node 0 failure %d: %s\n", failed, take(err).c_str());
  const auto t0 = Clock::now();
  const int rc = aggvm_dsm_poison_lost(nd.dsm, &err);
  const std::string poison_msg = take(err);
  std::printf("result: poison rc=%d ms=%ld failed_node=%d msg=%s\n", rc, ms_since(t0), aggvm_dsm_failed_node(nd.dsm),
              poison_msg.c_str());
  std::fflush(stdout);
  if (rc != 0) _exit(rc == -ENOTSUP ? 4 : 1);
  const auto deadline = Clock::now() + 3s;
  while (!reader_done && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  std::printf("result: reader done=%d saw=%s\n", reader_done.load(), reader_done ? reader_saw.c_str() : "-");
  // A disk write from lost memory must fail, never write zeros.
  const std::string file = nd.dir + "/pwrite-" + std::to_string(nd.self);
  const int fd = open(file.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0600);
  if (fd < 0) die("open " + file);
  for (uint64_t p : {lost, untouched, home_zero}) {
    errno = 0;
    const ssize_t w = pwrite(fd, nd.page(p), kPage, 0);
    std::printf("result: pwrite page=%lu rc=%zd errno=%s\n", static_cast<unsigned long>(p), w,
                w < 0 ? strerrorname_np(errno) : "0");
  }
  std::printf("result: file size=%ld\n", static_cast<long>(lseek(fd, 0, SEEK_END)));
  std::printf("result: read untouched %s\n", guarded_read(nd.page(untouched)).c_str());
  std::printf("result: shared first=%d now %s\n", first, guarded_read(nd.page(shared)).c_str());
  std::this_thread::sleep_for(300ms);
  std::printf("result: writer done=%d\n", writer_done.load());
  // A thread that writes a Shared page only now, after the poison (a vCPU
  // still running until its stop), must not block for good either.
  std::atomic<bool> later_done{false};
  std::thread later([&] {
    *reinterpret_cast<volatile uint8_t*>(nd.page(shared_later)) = 0x22;
    later_done = true;
  });
  const auto later_deadline = Clock::now() + 3s;
  while (!later_done && Clock::now() < later_deadline) std::this_thread::sleep_for(5ms);
  std::printf("result: late writer first=%d done=%d\n", later_first, later_done.load());
  // A snapshot is kept, not poisoned, and a writer of it is let go too.
  std::printf("result: snapshot %s\n", guarded_read(nd.page(peeked)).c_str());
  std::atomic<bool> snapshot_written{false};
  std::thread snapshot_writer([&] {
    *reinterpret_cast<volatile uint8_t*>(nd.page(peeked)) = 0x33;
    snapshot_written = true;
  });
  const auto snapshot_deadline = Clock::now() + 3s;
  while (!snapshot_written && Clock::now() < snapshot_deadline) std::this_thread::sleep_for(5ms);
  std::printf("result: snapshot writer done=%d\n", snapshot_written.load());
  std::fflush(stdout);
  _exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) die("usage: dsm-probe NODE ADDRESSES SECRET_FILE DIR TIMEOUT_MS SCENARIO");
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  struct sigaction sa{};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
  signal(SIGABRT, [](int) {  // a backtrace in the log, for the test's report
    void* frames[64];
    backtrace_symbols_fd(frames, backtrace(frames, 64), STDOUT_FILENO);
    _exit(134);
  });
  const std::string scenario = argv[6];
  Node nd = start(std::atoi(argv[1]), argv[2], argv[3], static_cast<uint32_t>(std::atoi(argv[5])));
  nd.dir = argv[4];
  if (scenario == "stop") return scenario_stop(nd);
  if (scenario.rfind("call-", 0) == 0) return scenario_call(nd, scenario);
  if (scenario == "poison") return scenario_poison(nd);
  if (scenario == "idle") return scenario_idle(nd, static_cast<uint32_t>(std::atoi(argv[5])));
  die("unknown scenario " + scenario);
}
