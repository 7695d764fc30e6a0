#include "transport/fabric.h"

#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>
#include <utility>

#include "log.h"

#include "error.h"
#include "transport/frame_protector.h"

namespace aggvm::dsm {

namespace {

constexpr uint32_t kHandshakeMaxPayload = 1024;

void check(ucs_status_t status, const char* what) {
  if (status != UCS_OK) fail(EIO, "{}: {}", what, ucs_status_string(status));
}

sockaddr_storage resolve(const std::string& address) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
    fail(EINVAL, "address '{}' is not host:port", address);
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port = address.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0)
    fail(EINVAL, "cannot resolve '{}': {}", address, gai_strerror(rc));
  sockaddr_storage out{};
  std::memcpy(&out, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return out;
}

socklen_t sockaddr_len(const sockaddr_storage& s) {
  return s.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

bool same_host(const sockaddr* a, const sockaddr_storage& b) {
  if (a->sa_family != b.ss_family) return false;
  if (a->sa_family == AF_INET)
    return reinterpret_cast<const sockaddr_in*>(a)->sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in*>(&b)->sin_addr.s_addr;
  if (a->sa_family == AF_INET6)
    return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr,
                       &reinterpret_cast<const sockaddr_in6*>(&b)->sin6_addr, sizeof(in6_addr)) == 0;
  return false;
}

bool is_wildcard(const sockaddr_storage& s) {
  if (s.ss_family == AF_INET) return reinterpret_cast<const sockaddr_in*>(&s)->sin_addr.s_addr == INADDR_ANY;
  if (s.ss_family == AF_INET6)
    return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(&s)->sin6_addr, &in6addr_any, sizeof(in6_addr)) == 0;
  return false;
}

// The network interface that holds addr, e.g. "eth0".
std::optional<std::string> interface_of(const sockaddr_storage& addr) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) fail_errno("getifaddrs");
  std::optional<std::string> name;
  for (const ifaddrs* i = list; i && !name; i = i->ifa_next)
    if (i->ifa_addr && same_host(i->ifa_addr, addr)) name = i->ifa_name;
  freeifaddrs(list);
  return name;
}

// UCX's transports between processes of one host.
bool is_shared_memory(const std::string& transport) {
  static const std::vector<std::string> kShared = {"sm", "shm", "posix", "sysv", "cma", "knem", "xpmem", "mm"};
  return std::find(kShared.begin(), kShared.end(), transport) != kShared.end();
}

// The transports UCX_TLS names, in order.
std::vector<std::string> transport_names(const std::string& transports) {
  std::vector<std::string> names;
  std::stringstream in(transports);
  for (std::string t; std::getline(in, t, ',');) names.push_back(t);
  return names;
}

// True when UCX_TLS names only TCP and intra-host transports: then no
// network device but the address's own is needed.
bool tcp_only(const std::string& transports) {
  const std::vector<std::string> names = transport_names(transports);
  return !names.empty() && std::ranges::all_of(names, [](const std::string& t) {
    return t == "tcp" || t == "self" || is_shared_memory(t);
  });
}

// True when UCX_TLS names a shared-memory transport.
bool names_shared_memory(const std::string& transports) {
  return std::ranges::any_of(transport_names(transports), is_shared_memory);
}

// The transports an endpoint's lanes use ("posix/memory.0, tcp/eth0.0"),
// from ucp_ep_print_info(): UCX 1.13 has no query for them.  A user on an
// RDMA fabric reads here whether frames go over verbs or fell back to TCP.
std::string lanes_of(ucp_ep_h ep) {
  char* text = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&text, &len);
  if (!f) return "?";
  ucp_ep_print_info(ep, f);
  std::fclose(f);
  std::istringstream in(std::string(text, len));
  std::free(text);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    // "#   lane[1]:  0:posix/memory.0 md[0] ...": the word after the colon.
    const auto lane = line.find("lane[");
    const auto colon = lane == std::string::npos ? lane : line.find(':', lane);
    if (colon == std::string::npos) continue;
    std::istringstream words(line.substr(colon + 1));
    std::string word;
    words >> word;
    if (word == "cm") continue;  // the connection manager's lane carries no frames
    const std::string tl = word.substr(word.find(':') + 1);
    if (out.find(tl) == std::string::npos) out += (out.empty() ? "" : ", ") + tl;
  }
  return out.empty() ? "?" : out;
}

