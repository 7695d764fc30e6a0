// dsm-ucx-floor: the raw fabric floor for make bench-dsm.  A ping-pong
// directly on UCP (no libaggvm-dsm), between two harness hosts, over the
// same API the DSM's fabric uses (client-server endpoints, stream send and
// receive) and the transports named by UCX_TLS.  Each measured round trip
// is one message of each --sizes size each way, with the worker polled
// (yielding the CPU when idle, never sleeping), so nothing but UCX, the
// wire and the scheduler is in it.
//
//   dsm-ucx-floor server --listen IP:PORT [--sizes 64,4096] [--iterations N] [--cpu C]
//   dsm-ucx-floor client --connect IP:PORT [--sizes 64,4096] [--iterations N] [--cpu C]
//   dsm-ucx-floor server|client ... --bulk-mib M
//
// With --bulk-mib, instead of the ping-pong the client streams M MiB in
// 64 KiB sends and the server answers one byte once it has them all: the
// fabric's bulk throughput, for make bench-migration's evacuation figure.
// The client then prints "ucx-floor: bulk_mib=M chunk=65536 tls=T mib_s=..".
//
// The server prints "ucx-floor: listening" once clients may connect.  The
// client prints per size
//   ucx-floor: size=S iterations=N tls=T rtt_p50_us=.. rtt_p99_us=..
//              one_way_p50_us=.. one_way_p99_us=.. client_yields=..
// (one line; one-way = rtt / 2; client_yields: waits that yielded), and
// ucp_ep_print_info's lanes on stderr.  Exit 0 ok, 1 a UCX error, 2 bad usage.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>

#include <cerrno>


#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <ucp/api/ucp.h>

#include "bench_floor.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kWarmup = 200;  // round trips before measuring (wire-up, lazy lanes)

struct UcxError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check(ucs_status_t s, const char* what) {
  if (s != UCS_OK) throw UcxError(std::string(what) + ": " + ucs_status_string(s));
}

sockaddr_in parse_addr(const std::string& hostport) {
  const auto colon = hostport.rfind(':');
  if (colon == std::string::npos) throw std::invalid_argument("expected IP:PORT, got " + hostport);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::stoul(hostport.substr(colon + 1))));
  if (inet_pton(AF_INET, hostport.substr(0, colon).c_str(), &a.sin_addr) != 1)
    throw std::invalid_argument("bad IPv4 address in " + hostport);
  return a;
}

// UCP context and worker, released in reverse order.
class Worker {
 public:
  Worker() {
    ucp_config_t* cfg = nullptr;
    check(ucp_config_read(nullptr, nullptr, &cfg), "ucp_config_read");  // reads UCX_TLS
    ucp_params_t p{};
    p.field_mask = UCP_PARAM_FIELD_FEATURES;
    p.features = UCP_FEATURE_STREAM | UCP_FEATURE_WAKEUP;  // as the DSM's fabric: the same transports
    const ucs_status_t s = ucp_init(&p, cfg, &ctx_);
    ucp_config_release(cfg);
    check(s, "ucp_init");
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    if (ucs_status_t w = ucp_worker_create(ctx_, &wp, &worker_); w != UCS_OK) {
      ucp_cleanup(ctx_);
      check(w, "ucp_worker_create");
    }
  }
  ~Worker() {
    ucp_worker_destroy(worker_);
    ucp_cleanup(ctx_);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ucp_worker_h get() const { return worker_; }

  // Polls until the request (or immediate status) completes; frees it.
  // Spins, and yields the CPU after kSpin polls without progress (a peer
  // descheduled on a shared machine).  It never sleeps on the worker's
  // event fd: over TCP that was seen to miss data already received (each
  // trip then took the 1 ms poll timeout, both ways).
  void wait(ucs_status_ptr_t r, const char* what) {
    if (r == nullptr) return;
    if (UCS_PTR_IS_ERR(r)) check(UCS_PTR_STATUS(r), what);
    ucs_status_t s;
    bool yielded = false;
    for (unsigned idle = 0; (s = ucp_request_check_status(r)) == UCS_INPROGRESS;) {
      if (ucp_worker_progress(worker_) != 0) {
        idle = 0;
      } else if (++idle > kSpin) {
        sched_yield();
        yielded = true;
      }
    }
    yields_ += yielded;
    ucp_request_free(r);
    check(s, what);
  }
  uint64_t yields() const { return yields_; }

 private:
  static constexpr unsigned kSpin = 20000;  // ~1 ms of polls
  ucp_context_h ctx_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  uint64_t yields_ = 0;
};

// One endpoint; a peer that goes away is an error only while we still talk.
class Endpoint {
 public:
  Endpoint(Worker& w, const ucp_ep_params_t& base) : w_(w) {
    ucp_ep_params_t p = base;
    p.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p.err_handler.cb = [](void* arg, ucp_ep_h, ucs_status_t s) { static_cast<Endpoint*>(arg)->error_ = s; };
    p.err_handler.arg = this;
    check(ucp_ep_create(w.get(), &p, &ep_), "ucp_ep_create");
  }
  ~Endpoint() {
    // Force: the peer may be gone already, and a flush would wait for it.
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t r = ucp_ep_close_nbx(ep_, &p);
    if (r != nullptr && !UCS_PTR_IS_ERR(r)) {
      while (ucp_request_check_status(r) == UCS_INPROGRESS) ucp_worker_progress(w_.get());
      ucp_request_free(r);
    }
  }
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  void send(const void* buf, size_t len) {
    ucp_request_param_t p{};
    w_.wait(ucp_stream_send_nbx(ep_, buf, len, &p), "ucp_stream_send_nbx");
  }
  void recv(void* buf, size_t len) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_STREAM_RECV_FLAG_WAITALL;  // all len bytes, not the first fragment
    size_t got = 0;
    ucs_status_ptr_t r = ucp_stream_recv_nbx(ep_, buf, len, &got, &p);
    w_.wait(r, "ucp_stream_recv_nbx");
  }
  // Flushes what was sent, so the peer sees it before we close.
  void flush() {
    ucp_request_param_t p{};
    w_.wait(ucp_ep_flush_nbx(ep_, &p), "ucp_ep_flush_nbx");
  }
  std::optional<ucs_status_t> error() const { return error_; }
  // The lanes UCX chose (which transport carries the stream), for the log.
  void print_lanes(FILE* f) const { ucp_ep_print_info(ep_, f); }

