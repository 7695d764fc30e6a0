// One worker QEMU run by aggvm-noded: started with its output in a log
// file, watched through a pidfd, stopped with SIGTERM then SIGKILL.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "channel.h"

namespace aggvm::libvirt {

struct ExitStatus {
  int exit_status = -1;  // -1 when a signal ended it
  int signal = 0;
  std::string describe() const;
};

class WorkerProcess {
 public:
  // Starts argv[0] with argv; stdin is /dev/null, stdout and stderr are
  // appended to log_file.  The child dies with the calling thread
  // (PR_SET_PDEATHSIG), so a daemon that dies takes its workers along.
  WorkerProcess(const std::vector<std::string>& argv, const std::string& log_file);
  ~WorkerProcess();  // terminates a worker still running
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Readable (POLLIN) once the worker has exited.
  int exit_fd() const { return pidfd_.get(); }
  bool running() const { return !reaped_; }
  // Reaps the worker once exit_fd() is readable.
  ExitStatus reap();
  // SIGTERM, then SIGKILL after grace; returns how it ended.
  ExitStatus terminate(std::chrono::milliseconds grace);
  // The end of what the worker wrote to its log in this run.
  std::string output_tail(size_t max_bytes) const;

 private:
  pid_t pid_ = -1;
  Fd pidfd_;
  bool reaped_ = false;
  ExitStatus status_;
  std::string log_file_;
  off_t log_start_ = 0;
};

}  // namespace aggvm::libvirt