void modify(ucp_config_t* ucfg, const char* name, const std::string& value) {
  if (ucs_status_t s = ucp_config_modify(ucfg, name, value.c_str()); s != UCS_OK)
    fail(EINVAL, "UCX_{}={}: {}", name, value, ucs_status_string(s));
}

// UCX's TCP transport listens on every interface it uses, at a random port,
// besides our listener (its connections carry the data; ours only sets them
// up).  Keep it to the interface of our own address, so nothing listens
// anywhere the configuration does not name.
void restrict_devices(ucp_config_t* ucfg, const FabricConfig& cfg, const sockaddr_storage& addr) {
  // Lanes only on the device the connection came through, unless shared
  // memory was asked for: UCX adds its lanes to a connection only when it
  // may use every device.  NET_DEVICES below still keeps TCP to our
  // address's interface, and shared memory listens on no network.  UCX
  // 1.13 gives endpoints that handle peer failures, as ours do, shared
  // memory only with MM_ERROR_HANDLING: without it, frames would go over
  // TCP without a word.
  const bool shared_memory = names_shared_memory(cfg.transports);
  modify(ucfg, "CM_USE_ALL_DEVICES", shared_memory ? "y" : "n");
  if (shared_memory) modify(ucfg, "MM_ERROR_HANDLING", "y");
  if (!tcp_only(cfg.transports)) return;    // verbs devices are named differently: leave them
  const std::string& address = cfg.addresses[cfg.self];
  if (std::getenv("UCX_NET_DEVICES")) {
    log().warn("aggvm-dsm: UCX_NET_DEVICES is set: UCX may listen beyond {}", address);
    return;
  }
  if (is_wildcard(addr)) {
    log().warn("aggvm-dsm: {} is a wildcard address: UCX listens on every interface", address);
    return;
  }
  const auto dev = interface_of(addr);
  if (!dev) fail(EADDRNOTAVAIL, "cannot listen on {}: no interface of this host holds that address", address);
  modify(ucfg, "NET_DEVICES", *dev);
}

}  // namespace

struct Fabric::Conn {
  Fabric* fabric = nullptr;
  ucp_ep_h ep = nullptr;
  bool outgoing = false;
  bool ready = false;     // authenticated: frames flow
  NodeId peer = kNoNode;  // dialled node, or the node an incoming peer claims
  std::string remote;
  std::optional<Handshake> handshake;  // until ready
  std::chrono::steady_clock::time_point handshake_deadline{};
  std::unique_ptr<FrameProtector> protector;  // once ready, unless frames are plain
  std::unique_ptr<FrameReader> reader;        // after protector: it points to it
  // Refused for a configuration mismatch after the peer proved the secret:
  // our Accept tells it why, and the connection stays open until the peer
  // hangs up (at most until handshake_deadline), so that closing it cannot
  // reset the stream before the peer has read the reason.
  bool refusing = false;
  bool failed = false;
  std::string failure;
  std::string lanes;  // the transports its frames take, once authenticated
  // Frames sent since the last flush, sealed, in order: one UCX send (and
  // one system call) for many frames, not one for each.
  std::unique_ptr<std::vector<std::byte>> pending;
};

Fabric::Fabric(FabricConfig config, const ClusterKey& key)
    : cfg_(std::move(config)), key_(key), peers_(cfg_.n_nodes, nullptr) {
  const sockaddr_storage addr = resolve(cfg_.addresses.at(cfg_.self));
  // A node started again at once (virsh destroy, then start) finds its port
  // held by the last run's connections in TIME_WAIT: let the listener reuse
  // it (SO_REUSEADDR; two listeners still cannot share it).  The TCP
  // connection manager reads only the environment (ucp_config_modify's
  // keys do not reach it in UCX 1.13); a value the user set is kept.
  setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
  ucp_config_t* ucfg = nullptr;
  check(ucp_config_read(nullptr, nullptr, &ucfg), "ucp_config_read");
  ucs_status_t init = UCS_OK;
  try {
    modify(ucfg, "TLS", cfg_.transports);
    restrict_devices(ucfg, cfg_, addr);
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_STREAM | UCP_FEATURE_WAKEUP;
    init = ucp_init(&params, ucfg, &context_);
  } catch (...) {
    ucp_config_release(ucfg);
    throw;
  }
  ucp_config_release(ucfg);
  check(init, "ucp_init");

  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the service thread drives it
  check(ucp_worker_create(context_, &wp, &worker_), "ucp_worker_create");
  check(ucp_worker_get_efd(worker_, &event_fd_), "ucp_worker_get_efd");

  ucp_listener_params_t lp{};
  lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
  lp.sockaddr.addrlen = sockaddr_len(addr);
  lp.conn_handler.cb = &Fabric::on_conn_request;
  lp.conn_handler.arg = this;
  if (ucs_status_t s = ucp_listener_create(worker_, &lp, &listener_); s != UCS_OK)
    fail(EADDRNOTAVAIL, "cannot listen on {}: {}", cfg_.addresses[cfg_.self], ucs_status_string(s));
}

