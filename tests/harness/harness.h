// aggvm test harness: several "hosts" on one machine.
//
// A Cluster is N network namespaces (the hosts) wired to a Linux bridge that
// lives in one more namespace (the switch).  Nothing is created in the root
// namespace, so deleting the namespaces removes every veth, the bridge and
// every nftables table with them.  Processes are started inside a host with
// Host::spawn; a reaper process watches the test process and tears the
// cluster down even if the test is SIGKILLed.
//
// Not thread-safe: use a Cluster and its Hosts from one thread (Process
// objects may be waited on from any thread).  Processes get
// PR_SET_PDEATHSIG(SIGKILL), which Linux ties to the *thread* that spawned
// them: spawn from a thread that outlives the processes.
#pragma once

#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace aggvm::harness {

namespace internal {
struct ProcState;
struct HostContext;
class Reaper;
}  // namespace internal

struct ClusterOptions {
  int hosts = 2;                          // 1..16
  std::string name = "t";                 // short tag used in netns names: [A-Za-z0-9_], 1..12 chars
  std::filesystem::path log_dir{};        // empty: a fresh /tmp/aggvm-harness-<pid>-<name>-<n>
  // Called with one line per step while the cluster is set up (e.g. for a CLI).
  std::function<void(const std::string&)> on_progress{};
};

struct ExitStatus {
  bool exited;     // true: exited normally with `code`
  int code;
  int signal;      // the signal that ended it, when !exited && !timed_out
  bool timed_out;  // wait() gave up; the process is still running
};

// "exited 0", "killed by signal 9 (Killed)", "still running (timed out)".
std::string describe(const ExitStatus& status);

// A process started inside a host.  Move-only.  Destroying a Process does not
// stop it: the Host keeps track of it, and Host::kill_all / Cluster::teardown
// end it.
class Process {
 public:
  Process(Process&&) noexcept;
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  int pid() const;
  bool running();                         // non-blocking reap
  // Bounded; on timeout returns timed_out=true and leaves it running.
  ExitStatus wait(std::chrono::milliseconds timeout);
  void kill(int sig = SIGKILL);           // this process only (Host::kill_all signals groups)
  const std::filesystem::path& log_path() const;  // stdout+stderr of the process
  std::string log() const;                // whole log content
  // Waits until a complete line of the log matches `regex` (std::regex_search,
  // ECMAScript) and returns it; the log is searched from its start.  nullopt
  // after `timeout`, or as soon as the process has ended without such a line.
  std::optional<std::string> wait_for_line(const std::string& regex, std::chrono::milliseconds timeout);

 private:
  friend class Host;
  explicit Process(std::shared_ptr<internal::ProcState> state);
  std::shared_ptr<internal::ProcState> state_;
};

class Host {
 public:
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;
  ~Host();

  int index() const;
  const std::string& netns() const;       // namespace name (see `ip netns list`)
  const std::string& address() const;     // IPv4 address on the cluster bridge, e.g. "10.199.7.2"
  // Starts argv[0] (PATH search) inside this host, in its own process group,
  // stdin from /dev/null, stdout+stderr to a log file in the cluster's log
  // dir, environment = ours + extra_env.  Throws std::runtime_error if it
  // cannot be started (including exec failure).
  Process spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& extra_env = {});
  void cut_off();                         // nftables drop of all traffic in and out (except lo)
  void restore();                         // removes the cut
  bool is_cut_off() const;
  void kill_all(int sig = SIGKILL);       // every process group the harness started in this host

 private:
  friend class Cluster;
  explicit Host(std::unique_ptr<internal::HostContext> ctx);
  void end_processes(std::chrono::milliseconds timeout);  // SIGKILL + reap, for teardown
  std::unique_ptr<internal::HostContext> ctx_;
};

// RAII: the destructor tears everything down.
class Cluster {
 public:
  explicit Cluster(const ClusterOptions&);  // throws std::runtime_error with context on failure
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  Host& host(int i);                      // throws std::out_of_range
  int size() const;
  const std::filesystem::path& log_dir() const;
  const std::string& switch_netns() const;  // the namespace holding the bridge
  int reaper_pid() const;                   // -1 once torn down
  // Idempotent; kills processes, deletes namespaces (with their veths, bridge
  // and nft tables), ends the reaper.  Never throws; problems go to stderr.
  void teardown();

 private:
  void build();
  void progress(const std::string& line) const;

  ClusterOptions options_;
  std::filesystem::path log_dir_;
  std::string prefix_;                    // aggvm-<pid>-<counter>-<name>
  std::string subnet_;                    // "10.199.<k>."
  std::string switch_netns_;
  std::unique_ptr<internal::Reaper> reaper_;
  std::vector<std::unique_ptr<Host>> hosts_;
  std::vector<std::string> created_netns_;
  bool torn_down_ = false;
};

// nullopt if this process may create network namespaces (root, `ip` present);
// else the reason it cannot.
std::optional<std::string> unavailable_reason();
// nullopt if Host::cut_off can work (`nft` present); else the reason.
std::optional<std::string> firewall_unavailable_reason();

// True when the environment has CI=true: a test whose prerequisite is
// missing (network namespaces, /dev/kvm) must then fail with the reason
// instead of skipping, so that CI cannot pass by skipping everything.
bool prerequisites_required();

}  // namespace aggvm::harness
