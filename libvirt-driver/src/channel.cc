#include "channel.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "error.h"
#include "transport/auth.h"
#include "transport/frame_protector.h"

namespace aggvm::libvirt {
namespace {

constexpr uint32_t kProtocolVersion = 1;
constexpr size_t kMaxPlainFrame = 4096;
constexpr size_t kMaxSealedFrame = 4 << 20;  // a domain XML and an argv
constexpr std::array<uint8_t, 8> kSealedMagic = {'A', 'G', 'G', 'V', 'M', 'N', 'D', '1'};
constexpr std::string_view kClusterName = "aggvm-noded";

std::vector<uint8_t> digest() { return dsm::config_digest("aggvm-noded protocol 1"); }

union SockAddr {
  sockaddr sa;
  sockaddr_in in;
  sockaddr_in6 in6;
};

socklen_t make_address(const std::string& host, uint16_t port, SockAddr& out) {
  std::memset(&out, 0, sizeof out);
  if (inet_pton(AF_INET, host.c_str(), &out.in.sin_addr) == 1) {
    out.in.sin_family = AF_INET;
    out.in.sin_port = htons(port);
    return sizeof out.in;
  }
  if (inet_pton(AF_INET6, host.c_str(), &out.in6.sin6_addr) == 1) {
    out.in6.sin6_family = AF_INET6;
    out.in6.sin6_port = htons(port);
    return sizeof out.in6;
  }
  fail("'{}' is not an IPv4 or IPv6 address", host);
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 60000));
}

template <size_t N>
std::array<uint8_t, N> to_array(const std::string& bytes, const char* what) {
  if (bytes.size() != N) fail("malformed handshake: {} of {} bytes", what, bytes.size());
  std::array<uint8_t, N> out;
  std::memcpy(out.data(), bytes.data(), N);
  return out;
}

std::string as_string(std::span<const uint8_t> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

void set_send_timeout(int fd) {
  timeval tv{.tv_sec = 5, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

std::unique_ptr<dsm::ClusterKey> load_cluster_key(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) fail_errno(fmt::format("cluster secret {}", path));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) fail_errno(fmt::format("cluster secret {}", path));
  if (!S_ISREG(st.st_mode)) fail("cluster secret {}: not a regular file", path);
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    fail("cluster secret {}: mode {:04o} lets others read it; make it 0600", path, st.st_mode & 07777);
  if (st.st_uid != geteuid()) fail("cluster secret {}: owned by uid {}, not by this user", path, st.st_uid);
  dsm::SecretBytes secret(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < secret.size()) {
    const ssize_t n = ::read(fd.get(), secret.data() + got, secret.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail_errno(fmt::format("cluster secret {}", path));
    got += static_cast<size_t>(n);
  }
  if (secret.size() < 16) fail("cluster secret {}: {} bytes; it needs 16 or more", path, secret.size());
  return std::make_unique<dsm::ClusterKey>(secret, std::string(kClusterName));
}

Fd listen_on(const std::string& host, uint16_t port) {
  SockAddr addr;
  const socklen_t len = make_address(host, port, addr);
  Fd fd(::socket(addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) fail_errno("socket");
  const int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), &addr.sa, len) != 0) fail_errno(fmt::format("cannot listen on {} port {}", host, port));
  if (::listen(fd.get(), 16) != 0) fail_errno(fmt::format("listen on {} port {}", host, port));
  return fd;
}

Fd connect_to(const std::string& host, uint16_t port, std::chrono::milliseconds timeout) {
  SockAddr addr;
  const socklen_t len = make_address(host, port, addr);
  Fd fd(::socket(addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) fail_errno("socket");
  if (::connect(fd.get(), &addr.sa, len) != 0) {
    if (errno != EINPROGRESS) fail_errno(fmt::format("cannot connect to {} port {}", host, port));
    pollfd p{.fd = fd.get(), .events = POLLOUT, .revents = 0};
    const int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (n == 0) fail("cannot connect to {} port {}: no answer within {} ms", host, port, timeout.count());
    int err = 0;
    socklen_t elen = sizeof err;
    getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &elen);
    if (n < 0 || err != 0) {
      errno = n < 0 ? errno : err;
      fail_errno(fmt::format("cannot connect to {} port {}", host, port));
    }
  }
  const int flags = fcntl(fd.get(), F_GETFL);
  fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  set_send_timeout(fd.get());
  return fd;
}