Fabric::~Fabric() {
  close_all();
  if (listener_) ucp_listener_destroy(listener_);
  if (worker_) ucp_worker_destroy(worker_);
  if (context_) ucp_cleanup(context_);
  closing_.clear();  // connections whose close had not finished: UCX is gone now
}

HandshakeParams Fabric::handshake_params() const {
  return HandshakeParams{.self = cfg_.self,
                         .n_nodes = cfg_.n_nodes,
                         .key = &key_,
                         .config_digest = cfg_.config_digest,
                         .protection = cfg_.frame_protection,
                         .connected = [this](NodeId n) { return n < peers_.size() && peers_[n] != nullptr; },
                         // Once membership closed, only late nodes not joined yet.
                         .may_dial = [this](NodeId n) {
                           return connecting_ ? n > cfg_.self || cfg_.late.test(n) : absent_.test(n);
                         }};
}

std::chrono::milliseconds Fabric::handshake_timeout() const {
  if (cfg_.handshake_timeout.count() > 0) return cfg_.handshake_timeout;
  return std::max(cfg_.timeout / 2, std::chrono::milliseconds(1));
}

size_t Fabric::unauthenticated() const {
  size_t n = 0;
  for (const auto& c : conns_) n += !c->outgoing && !c->ready && !c->failed;
  return n;
}

// Before authentication only small control frames pass, and no page.  A
// client reads the server's Challenge, addressed to no one in particular.
std::unique_ptr<FrameReader> Fabric::make_reader(Conn& c) {
  return std::make_unique<FrameReader>(
      [this, conn = &c] {
        if (conn->ready) return cfg_.limits();
        return WireLimits{
            .self = cfg_.self, .n_nodes = cfg_.n_nodes, .unaddressed_ok = conn->outgoing, .region_pages = {}};
      },
      kHandshakeMaxPayload);
}

void Fabric::on_conn_request(ucp_conn_request_h request, void* arg) {
  static_cast<Fabric*>(arg)->accept(request);
}

void Fabric::on_ep_error(void* arg, ucp_ep_h, ucs_status_t status) {
  auto* c = static_cast<Conn*>(arg);
  c->failed = true;
  c->failure = ucs_status_string(status);
}

void Fabric::accept(ucp_conn_request_h request) {
  ucp_conn_request_attr_t attr{};
  attr.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
  std::string remote = "?";
  if (ucp_conn_request_query(request, &attr) == UCS_OK) {
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getnameinfo(reinterpret_cast<sockaddr*>(&attr.client_address), sizeof(attr.client_address),
                    host, sizeof host, port, sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) == 0)
      remote = std::string(host) + ":" + port;
  }
  if (!connecting_ && absent_.none()) {
    log().warn("aggvm-dsm: refused connection from {}: membership is closed", remote);
    ucp_listener_reject(listener_, request);
    return;
  }
  // Unauthenticated connections cost memory and a slot until their deadline:
  // a flood of them must not starve the real peers for long.
  if (const size_t cap = 2u * cfg_.n_nodes; unauthenticated() >= cap) {
    // Once, then quietly: a flood must not flood the log too.
    if (refused_++ == 0)
      log().warn("aggvm-dsm: refused connection from {}: {} connections are already authenticating", remote,
                   cap);
    ucp_listener_reject(listener_, request);
    return;
  }
  auto c = std::make_unique<Conn>();
  c->fabric = this;
  c->outgoing = false;
  c->remote = remote;
  c->handshake.emplace(Handshake::server(handshake_params()));
  c->handshake_deadline = std::chrono::steady_clock::now() + handshake_timeout();
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                  UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_USER_DATA;
  ep.conn_request = request;
  ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  ep.err_handler.cb = &Fabric::on_ep_error;
  ep.err_handler.arg = c.get();
  ep.user_data = c.get();
  if (ucs_status_t s = ucp_ep_create(worker_, &ep, &c->ep); s != UCS_OK) {
    log().warn("aggvm-dsm: cannot accept {}: {}", remote, ucs_status_string(s));
    return;
  }
  c->reader = make_reader(*c);
  // The server speaks first (see handshake.h); UCX sends this once the
  // connection is up.  Who dialled is not known yet: the frame is addressed
  // to no node.
  send_control(*c, c->handshake->challenge(), kNoNode);
  conns_.push_back(std::move(c));
}

