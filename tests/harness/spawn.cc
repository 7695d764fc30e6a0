// fork + exec with setns, redirections and process-group/death-signal setup.
// Everything the child needs is prepared before fork(), so the child only
// makes async-signal-safe calls (the test process may have threads).
#include "internal/spawn.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "internal/fd.h"

extern char** environ;

namespace aggvm::harness::internal {
namespace {

// Why a child did not reach exec: sent over a close-on-exec pipe.
struct ChildFailure {
  int step;
  int err;
};

constexpr const char* kStepNames[] = {"setpgid", "prctl(PR_SET_PDEATHSIG)", "setns", "dup2", "sigprocmask", "exec"};
enum Step { kSetpgid, kPdeathsig, kSetns, kDup2, kSigmask, kExec };

[[noreturn]] void fail(int err_fd, Step step) {
  ChildFailure failure{step, errno};
  // Nothing more can be done in the child if this write fails: the parent
  // then sees a plain EOF and, later, exit code 127.
  if (::write(err_fd, &failure, sizeof failure) < 0) _exit(126);
  _exit(127);
}

bool redirect(int from, int to) {
  if (from < 0) return true;
  if (from == to) return ::fcntl(to, F_SETFD, 0) == 0;  // dup2 would keep O_CLOEXEC
  return ::dup2(from, to) == to;
}

[[noreturn]] void child(const SpawnSpec& spec, pid_t parent, char* const* argv, char* const* envp, int err_fd) {
  if (spec.new_process_group && ::setpgid(0, 0) != 0) fail(err_fd, kSetpgid);
  if (spec.die_with_parent) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(err_fd, kPdeathsig);
    if (::getppid() != parent) _exit(127);  // the parent died before prctl took effect
  }
  if (spec.netns_fd >= 0 && ::setns(spec.netns_fd, CLONE_NEWNET) != 0) fail(err_fd, kSetns);
  if (!redirect(spec.stdin_fd, 0) || !redirect(spec.stdout_fd, 1) || !redirect(spec.stderr_fd, 2))
    fail(err_fd, kDup2);
  // Start from default dispositions and an empty mask, whatever the test did.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) (void)::sigaction(sig, &dfl, nullptr);  // EINVAL for RT-reserved ones
  }
  sigset_t none;
  sigemptyset(&none);
  if (::sigprocmask(SIG_SETMASK, &none, nullptr) != 0) fail(err_fd, kSigmask);
  if (envp != nullptr) {
    ::execvpe(argv[0], argv, envp);
  } else {
    ::execvp(argv[0], argv);
  }
  fail(err_fd, kExec);
}

std::vector<char*> c_array(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (const auto& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

}  // namespace

pid_t spawn_child(const SpawnSpec& spec) {
  if (spec.argv.empty()) throw std::runtime_error("spawn: empty argv");
  std::vector<char*> argv = c_array(spec.argv);
  std::vector<char*> envp = c_array(spec.env);
  Pipe errors = make_pipe();
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork for " + join_argv(spec.argv));
  if (pid == 0) child(spec, parent, argv.data(), spec.env.empty() ? nullptr : envp.data(), errors.write.get());

  // Also set the group from here, so that it exists as soon as we return.
  if (spec.new_process_group) (void)::setpgid(pid, pid);  // EACCES once the child has exec'd: fine
  errors.write.reset();
  ChildFailure failure{};
  ssize_t n;
  do {
    n = ::read(errors.read.get(), &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  if (n == 0) return pid;  // EOF: exec succeeded and closed the pipe

  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(sizeof failure)) {
    throw std::runtime_error("spawn " + join_argv(spec.argv) + ": child failed before exec (" +
                             describe(exit_status_from_wait(wstatus)) + ")");
  }
  throw std::runtime_error("spawn " + join_argv(spec.argv) + ": " + kStepNames[failure.step] +
                           " failed: " + std::strerror(failure.err));
}

std::vector<std::string> environment_with(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry(*e);
    const std::string key = entry.substr(0, entry.find('='));
    if (extra.find(key) == extra.end()) env.push_back(std::move(entry));
  }
  for (const auto& [key, value] : extra) env.push_back(key + "=" + value);
  return env;
}

std::string join_argv(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& arg : argv) {
    if (!out.empty()) out += ' ';
    const bool plain = !arg.empty() && arg.find_first_of(" \t\n'\"\\$;&|<>(){}*?") == std::string::npos;
    out += plain ? arg : "'" + arg + "'";
  }
  return out;
}

std::optional<std::string> find_in_path(const std::string& program) {
  if (program.find('/') != std::string::npos) {
    if (::access(program.c_str(), X_OK) == 0) return program;
    return std::nullopt;
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = dirs.substr(start, end - start);
    if (dir.empty()) dir = ".";
    const std::string candidate = dir + "/" + program;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    start = end + 1;
  }
  return std::nullopt;
}

}  // namespace aggvm::harness::internal
