#include "transport/fabric.h"

#include <netdb.h>
#include <sys/socket.h>

#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>

#include "control.pb.h"
#include "error.h"

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

std::string to_bytes(std::span<const uint8_t> s) { return {s.begin(), s.end()}; }
std::span<const uint8_t> as_u8(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

struct Fabric::Conn {
  enum class Stage { kAwaitHello, kAwaitChallenge, kAwaitProof, kAwaitAccept, kReady };
  Fabric* fabric = nullptr;
  ucp_ep_h ep = nullptr;
  bool outgoing = false;
  Stage stage = Stage::kAwaitHello;
  NodeId peer = kNoNode;  // dialled node, or the node an incoming peer claims
  Nonce client_nonce{};
  Nonce server_nonce{};
  std::string remote;
  std::unique_ptr<FrameReader> reader;
  bool failed = false;
  std::string failure;
  std::chrono::steady_clock::time_point retry_at{};
};

Fabric::Fabric(FabricConfig config, const ClusterKey& key)
    : cfg_(std::move(config)), key_(key), peers_(cfg_.n_nodes, nullptr) {
  ucp_config_t* ucfg = nullptr;
  check(ucp_config_read(nullptr, nullptr, &ucfg), "ucp_config_read");
  const ucs_status_t tls = ucp_config_modify(ucfg, "TLS", cfg_.transports.c_str());
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_STREAM | UCP_FEATURE_WAKEUP;
  const ucs_status_t init = tls == UCS_OK ? ucp_init(&params, ucfg, &context_) : tls;
  ucp_config_release(ucfg);
  check(init, "ucp_init");

  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the service thread drives it
  check(ucp_worker_create(context_, &wp, &worker_), "ucp_worker_create");
  check(ucp_worker_get_efd(worker_, &event_fd_), "ucp_worker_get_efd");

  const sockaddr_storage addr = resolve(cfg_.addresses.at(cfg_.self));
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
}

// Before authentication only small control frames pass, and no page.
std::unique_ptr<FrameReader> Fabric::make_reader(Conn& c) {
  return std::make_unique<FrameReader>(
      [this, conn = &c] {
        if (conn->stage == Conn::Stage::kReady) return cfg_.limits();
        return WireLimits{.self = cfg_.self, .n_nodes = cfg_.n_nodes, .region_pages = {}};
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
  if (!connecting_) {
    spdlog::warn("aggvm-dsm: refused connection from {}: membership is closed", remote);
    ucp_listener_reject(listener_, request);
    return;
  }
  auto c = std::make_unique<Conn>();
  c->fabric = this;
  c->outgoing = false;
  c->stage = Conn::Stage::kAwaitHello;
  c->remote = remote;
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                  UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_USER_DATA;
  ep.conn_request = request;
  ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  ep.err_handler.cb = &Fabric::on_ep_error;
  ep.err_handler.arg = c.get();
  ep.user_data = c.get();
  if (ucs_status_t s = ucp_ep_create(worker_, &ep, &c->ep); s != UCS_OK) {
    spdlog::warn("aggvm-dsm: cannot accept {}: {}", remote, ucs_status_string(s));
    return;
  }
  c->reader = make_reader(*c);
  conns_.push_back(std::move(c));
}

void Fabric::dial(NodeId peer) {
  auto c = std::make_unique<Conn>();
  c->fabric = this;
  c->outgoing = true;
  c->stage = Conn::Stage::kAwaitChallenge;
  c->peer = peer;
  c->remote = cfg_.addresses.at(peer);
  c->client_nonce = ClusterKey::random_nonce();
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
  } else {
    pb::Control hello;
    hello.mutable_hello()->set_node(cfg_.self);
    hello.mutable_hello()->set_nonce(to_bytes(c->client_nonce));
    send_control(*c, hello.SerializeAsString(), peer);
  }
  conns_.push_back(std::move(c));
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
  auto* buf = new std::vector<std::byte>(header.size() + payload.size());
  std::memcpy(buf->data(), header.data(), header.size());
  if (!payload.empty()) std::memcpy(buf->data() + header.size(), payload.data(), payload.size());
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
  if (c.stage != Conn::Stage::kReady) {
    if (static_cast<MsgType>(h.type) != MsgType::kControl) {
      sink.on_rejected(c.remote, fmt::format("{} frame before authentication",
                                             to_string(static_cast<MsgType>(h.type))));
      drop(c, "unauthenticated frame");
      return;
    }
    try {
      handshake(c, h, payload);
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
  pb::Control msg;
  if (!msg.ParseFromArray(payload.data(), static_cast<int>(payload.size())))
    fail(EPROTO, "unparsable control message");
  using Stage = Conn::Stage;
  switch (c.stage) {
    case Stage::kAwaitHello: {
      if (!msg.has_hello() || msg.hello().nonce().size() != kNonceSize)
        fail(EPROTO, "expected hello");
      const uint32_t node = msg.hello().node();
      if (node >= cfg_.n_nodes || node <= cfg_.self || node != h.src)
        fail(EPROTO, "hello from node {}, which does not dial node {}", node, cfg_.self);
      if (peers_[node]) fail(EPROTO, "node {} is already connected", node);
      c.peer = static_cast<NodeId>(node);
      std::memcpy(c.client_nonce.data(), msg.hello().nonce().data(), kNonceSize);
      c.server_nonce = ClusterKey::random_nonce();
      c.stage = Stage::kAwaitProof;
      pb::Control challenge;
      challenge.mutable_challenge()->set_nonce(to_bytes(c.server_nonce));
      send_control(c, challenge.SerializeAsString(), c.peer);
      return;
    }
    case Stage::kAwaitProof: {
      if (!msg.has_proof()) fail(EPROTO, "expected proof");
      const auto digest = as_u8(msg.proof().config_digest());
      const Mac want = key_.prove(ClusterKey::Role::kClient, c.server_nonce, c.client_nonce, c.peer,
                                  cfg_.self, digest);
      if (!key_.verify(want, as_u8(msg.proof().mac())))
        fail(EACCES, "node {} at {} failed authentication (wrong cluster secret?)", c.peer, c.remote);
      // Membership proven: the peer may now learn our configuration.
      pb::Control accept;
      accept.mutable_accept()->set_mac(to_bytes(key_.prove(ClusterKey::Role::kServer, c.server_nonce,
                                                           c.client_nonce, c.peer, cfg_.self,
                                                           cfg_.config_digest)));
      accept.mutable_accept()->set_config_digest(to_bytes(cfg_.config_digest));
      send_control(c, accept.SerializeAsString(), c.peer);
      if (!std::equal(digest.begin(), digest.end(), cfg_.config_digest.begin(), cfg_.config_digest.end()))
        fail(EBADMSG, "node {} runs a different configuration (node count, regions or home map differ)",
             c.peer);
      break;
    }
    case Stage::kAwaitChallenge: {
      if (!msg.has_challenge() || msg.challenge().nonce().size() != kNonceSize || h.src != c.peer)
        fail(EPROTO, "expected a challenge from node {}", c.peer);
      std::memcpy(c.server_nonce.data(), msg.challenge().nonce().data(), kNonceSize);
      pb::Control proof;
      proof.mutable_proof()->set_mac(to_bytes(key_.prove(ClusterKey::Role::kClient, c.server_nonce,
                                                         c.client_nonce, cfg_.self, c.peer,
                                                         cfg_.config_digest)));
      proof.mutable_proof()->set_config_digest(to_bytes(cfg_.config_digest));
      send_control(c, proof.SerializeAsString(), c.peer);
      c.stage = Stage::kAwaitAccept;
      return;
    }
    case Stage::kAwaitAccept: {
      if (!msg.has_accept()) fail(EPROTO, "expected accept");
      const auto digest = as_u8(msg.accept().config_digest());
      const Mac want = key_.prove(ClusterKey::Role::kServer, c.server_nonce, c.client_nonce, cfg_.self,
                                  c.peer, digest);
      if (!key_.verify(want, as_u8(msg.accept().mac())))
        fail(EACCES, "node {} at {} could not prove the cluster secret", c.peer, c.remote);
      if (!std::equal(digest.begin(), digest.end(), cfg_.config_digest.begin(), cfg_.config_digest.end()))
        fail(EBADMSG, "node {} runs a different configuration (node count, regions or home map differ)",
             c.peer);
      break;
    }
    case Stage::kReady: return;
  }
  c.stage = Stage::kReady;  // frames are checked against the full limits from now on
  c.reader->set_max_payload(kMaxPayload);
  peers_[c.peer] = &c;
  spdlog::debug("aggvm-dsm: node {} authenticated at {}", c.peer, c.remote);
}

void Fabric::drop(Conn& c, const std::string& why) {
  if (!c.failed) {
    c.failed = true;
    c.failure = why;
  }
}

// Closes failed connections; reports authenticated ones; schedules redials.
void Fabric::reap_failed(FabricSink* sink) {
  for (size_t i = 0; i < conns_.size();) {
    Conn& c = *conns_[i];
    if (!c.failed) {
      ++i;
      continue;
    }
    const bool was_peer = c.stage == Conn::Stage::kReady && c.peer < peers_.size() && peers_[c.peer] == &c;
    if (was_peer) peers_[c.peer] = nullptr;
    if (c.ep) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      ucs_status_ptr_t r = ucp_ep_close_nbx(c.ep, &p);
      if (r && !UCS_PTR_IS_ERR(r)) {
        while (ucp_request_check_status(r) == UCS_INPROGRESS) ucp_worker_progress(worker_);
        ucp_request_free(r);
      }
      c.ep = nullptr;
    }
    const NodeId peer = c.peer;
    const bool redial = connecting_ && c.outgoing && c.stage != Conn::Stage::kReady;
    const std::string failure = c.failure;
    const std::string remote = c.remote;
    conns_.erase(conns_.begin() + static_cast<std::ptrdiff_t>(i));
    if (was_peer && sink) sink->on_peer_lost(peer, failure);
    if (redial) {
      spdlog::debug("aggvm-dsm: node {} at {} not reachable yet ({}), retrying", peer, remote, failure);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      dial(peer);
      return;  // conns_ changed: the next pass handles the rest
    }
  }
}

bool Fabric::all_connected() const {
  for (NodeId n = 0; n < cfg_.n_nodes; ++n)
    if (n != cfg_.self && !peers_[n]) return false;
  return true;
}

void Fabric::connect_all(FabricSink& sink) {
  connecting_ = true;
  for (NodeId n = 0; n < cfg_.self; ++n) dial(n);  // higher ids dial lower ones
  const auto deadline = std::chrono::steady_clock::now() + cfg_.timeout;
  while (!all_connected()) {
    progress(sink);
    if (std::chrono::steady_clock::now() > deadline) {
      connecting_ = false;
      std::string missing;
      for (NodeId n = 0; n < cfg_.n_nodes; ++n)
        if (n != cfg_.self && !peers_[n])
          missing += fmt::format("{}node {} ({})", missing.empty() ? "" : ", ", n, cfg_.addresses[n]);
      fail(ETIMEDOUT, "could not connect to and authenticate {} within {} ms", missing,
           cfg_.timeout.count());
    }
    if (arm()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  connecting_ = false;
}

bool Fabric::progress(FabricSink& sink) {
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
  for (const auto& c : conns_)
    if (c->failed) {
      reap_failed(&sink);
      any = true;
      break;
    }
  return any;
}

bool Fabric::arm() {
  const ucs_status_t s = ucp_worker_arm(worker_);
  if (s == UCS_ERR_BUSY) return false;
  check(s, "ucp_worker_arm");
  return true;
}

void Fabric::close_all() {
  if (!worker_) return;
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
  while (!conns_.empty()) reap_failed(nullptr);
}

}  // namespace aggvm::dsm