bool read_exact(int fd, void* buf, size_t n, Clock::time_point deadline) {
  size_t got = 0;
  while (got < n) {
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    const int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail_errno("poll");
    if (r == 0) fail("the peer sent nothing in time");
    const ssize_t k = ::recv(fd, static_cast<char*>(buf) + got, n - got, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) fail_errno("receive");
    if (k == 0) {
      if (got == 0) return false;
      fail("the peer closed the connection in the middle of a message");
    }
    got += static_cast<size_t>(k);
  }
  return true;
}

void write_all(int fd, const void* buf, size_t n) {
  size_t sent = 0;
  while (sent < n) {
    const ssize_t k = ::send(fd, static_cast<const char*>(buf) + sent, n - sent, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) fail_errno(errno == EAGAIN ? "send (the peer reads nothing)" : "send");
    sent += static_cast<size_t>(k);
  }
}

Channel::Channel(Fd fd, Side side) : fd_(std::move(fd)), side_(side) { set_send_timeout(fd_.get()); }
Channel::~Channel() = default;
Channel::Channel(Channel&&) noexcept = default;

void Channel::send_plain(const google::protobuf::MessageLite& m) {
  const std::string body = m.SerializeAsString();
  if (body.size() > kMaxPlainFrame) fail("internal error: handshake message of {} bytes", body.size());
  const uint32_t len = htonl(static_cast<uint32_t>(body.size()));
  std::string frame(reinterpret_cast<const char*>(&len), 4);
  frame += body;
  write_all(fd_.get(), frame.data(), frame.size());
}

bool Channel::receive_plain(google::protobuf::MessageLite& m, Clock::time_point deadline) {
  uint32_t len = 0;
  if (!read_exact(fd_.get(), &len, 4, deadline)) return false;
  len = ntohl(len);
  if (len > kMaxPlainFrame) fail("malformed handshake: a frame of {} bytes", len);
  std::string body(len, '\0');
  if (len && !read_exact(fd_.get(), body.data(), len, deadline)) fail("the peer closed in the handshake");
  if (!m.ParseFromString(body)) fail("malformed handshake: the message does not parse");
  return true;
}

void Channel::send_sealed(const google::protobuf::MessageLite& m) {
  if (!protector_) fail("internal error: sending before authentication");
  const std::string body = m.SerializeAsString();
  if (body.size() > kMaxSealedFrame) fail("message of {} bytes is too large", body.size());
  std::array<std::byte, dsm::kHeaderSize> header{};
  std::memcpy(header.data(), kSealedMagic.data(), kSealedMagic.size());
  const uint32_t len = htonl(static_cast<uint32_t>(body.size()));
  std::memcpy(header.data() + 8, &len, 4);
  std::vector<std::byte> out(dsm::FrameProtector::sealed_size(body.size()));
  protector_->seal(header, std::as_bytes(std::span(body.data(), body.size())), out.data());
  write_all(fd_.get(), out.data(), out.size());
}

bool Channel::receive_sealed(google::protobuf::MessageLite& m, Clock::time_point deadline) {
  if (!protector_) fail("internal error: receiving before authentication");
  std::array<std::byte, dsm::kHeaderSize> header{};
  if (!read_exact(fd_.get(), header.data(), header.size(), deadline)) return false;
  if (std::memcmp(header.data(), kSealedMagic.data(), kSealedMagic.size()) != 0)
    fail("garbled frame: bad magic");
  uint32_t len = 0;
  std::memcpy(&len, header.data() + 8, 4);
  len = ntohl(len);
  if (len > kMaxSealedFrame) fail("garbled frame: {} bytes", len);
  std::vector<std::byte> body(len);
  std::array<std::byte, dsm::kFrameTagSize> tag{};
  if (len && !read_exact(fd_.get(), body.data(), len, deadline)) fail("the peer closed mid-frame");
  if (!read_exact(fd_.get(), tag.data(), tag.size(), deadline)) fail("the peer closed mid-frame");
  if (!protector_->open(header, body, tag)) fail("a frame failed authentication (tampered or replayed)");
  if (!m.ParseFromArray(body.data(), static_cast<int>(body.size()))) fail("garbled message");
  return true;
}

