#include "internal/command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>

#include "internal/fd.h"
#include "internal/netns.h"
#include "internal/spawn.h"

namespace aggvm::harness::internal {

std::string tool(const std::string& name) {
  if (auto found = find_in_path(name)) return *found;
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    const std::string candidate = dir + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return name;
}

namespace {

// Reads both pipes until EOF on both or the deadline; returns false on timeout.
bool drain(Fd& out_fd, Fd& err_fd, std::string& out, std::string& err,
           std::chrono::steady_clock::time_point deadline) {
  while (out_fd.valid() || err_fd.valid()) {
    pollfd fds[2] = {{out_fd.get(), POLLIN, 0}, {err_fd.get(), POLLIN, 0}};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    const int r = ::poll(fds, 2, static_cast<int>(left.count()));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "poll");
    }
    Fd* owners[2] = {&out_fd, &err_fd};
    std::string* sinks[2] = {&out, &err};
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        owners[i]->reset();
      }
    }
  }
  return true;
}

}  // namespace

CommandResult run_command(const std::vector<std::string>& argv, const CommandOptions& options) {
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;
  Pipe out = make_pipe(), err = make_pipe();
  Fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull.valid()) throw std::system_error(errno, std::generic_category(), "open /dev/null");
  Fd netns;
  if (!options.netns.empty()) netns = open_netns(options.netns);

  SpawnSpec spec;
  spec.argv = argv;
  spec.netns_fd = netns.get();
  spec.stdin_fd = devnull.get();
  spec.stdout_fd = out.write.get();
  spec.stderr_fd = err.write.get();
  spec.die_with_parent = true;
  const pid_t pid = spawn_child(spec);
  out.write.reset();
  err.write.reset();


  CommandResult result{};
  const bool drained = drain(out.read, err.read, result.out, result.err, deadline);
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  std::optional<ExitStatus> status;
  if (drained) status = wait_child(pid, std::max(left, std::chrono::milliseconds(0)));
  if (!status) {
    ::kill(pid, SIGKILL);
    (void)wait_child(pid, std::chrono::milliseconds(2000));
    throw std::runtime_error(join_argv(argv) + ": no result within " + std::to_string(options.timeout.count()) +
                             " ms; killed");
  }
  result.status = *status;
  return result;
}

std::string run_checked(const std::vector<std::string>& argv, const CommandOptions& options) {
  CommandResult result = run_command(argv, options);
  if (!result.status.exited || result.status.code != 0) {
    std::string where = options.netns.empty() ? "" : " (in netns " + options.netns + ")";
    std::string err = result.err;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    throw std::runtime_error(join_argv(argv) + where + ": " + describe(result.status) +
                             (err.empty() ? "" : ": " + err));
  }
  return result.out;
}

}  // namespace aggvm::harness::internal