void Fabric::dial(NodeId peer) {
  auto c = std::make_unique<Conn>();
  c->fabric = this;
  c->outgoing = true;
  c->peer = peer;
  c->remote = cfg_.addresses.at(peer);
  c->handshake.emplace(Handshake::client(handshake_params(), peer));
  c->handshake_deadline = std::chrono::steady_clock::now() + handshake_timeout();
  c->reader = make_reader(*c);
  const sockaddr_storage addr = resolve(c->remote);
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                  UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER |
                  UCP_EP_PARAM_FIELD_USER_DATA;
  ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
  ep.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
  ep.sockaddr.addrlen = sockaddr_len(addr);
  ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  ep.err_handler.cb = &Fabric::on_ep_error;
  ep.err_handler.arg = c.get();
  ep.user_data = c.get();
  if (ucs_status_t s = ucp_ep_create(worker_, &ep, &c->ep); s != UCS_OK) {
    c->failed = true;
    c->failure = ucs_status_string(s);
  }
  conns_.push_back(std::move(c));  // it waits for the server's Challenge
}

void Fabric::send_control(Conn& c, const std::string& bytes, NodeId dst) {
  Message m;
  m.type = MsgType::kControl;
  m.src = cfg_.self;
  m.dst = dst;
  m.payload = std::as_bytes(std::span(bytes));
  const auto header = encode_header(m);
  send_raw(c, header, m.payload);
}

void Fabric::send_raw(Conn& c, std::span<const std::byte> header, std::span<const std::byte> payload) {
  if (c.failed || !c.ep) return;
  if (header.size() != kHeaderSize) fail(EINVAL, "frame header of {} bytes", header.size());
  if (!c.pending) {
    c.pending = std::make_unique<std::vector<std::byte>>();
    c.pending->reserve(kCoalesceBytes + FrameProtector::sealed_size(kPageSize) + kHeaderSize);
  }
  std::vector<std::byte>& buf = *c.pending;
  const size_t at = buf.size();
  if (c.protector) {
    buf.resize(at + FrameProtector::sealed_size(payload.size()));
    try {
      c.protector->seal(header.first<kHeaderSize>(), payload, buf.data() + at);
    } catch (...) {
      buf.resize(at);
      throw;
    }
  } else {
    buf.resize(at + header.size() + payload.size());
    std::memcpy(buf.data() + at, header.data(), header.size());
    if (!payload.empty()) std::memcpy(buf.data() + at + header.size(), payload.data(), payload.size());
  }
  if (buf.size() >= kCoalesceBytes) flush(c);
}

void Fabric::flush() {
  for (const auto& c : conns_) flush(*c);
}

void Fabric::flush(Conn& c) {
  if (!c.pending || c.pending->empty()) return;
  if (c.failed || !c.ep) {
    c.pending->clear();
    return;
  }
  std::vector<std::byte>* buf = c.pending.release();
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  p.cb.send = [](void* request, ucs_status_t, void* user) {
    delete static_cast<std::vector<std::byte>*>(user);
    ucp_request_free(request);
  };
  p.user_data = buf;
  ucs_status_ptr_t r = ucp_stream_send_nbx(c.ep, buf->data(), buf->size(), &p);
  if (r == nullptr) {
    delete buf;  // completed in place
  } else if (UCS_PTR_IS_ERR(r)) {
    delete buf;
    c.failed = true;
    c.failure = std::string("send: ") + ucs_status_string(UCS_PTR_STATUS(r));
  }
}

