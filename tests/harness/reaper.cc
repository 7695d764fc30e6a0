#include "internal/reaper.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <set>
#include <system_error>

#include "internal/netns.h"
#include "internal/spawn.h"

namespace aggvm::harness::internal {
namespace {

constexpr auto kKillTimeout = std::chrono::milliseconds(3000);

struct Watched {
  std::set<std::string> netns;
  std::set<pid_t> groups;
};

// Kills the watched groups whose leader is still inside one of the watched
// namespaces (so a recycled pid is never hit), then everything left in the
// namespaces, then deletes them.
void clean_up(const Watched& watched) {
  std::vector<struct stat> namespaces;
  for (const auto& name : watched.netns) {
    struct stat st {};
    if (::stat(netns_path(name).c_str(), &st) == 0) namespaces.push_back(st);
  }
  for (pid_t pgid : watched.groups) {
    struct stat st {};
    const std::string link = "/proc/" + std::to_string(pgid) + "/ns/net";
    if (::stat(link.c_str(), &st) != 0) continue;
    for (const auto& ns : namespaces) {
      if (ns.st_dev == st.st_dev && ns.st_ino == st.st_ino) (void)::kill(-pgid, SIGKILL);
    }
  }
  for (const auto& name : watched.netns) {
    if (int left = kill_netns_processes(name, kKillTimeout))
      std::cerr << "aggvm-harness reaper: " << left << " processes survive in " << name << "\n";
    if (auto error = delete_netns(name)) std::cerr << "aggvm-harness reaper: " << *error << "\n";
  }
}

// Applies one "n <netns>" / "g <pgid>" / "r" line; returns false on "r".
bool apply(const std::string& line, Watched& watched) {
  if (line == "r") return false;
  if (line.size() > 2 && line[0] == 'n') watched.netns.insert(line.substr(2));
  if (line.size() > 2 && line[0] == 'g') watched.groups.insert(static_cast<pid_t>(std::stol(line.substr(2))));
  return true;
}

[[noreturn]] void reaper_main(int socket_fd, int signal_fd) {
  Watched watched;
  std::string pending;
  for (;;) {
    pollfd fds[2] = {{socket_fd, POLLIN, 0}, {signal_fd, POLLIN, 0}};
    // The parent's end closing is what we wait for; there is no deadline to
    // it.  The poll timeout only bounds each wait.
    if (::poll(fds, 2, 60'000) < 0 && errno != EINTR) break;
    if (fds[1].revents != 0) break;  // SIGINT/SIGTERM/SIGHUP
    if (fds[0].revents == 0) continue;
    char buf[512];
    const ssize_t n = ::recv(socket_fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the parent is gone
    pending.append(buf, static_cast<size_t>(n));
    for (size_t nl; (nl = pending.find('\n')) != std::string::npos;) {
      const std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      try {
        if (!apply(line, watched)) _exit(0);
      } catch (const std::exception& e) {
        std::cerr << "aggvm-harness reaper: bad line '" << line << "': " << e.what() << "\n";
      }
    }
  }
  clean_up(watched);
  _exit(0);
}

}  // namespace

Reaper::Reaper() {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
    throw std::system_error(errno, std::generic_category(), "reaper socketpair");
  Fd ours(pair[0]), theirs(pair[1]);

  // Block the signals before fork so none arrives between fork and signalfd.
  sigset_t stop, old;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGHUP);
  if (::pthread_sigmask(SIG_BLOCK, &stop, &old) != 0) throw std::runtime_error("reaper: pthread_sigmask");
  const pid_t pid = ::fork();
  if (pid == 0) {
    (void)::setsid();
    const int signal_fd = ::signalfd(-1, &stop, SFD_CLOEXEC);
    if (signal_fd < 0) _exit(1);
    // Keep only stderr, our socket (fd 3) and the signalfd (fd 4): holding
    // the parent's other descriptors (another cluster's reaper socket, the
    // pipe a test runner reads our stdout from) would delay their EOF.
    const int high_socket = ::fcntl(theirs.get(), F_DUPFD_CLOEXEC, 5);
    const int high_signal = ::fcntl(signal_fd, F_DUPFD_CLOEXEC, 5);
    const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (high_socket < 0 || high_signal < 0 || devnull < 0) _exit(1);
    if (::dup2(devnull, 0) != 0 || ::dup2(devnull, 1) != 1) _exit(1);
    if (::dup3(high_socket, 3, O_CLOEXEC) != 3 || ::dup3(high_signal, 4, O_CLOEXEC) != 4) _exit(1);
    (void)::close_range(5, ~0U, 0);
    const int keep_socket = 3, keep_signal = 4;
    reaper_main(keep_socket, keep_signal);
  }
  (void)::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "reaper fork");
  pid_ = pid;
  socket_ = std::move(ours);
}

Reaper::~Reaper() { release(false); }

void Reaper::send(const std::string& line) {
  const std::string data = line + "\n";
  // MSG_NOSIGNAL: a reaper that already died must not SIGPIPE the test.
  if (::send(socket_.get(), data.data(), data.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(data.size()))
    throw std::system_error(errno, std::generic_category(), "reaper (pid " + std::to_string(pid_) + ") is gone");
}

void Reaper::watch_netns(const std::string& name) { send("n " + name); }

void Reaper::watch_process_group(pid_t pgid) { send("g " + std::to_string(pgid)); }

void Reaper::release(bool clean) noexcept {
  if (pid_ < 0) return;
  try {
    if (clean) send("r");
  } catch (const std::exception&) {
    // Already gone; reaping it below is all that is left.
  }
  socket_.reset();  // EOF: without "r" first, the reaper cleans up
  try {
    // Cleaning up kills for up to kKillTimeout per namespace; allow for it.
    if (!wait_child(pid_, clean ? std::chrono::milliseconds(2000) : std::chrono::milliseconds(15000))) {
      std::cerr << "aggvm-harness: reaper " << pid_ << " did not exit; killing it\n";
      (void)::kill(pid_, SIGKILL);
      (void)wait_child(pid_, std::chrono::milliseconds(2000));
    }
  } catch (const std::exception& e) {
    std::cerr << "aggvm-harness: reaping the reaper: " << e.what() << "\n";
  }
  pid_ = -1;
}

}  // namespace aggvm::harness::internal