 private:
  Worker& w_;
  ucp_ep_h ep_ = nullptr;
  std::optional<ucs_status_t> error_;
};

struct Args {
  bool server = false;
  std::string addr;
  std::vector<size_t> sizes{64, 4096};
  size_t iterations = 10000;
  int cpu = -1;  // pin to this CPU: client and server on different cores
  size_t bulk_mib = 0;  // stream this many MiB instead of the ping-pong
};

constexpr size_t kBulkChunk = 64 * 1024;

Args parse_args(int argc, char** argv) {
  if (argc < 2) throw std::invalid_argument("usage: dsm-ucx-floor server|client ...");
  Args a;
  const std::string role = argv[1];
  if (role != "server" && role != "client") throw std::invalid_argument("role must be server or client");
  a.server = role == "server";
  for (int i = 2; i < argc; ++i) {
    const std::string opt = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(opt + " needs a value");
    const std::string val = argv[++i];
    if (opt == (a.server ? "--listen" : "--connect")) {
      a.addr = val;
    } else if (opt == "--cpu") {
      a.cpu = std::stoi(val);
    } else if (opt == "--bulk-mib") {
      a.bulk_mib = std::stoul(val);
    } else if (opt == "--iterations") {
      a.iterations = std::stoul(val);
    } else if (opt == "--sizes") {
      a.sizes.clear();
      for (size_t pos = 0; pos <= val.size();) {
        const size_t comma = std::min(val.find(',', pos), val.size());
        a.sizes.push_back(std::stoul(val.substr(pos, comma - pos)));
        pos = comma + 1;
      }
    } else {
      throw std::invalid_argument("unknown option " + opt);
    }
  }
  if (a.addr.empty()) throw std::invalid_argument(a.server ? "--listen is required" : "--connect is required");
  if (a.iterations == 0) throw std::invalid_argument("--iterations must be positive");
  return a;
}

size_t max_size(const Args& a) {
  size_t m = 1;
  for (size_t s : a.sizes) m = std::max(m, s);
  return m;
}

// A listener that hands over the first connection request it gets.
class Listener {
 public:
  Listener(Worker& w, const sockaddr_in& addr) {
    ucp_listener_params_t lp{};
    lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
    lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
    lp.sockaddr.addrlen = sizeof addr;
    lp.conn_handler.cb = [](ucp_conn_request_h r, void* arg) {
      auto* self = static_cast<Listener*>(arg);
      if (self->request_) {
        (void)ucp_listener_reject(self->listener_, r);  // one client only
      } else {
        self->request_ = r;
      }
    };
    lp.conn_handler.arg = this;
    check(ucp_listener_create(w.get(), &lp, &listener_), "ucp_listener_create");
  }
  ~Listener() { ucp_listener_destroy(listener_); }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  std::optional<ucp_conn_request_h> request() const { return request_; }

