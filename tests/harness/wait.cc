// Bounded waits for children: a pidfd polled with the remaining time, so a
// wait neither spins nor blocks past its deadline.
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>
#include <unistd.h>

#include "internal/fd.h"
#include "internal/spawn.h"

namespace aggvm::harness {

std::string describe(const ExitStatus& status) {
  if (status.timed_out) return "still running (timed out)";
  if (status.exited) return "exited " + std::to_string(status.code);
  return "killed by signal " + std::to_string(status.signal) + " (" + strsignal(status.signal) + ")";
}

namespace internal {

ExitStatus exit_status_from_wait(int wstatus) {
  if (WIFEXITED(wstatus)) return ExitStatus{true, WEXITSTATUS(wstatus), 0, false};
  return ExitStatus{false, 0, WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0, false};
}

namespace {

// waitpid(WNOHANG): the status if it ended, nullopt if it runs.
std::optional<ExitStatus> try_reap(pid_t pid) {
  int wstatus = 0;
  pid_t r;
  do {
    r = ::waitpid(pid, &wstatus, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r < 0) throw std::system_error(errno, std::generic_category(), "waitpid " + std::to_string(pid));
  if (r == 0) return std::nullopt;
  return exit_status_from_wait(wstatus);
}

// waitid(WNOWAIT): whether it has ended, leaving it to be reaped.
bool has_ended(pid_t pid) {
  siginfo_t info{};
  int r;
  do {
    r = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
  } while (r < 0 && errno == EINTR);
  if (r < 0) throw std::system_error(errno, std::generic_category(), "waitid " + std::to_string(pid));
  return info.si_pid == pid;
}

}  // namespace

std::optional<ExitStatus> reap_if_ended(pid_t pid) { return try_reap(pid); }

bool wait_ended(pid_t pid, std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  if (has_ended(pid)) return true;
  // Raw syscall: glibc 2.36's <sys/pidfd.h> lacks C linkage for C++.
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  for (;;) {
    // Rounded up: poll() must not return before the deadline.
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return has_ended(pid);
    if (pidfd.valid()) {
      pollfd p{pidfd.get(), POLLIN, 0};
      const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 60'000)));
      if (r < 0 && errno != EINTR) throw std::system_error(errno, std::generic_category(), "poll pidfd");
    } else {
      // No pidfd (old kernel): short sleeps, still bounded by the deadline.
      std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(5)));
    }
    if (has_ended(pid)) return true;
  }
}

std::optional<ExitStatus> wait_child(pid_t pid, std::chrono::milliseconds timeout) {
  if (!wait_ended(pid, timeout)) return std::nullopt;
  return try_reap(pid);
}

}  // namespace internal
}  // namespace aggvm::harness
