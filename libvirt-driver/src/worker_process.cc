#include "worker_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "error.h"

namespace aggvm::libvirt {

std::string ExitStatus::describe() const {
  if (signal) return fmt::format("killed by signal {} ({})", signal, strsignal(signal));
  return fmt::format("exit status {}", exit_status);
}

WorkerProcess::WorkerProcess(const std::vector<std::string>& argv, const std::string& log_file)
    : log_file_(log_file) {
  if (argv.empty()) fail("internal error: empty worker command");
  Fd log(::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
  if (!log) fail_errno(fmt::format("worker log {}", log_file));
  struct stat st {};
  fstat(log.get(), &st);
  log_start_ = st.st_size;
  Fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null) fail_errno("/dev/null");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  pid_ = ::fork();
  if (pid_ < 0) fail_errno("fork");
  if (pid_ == 0) {
    // Only async-signal-safe calls from here to exec.
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);  // the daemon blocks SIGTERM for its signalfd
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(null.get(), 0);
    dup2(log.get(), 1);
    dup2(log.get(), 2);
    closefrom(3);
    execv(args[0], args.data());
    const char* msg = "aggvm-noded: cannot execute the worker's QEMU: ";
    [[maybe_unused]] auto r1 = write(2, msg, strlen(msg));
    const char* why = strerror(errno);
    [[maybe_unused]] auto r2 = write(2, why, strlen(why));
    [[maybe_unused]] auto r3 = write(2, "\n", 1);
    _exit(127);
  }
  pidfd_ = Fd(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
  if (!pidfd_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    reaped_ = true;
    fail_errno("pidfd_open");
  }
}

WorkerProcess::~WorkerProcess() {
  if (!reaped_) terminate(std::chrono::milliseconds(2000));
}

ExitStatus WorkerProcess::reap() {
  if (reaped_) return status_;
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0) {
    if (errno != EINTR) fail_errno("waitpid");
  }
  reaped_ = true;
  status_ = WIFSIGNALED(st) ? ExitStatus{-1, WTERMSIG(st)} : ExitStatus{WEXITSTATUS(st), 0};
  return status_;
}

ExitStatus WorkerProcess::terminate(std::chrono::milliseconds grace) {
  if (reaped_) return status_;
  ::kill(pid_, SIGTERM);
  pollfd p{.fd = pidfd_.get(), .events = POLLIN, .revents = 0};
  int r;
  do r = ::poll(&p, 1, static_cast<int>(grace.count()));
  while (r < 0 && errno == EINTR);
  if (r == 0) ::kill(-pid_, SIGKILL);  // its process group: nothing left behind
  return reap();
}

std::string WorkerProcess::output_tail(size_t max_bytes) const {
  Fd fd(::open(log_file_.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return "";
  struct stat st {};
  fstat(fd.get(), &st);
  off_t from = std::max<off_t>(log_start_, st.st_size - static_cast<off_t>(max_bytes));
  std::string out(static_cast<size_t>(st.st_size - from), '\0');
  const ssize_t n = ::pread(fd.get(), out.data(), out.size(), from);
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

}  // namespace aggvm::libvirt