 private:
  ucp_listener_h listener_ = nullptr;
  std::optional<ucp_conn_request_h> request_;
};

// Echoes every message of every size back, then waits for the client to go.
int serve(const Args& a) {
  Worker w;
  Listener listener(w, parse_addr(a.addr));
  std::printf("ucx-floor: listening on %s\n", a.addr.c_str());
  std::fflush(stdout);
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (!listener.request()) {
    ucp_worker_progress(w.get());
    if (Clock::now() > deadline) throw UcxError("no client connected within 60 s");
  }
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST;
  ep.conn_request = *listener.request();
  Endpoint e(w, ep);
  if (a.bulk_mib) {
    std::vector<char> chunk(kBulkChunk);
    for (size_t got = 0; got < (a.bulk_mib << 20); got += kBulkChunk) e.recv(chunk.data(), kBulkChunk);
    e.send(chunk.data(), 1);
  }
  std::vector<char> buf(max_size(a));
  for (size_t size : a.bulk_mib ? std::vector<size_t>{} : a.sizes)
    for (size_t i = 0; i < kWarmup + a.iterations; ++i) {
      e.recv(buf.data(), size);
      e.send(buf.data(), size);
    }
  e.flush();
  // The client closes once it has its last echo; wait for that, bounded.
  const auto bye = Clock::now() + std::chrono::seconds(5);
  while (!e.error() && Clock::now() < bye) ucp_worker_progress(w.get());
  return 0;
}

int client(const Args& a) {
  Worker w;
  const sockaddr_in addr = parse_addr(a.addr);
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
  ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
  ep.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
  ep.sockaddr.addrlen = sizeof addr;
  Endpoint e(w, ep);
  const char* tls = std::getenv("UCX_TLS");
  if (a.bulk_mib) {
    std::vector<char> chunk(kBulkChunk, 'b');
    const auto t0 = Clock::now();
    for (size_t sent = 0; sent < (a.bulk_mib << 20); sent += kBulkChunk) e.send(chunk.data(), kBulkChunk);
    e.recv(chunk.data(), 1);  // the server has every byte
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("ucx-floor: bulk_mib=%zu chunk=%zu tls=%s mib_s=%.1f\n", a.bulk_mib, kBulkChunk,
                tls ? tls : "default", static_cast<double>(a.bulk_mib) / s);
    e.flush();
    return 0;
  }
  std::vector<char> out(max_size(a), 'p'), in(max_size(a));
  for (size_t size : a.sizes) {
    std::vector<double> rtt;
    rtt.reserve(a.iterations);
    uint64_t yields_before = 0;
    for (size_t i = 0; i < kWarmup + a.iterations; ++i) {
      out[0] = static_cast<char>(i);
      const auto t0 = Clock::now();
      e.send(out.data(), size);
      e.recv(in.data(), size);
      const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      if (in[0] != out[0]) throw UcxError("echo does not match what was sent");
      if (i + 1 == kWarmup) yields_before = w.yields();
      if (i >= kWarmup) rtt.push_back(us);
      if (i + 1 == kWarmup && size == a.sizes.front()) e.print_lanes(stderr);
    }
    const auto r = aggvm::bench::percentiles(rtt);
    std::printf("ucx-floor: size=%zu iterations=%zu tls=%s rtt_p50_us=%.2f rtt_p99_us=%.2f "
                "one_way_p50_us=%.2f one_way_p99_us=%.2f client_yields=%lu\n",
                size, a.iterations, tls ? tls : "default", r.p50, r.p99, r.p50 / 2, r.p99 / 2,
                static_cast<unsigned long>(w.yields() - yields_before));
    std::fflush(stdout);
  }
  e.flush();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  try {
    a = parse_args(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsm-ucx-floor: %s\n", e.what());
    return 2;
  }
  if (a.cpu >= 0) {
    // A spinning client and server that share a core hand it over only at
    // time-slice ends: that is the scheduler, not the fabric.
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(a.cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
      std::fprintf(stderr, "dsm-ucx-floor: sched_setaffinity(cpu %d): %s\n", a.cpu, std::strerror(errno));
      return 2;
    }
  }
  try {
    return a.server ? serve(a) : client(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsm-ucx-floor: %s\n", e.what());
    return 1;
  }
}