void Fabric::send(NodeId to, std::span<const std::byte> header, std::span<const std::byte> payload) {
  Conn* c = to < peers_.size() ? peers_[to] : nullptr;
  if (!c) fail(ENOTCONN, "no connection to node {}", to);
  send_raw(*c, header, payload);
}

void Fabric::drain(Conn& c, FabricSink& sink) {
  while (!c.failed) {
    size_t len = 0;
    ucs_status_ptr_t data = ucp_stream_recv_data_nb(c.ep, &len);
    if (data == nullptr) return;
    if (UCS_PTR_IS_ERR(data)) {
      c.failed = true;
      c.failure = std::string("receive: ") + ucs_status_string(UCS_PTR_STATUS(data));
      return;
    }
    const bool ok = c.reader->feed(std::span(static_cast<const std::byte*>(data), len),
                                   [&](const WireHeader& h, std::span<const std::byte> payload) {
                                     on_frame(c, h, payload, sink);
                                   });
    ucp_stream_data_release(c.ep, data);
    if (!ok) {
      sink.on_rejected(c.remote, c.reader->error());
      drop(c, "malformed stream: " + c.reader->error());
      return;
    }
  }
}

void Fabric::on_frame(Conn& c, const WireHeader& h, std::span<const std::byte> payload, FabricSink& sink) {
  if (c.failed) return;
  if (!c.ready) {
    if (static_cast<MsgType>(h.type) != MsgType::kControl) {
      sink.on_rejected(c.remote, fmt::format("{} frame before authentication",
                                             to_string(static_cast<MsgType>(h.type))));
      drop(c, "unauthenticated frame");
      return;
    }
    try {
      handshake(c, h, payload);
      if (c.refusing) sink.on_rejected(c.remote, refusal_->what());
    } catch (const DsmError& e) {
      sink.on_rejected(c.remote, e.what());
      drop(c, e.what());
      if (e.err() == EBADMSG) throw;  // configuration mismatch: fatal
    }
    return;
  }
  if (h.src != c.peer) {
    sink.on_rejected(c.remote, fmt::format("frame claims node {} on node {}'s connection", h.src, c.peer));
    return;
  }
  sink.on_frame(c.peer, h, payload);
}

void Fabric::handshake(Conn& c, const WireHeader& h, std::span<const std::byte> payload) {
  Handshake& hs = *c.handshake;
  Handshake::Step step = hs.on_message(h.src, payload);
  c.peer = hs.peer();
  if (!step.reply.empty()) send_control(c, step.reply, c.peer);
  if (step.error) {
    // The configurations differ (fatal), and the reply tells the peer ours.
    // Closing now would race that reply: the peer's UCX may see the reset
    // before it delivers the data, and the peer would learn nothing but that
    // we vanished.  So leave the connection to the peer to close, which it
    // does once it has read the reply; connect_all() fails after that.
    if (step.reply.empty()) throw *step.error;
    c.refusing = true;
    c.handshake_deadline = std::chrono::steady_clock::now() + handshake_timeout();
    if (!refusal_) refusal_ = *step.error;
    return;
  }
  if (!hs.done()) return;
  // Authenticated.  Every later frame, both ways, is sealed with this
  // connection's keys (the Accept above still went out plain).
  if (cfg_.frame_protection == FrameProtection::kAesGcm) {
    const FrameKeys keys = hs.frame_keys();
    c.protector = c.outgoing ? std::make_unique<FrameProtector>(keys.client_to_server, keys.server_to_client)
                             : std::make_unique<FrameProtector>(keys.server_to_client, keys.client_to_server);
    c.reader->set_protector(c.protector.get());
  }
  c.handshake.reset();
  c.ready = true;  // frames are checked against the full limits from now on
  c.reader->set_max_payload(kMaxPayload);
  peers_[c.peer] = &c;
  c.lanes = lanes_of(c.ep);
  log().debug("aggvm-dsm: node {} at {} authenticated (frames: {}, over {})", c.peer, c.remote,
              to_string(cfg_.frame_protection), c.lanes);
  if (absent_.test(c.peer)) {
    // A late node, even one that came while this node was still starting:
    // node 0 must admit it either way.
    absent_.reset(c.peer);
    log().info("aggvm-dsm: late node {} at {} connected", c.peer, c.remote);
    joined_.push_back(c.peer);
  }
}

