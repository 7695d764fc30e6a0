// aggvm-net-probe: the smallest TCP server and client, to check reachability
// between harness hosts without depending on ping or python.
//
//   aggvm-net-probe listen <port> [<lifetime_s>]   prints "listening <port>",
//       answers "ok\n" to every connection, exits after lifetime_s (default 120)
//   aggvm-net-probe connect <ipv4> <port> <timeout_ms>
//       exit 0 after reading "ok" from the server, 1 (with a reason) otherwise
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: aggvm-net-probe listen <port> [<lifetime_s>]\n"
               "       aggvm-net-probe connect <ipv4> <port> <timeout_ms>\n");
  return 2;
}

int fail(const char* what) {
  std::printf("failed: %s: %s\n", what, std::strerror(errno));
  return 1;
}

int listen_main(int port, int lifetime_s) {
  alarm(static_cast<unsigned>(lifetime_s));  // bounded life, even if nobody kills us
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return fail("socket");
  const int one = 1;
  if (::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) return fail("SO_REUSEADDR");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return fail("bind");
  if (::listen(s, 16) != 0) return fail("listen");
  std::printf("listening %d\n", port);
  std::fflush(stdout);
  for (;;) {
    const int c = ::accept4(s, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR) continue;
      return fail("accept");
    }
    if (::write(c, "ok\n", 3) != 3) std::printf("write: %s\n", std::strerror(errno));
    ::close(c);
  }
}

int connect_main(const char* ip, int port, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto left_ms = [&] {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<long long>(left.count(), 0));
  };
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, ip, &addr.sin_addr) != 1) {
    std::printf("failed: bad IPv4 address %s\n", ip);
    return 2;
  }
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return fail("socket");
  if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS)
    return fail("connect");
  pollfd p{s, POLLOUT, 0};
  if (::poll(&p, 1, left_ms()) != 1) {
    std::printf("failed: connect to %s:%d timed out\n", ip, port);
    return 1;
  }
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return fail("SO_ERROR");
  if (err != 0) {
    errno = err;
    return fail("connect");
  }
  p = {s, POLLIN, 0};
  char buf[8] = {};
  if (::poll(&p, 1, left_ms()) != 1 || ::read(s, buf, sizeof buf - 1) < 2 || std::strncmp(buf, "ok", 2) != 0) {
    std::printf("failed: no answer from %s:%d\n", ip, port);
    return 1;
  }
  std::printf("connected %s:%d\n", ip, port);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "listen") == 0)
    return listen_main(std::atoi(argv[2]), argc >= 4 ? std::atoi(argv[3]) : 120);
  if (argc == 5 && std::strcmp(argv[1], "connect") == 0)
    return connect_main(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
  return usage();
}
