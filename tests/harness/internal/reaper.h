// The reaper: a child process that tears a cluster down if the process that
// built it dies without doing so (SIGKILL, crash, an uncaught signal).
//
// It is forked before anything is created and then told, over a socket, each
// namespace and process group as they come into being.  End of file on that
// socket (the parent is gone: the kernel closes its end) or SIGINT/SIGTERM/
// SIGHUP sent to the reaper makes it kill those processes and delete those
// namespaces, then exit.  release() (clean teardown) makes it exit at once.
// It runs in its own session so that a signal aimed at the test's process
// group does not take it down with the test.
#pragma once

#include <sys/types.h>

#include <string>

#include "internal/fd.h"

namespace aggvm::harness::internal {

class Reaper {
 public:
  Reaper();   // throws std::system_error
  ~Reaper();  // release(false): whatever is still watched gets removed
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;

  void watch_netns(const std::string& name);
  void watch_process_group(pid_t pgid);
  // Ends the reaper and waits for it (bounded).  clean: the cluster is gone,
  // it just exits; otherwise it cleans up first, as if we had died.
  // Idempotent, never throws.
  void release(bool clean = true) noexcept;
  pid_t pid() const { return pid_; }

 private:
  void send(const std::string& line);
  pid_t pid_ = -1;
  Fd socket_;
};

}  // namespace aggvm::harness::internal