std::string Fabric::frame_transports() const {
  std::string out;
  for (const Conn* c : peers_)
    if (c && c->ready && out.find(c->lanes) == std::string::npos) out += (out.empty() ? "" : ", ") + c->lanes;
  return out.empty() ? "?" : out;
}

void Fabric::drop(Conn& c, const std::string& why) {
  if (!c.failed) {
    c.failed = true;
    c.failure = why;
  }
}

// Closes the connection's endpoint, waiting for UCX at most until deadline.
// Returns false if the close is still in flight (the Conn must then outlive
// UCX's worker, which may still call its error handler).
bool Fabric::close_ep(Conn& c, std::chrono::steady_clock::time_point deadline) {
  if (!c.ep) return true;
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  p.flags = UCP_EP_CLOSE_FLAG_FORCE;
  ucs_status_ptr_t r = ucp_ep_close_nbx(c.ep, &p);
  c.ep = nullptr;
  if (!r || UCS_PTR_IS_ERR(r)) return true;
  while (ucp_request_check_status(r) == UCS_INPROGRESS && std::chrono::steady_clock::now() < deadline)
    ucp_worker_progress(worker_);
  const bool done = ucp_request_check_status(r) != UCS_INPROGRESS;
  ucp_request_free(r);  // released by UCX once it completes, if it has not
  if (!done) log().warn("aggvm-dsm: closing the connection to {} did not finish in time", c.remote);
  return done;
}

// Closes failed connections; reports authenticated ones; schedules redials.
void Fabric::reap_failed(FabricSink* sink, std::chrono::steady_clock::time_point deadline) {
  for (size_t i = 0; i < conns_.size();) {
    Conn& c = *conns_[i];
    if (!c.failed) {
      ++i;
      continue;
    }
    const bool was_peer = c.ready && c.peer < peers_.size() && peers_[c.peer] == &c;
    if (was_peer) peers_[c.peer] = nullptr;
    const bool closed = close_ep(c, deadline);
    const NodeId peer = c.peer;
    const bool redial = connecting_ && c.outgoing && !c.ready;
    const std::string failure = c.failure;
    const std::string remote = c.remote;
    if (!closed) closing_.push_back(std::move(conns_[i]));
    conns_.erase(conns_.begin() + static_cast<std::ptrdiff_t>(i));
    if (was_peer && sink) sink->on_peer_lost(peer, failure);
    if (redial) {
      log().debug("aggvm-dsm: node {} at {} not reachable yet ({}), retrying", peer, remote, failure);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      dial(peer);
      return;  // conns_ changed: the next pass handles the rest
    }
  }
}

// Drops connections that did not authenticate in time.
void Fabric::expire_handshakes(FabricSink& sink) {
  const auto now = std::chrono::steady_clock::now();
  for (const auto& c : conns_)
    if (!c->ready && !c->failed && now > c->handshake_deadline) {
      if (c->refusing) {  // already reported
        drop(*c, "did not close after the refusal");
        continue;
      }
      const std::string why = fmt::format("did not authenticate within {} ms", handshake_timeout().count());
      if (!c->outgoing) sink.on_rejected(c->remote, why);
      drop(*c, why);
    }
}

bool Fabric::refusing() const {
  for (const auto& c : conns_)
    if (c->refusing && !c->failed) return true;
  return false;
}

void Fabric::fail_refused() {
  connecting_ = false;
  const DsmError e = *refusal_;
  refusal_.reset();
  throw e;
}

bool Fabric::all_connected(NodeSet peers) const {
  for (NodeId n = 0; n < cfg_.n_nodes; ++n)
    if (peers.test(n) && !peers_[n]) return false;
  return true;
}

void Fabric::connect_all(FabricSink& sink) {
  if (cfg_.late.test(cfg_.self)) fail(EINVAL, "node {} joins later: it connects with connect()", cfg_.self);
  absent_ = cfg_.late;
  NodeSet peers;
  for (NodeId n = 0; n < cfg_.n_nodes; ++n)
    if (n != cfg_.self && !cfg_.late.test(n)) peers.set(n);
  connecting_ = true;
  for (NodeId n = 0; n < cfg_.self; ++n)
    if (peers.test(n)) dial(n);  // higher ids dial lower ones
  wait_connected(sink, peers);
}