void Channel::authenticate(const dsm::ClusterKey& key, Clock::time_point deadline) {
  using Role = dsm::ClusterKey::Role;
  const auto cfg = digest();
  if (side_ == Side::kDaemon) {
    const dsm::Nonce server_nonce = dsm::ClusterKey::random_nonce();
    noded::DaemonMessage hello;
    hello.mutable_hello()->set_version(kProtocolVersion);
    hello.mutable_hello()->set_nonce(as_string(server_nonce));
    send_plain(hello);
    noded::HeadMessage proof;
    if (!receive_plain(proof, deadline)) fail("the head closed before proving the secret");
    if (!proof.has_proof()) fail("malformed handshake: expected a proof");
    const auto client_nonce = to_array<dsm::kNonceSize>(proof.proof().nonce(), "nonce");
    const dsm::Mac want = key.prove(Role::kClient, server_nonce, client_nonce, 0, 0, cfg);
    const auto& mac = proof.proof().mac();
    if (!key.verify(want, std::span(reinterpret_cast<const uint8_t*>(mac.data()), mac.size()))) {
      noded::DaemonMessage refusal;
      refusal.mutable_refusal()->set_reason("wrong cluster secret");
      send_plain(refusal);
      fail("the head could not prove the cluster secret");
    }
    noded::DaemonMessage accept;
    accept.mutable_accept()->set_mac(as_string(key.prove(Role::kServer, server_nonce, client_nonce, 0, 0, cfg)));
    send_plain(accept);
    const auto keys = key.frame_keys(server_nonce, client_nonce, 0, 0, cfg);
    protector_ = std::make_unique<dsm::FrameProtector>(keys.server_to_client, keys.client_to_server);
    return;
  }
  noded::DaemonMessage hello;
  if (!receive_plain(hello, deadline)) fail("the daemon closed the connection before its greeting");
  if (hello.has_refusal()) fail("the daemon refused: {}", hello.refusal().reason());
  if (!hello.has_hello()) fail("malformed handshake: expected a greeting");
  if (hello.hello().version() != kProtocolVersion)
    fail("the daemon speaks protocol {}, this head {}", hello.hello().version(), kProtocolVersion);
  const auto server_nonce = to_array<dsm::kNonceSize>(hello.hello().nonce(), "nonce");
  const dsm::Nonce client_nonce = dsm::ClusterKey::random_nonce();
  noded::HeadMessage proof;
  proof.mutable_proof()->set_nonce(as_string(client_nonce));
  proof.mutable_proof()->set_mac(as_string(key.prove(Role::kClient, server_nonce, client_nonce, 0, 0, cfg)));
  send_plain(proof);
  noded::DaemonMessage answer;
  if (!receive_plain(answer, deadline)) fail("the daemon closed the connection after the proof");
  if (answer.has_refusal()) fail("the daemon refused the cluster secret ({})", answer.refusal().reason());
  if (!answer.has_accept()) fail("malformed handshake: expected an acceptance");
  const dsm::Mac want = key.prove(Role::kServer, server_nonce, client_nonce, 0, 0, cfg);
  const auto& mac = answer.accept().mac();
  if (!key.verify(want, std::span(reinterpret_cast<const uint8_t*>(mac.data()), mac.size())))
    fail("the daemon could not prove the cluster secret: not a member of this cluster");
  const auto keys = key.frame_keys(server_nonce, client_nonce, 0, 0, cfg);
  protector_ = std::make_unique<dsm::FrameProtector>(keys.client_to_server, keys.server_to_client);
}

void Channel::send(const noded::HeadMessage& m) { send_sealed(m); }
void Channel::send(const noded::DaemonMessage& m) { send_sealed(m); }

std::optional<noded::HeadMessage> Channel::receive_head(Clock::time_point deadline) {
  noded::HeadMessage m;
  if (!receive_sealed(m, deadline)) return std::nullopt;
  return m;
}

std::optional<noded::DaemonMessage> Channel::receive_daemon(Clock::time_point deadline) {
  noded::DaemonMessage m;
  if (!receive_sealed(m, deadline)) return std::nullopt;
  return m;
}

}  // namespace aggvm::libvirt