void Fabric::connect(FabricSink& sink, NodeSet peers) {
  if (!cfg_.late.test(cfg_.self)) fail(EINVAL, "node {} is no late node: it connects with connect_all()", cfg_.self);
  absent_ = cfg_.late;
  absent_.reset(cfg_.self);
  peers.reset(cfg_.self);
  absent_ &= ~peers;
  connecting_ = true;
  for (NodeId n = 0; n < cfg_.n_nodes; ++n)
    if (peers.test(n) && !peers_[n]) dial(n);  // a joining node dials every peer
  wait_connected(sink, peers);
}

void Fabric::wait_connected(FabricSink& sink, NodeSet peers) {
  const auto deadline = std::chrono::steady_clock::now() + cfg_.timeout;
  while (!all_connected(peers)) {
    progress(sink);
    // A peer refused for a configuration mismatch has read why, or had its time.
    if (refusal_ && !refusing()) fail_refused();
    if (std::chrono::steady_clock::now() > deadline) {
      if (refusal_) fail_refused();
      connecting_ = false;
      std::string missing;
      for (NodeId n = 0; n < cfg_.n_nodes; ++n)
        if (peers.test(n) && !peers_[n])
          missing += fmt::format("{}node {} ({})", missing.empty() ? "" : ", ", n, cfg_.addresses[n]);
      fail(ETIMEDOUT, "could not connect to and authenticate {} within {} ms", missing,
           cfg_.timeout.count());
    }
    if (arm()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (refusal_) fail_refused();
  connecting_ = false;
  // Membership is closed: whoever has not authenticated by now never will,
  // but for late nodes, whose handshakes go on to their own deadline.
  for (const auto& c : conns_)
    if (!c->ready && (c->outgoing || absent_.none())) drop(*c, "membership closed before it authenticated");
  reap_failed(&sink, std::chrono::steady_clock::now() + cfg_.timeout);
}

bool Fabric::progress(FabricSink& sink) {
  flush();  // what the last pass sent goes out before we look for answers
  bool any = false;
  while (ucp_worker_progress(worker_) != 0) any = true;
  ucp_stream_poll_ep_t ready[16];
  ssize_t n;
  while ((n = ucp_stream_worker_poll(worker_, ready, std::size(ready), 0)) > 0) {
    any = true;
    for (ssize_t i = 0; i < n; ++i) drain(*static_cast<Conn*>(ready[i].user_data), sink);
    while (ucp_worker_progress(worker_) != 0) {
    }
  }
  if (connecting_ || absent_.any()) expire_handshakes(sink);
  // Reported here, not from handshake(): the sink may send to the new peer.
  for (NodeId n : std::exchange(joined_, {})) sink.on_peer_joined(n);
  for (const auto& c : conns_)
    if (c->failed) {
      reap_failed(&sink, std::chrono::steady_clock::now() + cfg_.timeout);
      any = true;
      break;
    }
  return any;
}

bool Fabric::arm() {
  flush();  // nothing sent may wait while this node sleeps
  const ucs_status_t s = ucp_worker_arm(worker_);
  if (s == UCS_ERR_BUSY) return false;
  check(s, "ucp_worker_arm");
  return true;
}

void Fabric::close_all() {
  if (!worker_) return;
  flush();
  // Flush pending sends so a last message (an ack, a goodbye) is not lost.
  ucp_request_param_t fp{};
  ucs_status_ptr_t f = ucp_worker_flush_nbx(worker_, &fp);
  const auto deadline = std::chrono::steady_clock::now() + cfg_.timeout;
  if (f && !UCS_PTR_IS_ERR(f)) {
    while (ucp_request_check_status(f) == UCS_INPROGRESS && std::chrono::steady_clock::now() < deadline)
      ucp_worker_progress(worker_);
    ucp_request_free(f);
  }
  for (auto& c : conns_) c->failed = true;
  std::fill(peers_.begin(), peers_.end(), nullptr);
  connecting_ = false;
  // Each pass closes every connection (no redials now); the deadline bounds
  // the whole close, flush included.
  while (!conns_.empty()) reap_failed(nullptr, deadline);
}

}  // namespace aggvm::dsm
