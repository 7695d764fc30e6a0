#include <signal.h>

#include <cerrno>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "harness.h"
#include "internal/proc_state.h"
#include "internal/spawn.h"

namespace aggvm::harness {
namespace internal {

std::optional<ExitStatus> ProcState::reap(std::chrono::milliseconds timeout) {
  {
    std::lock_guard lock(mu_);
    if (status_) return status_;
  }
  // Wait without the lock, so that kill() from another thread is not held up.
  bool ended;
  try {
    ended = wait_ended(pid, timeout);
  } catch (const std::system_error& e) {
    if (e.code().value() != ECHILD) throw;
    ended = true;  // another thread reaped it meanwhile: status_ is set
  }
  if (!ended) return std::nullopt;
  std::lock_guard lock(mu_);
  if (!status_) status_ = reap_if_ended(pid);
  return status_;
}

void ProcState::signal(int sig, bool group) {
  std::lock_guard lock(mu_);
  // Unreaped means the pid (and group id) is still ours, even as a zombie.
  if (!status_) (void)::kill(group ? -pid : pid, sig);  // ESRCH: group already empty
}

}  // namespace internal

namespace {

internal::ProcState& checked(const std::shared_ptr<internal::ProcState>& state) {
  if (!state) throw std::logic_error("aggvm::harness::Process used after being moved from");
  return *state;
}

}  // namespace

Process::Process(std::shared_ptr<internal::ProcState> state) : state_(std::move(state)) {}
Process::Process(Process&&) noexcept = default;
Process& Process::operator=(Process&&) noexcept = default;
Process::~Process() = default;

int Process::pid() const { return checked(state_).pid; }

bool Process::running() { return !checked(state_).reap(std::chrono::milliseconds(0)); }

ExitStatus Process::wait(std::chrono::milliseconds timeout) {
  if (auto status = checked(state_).reap(timeout)) return *status;
  return ExitStatus{false, 0, 0, true};
}

void Process::kill(int sig) { checked(state_).signal(sig, false); }

const std::filesystem::path& Process::log_path() const { return checked(state_).log; }

std::string Process::log() const {
  std::ifstream in(log_path(), std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + log_path().string());
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

std::optional<std::string> Process::wait_for_line(const std::string& regex, std::chrono::milliseconds timeout) {
  const std::regex re(regex);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t scanned = 0;  // bytes of complete lines already checked
  for (;;) {
    // Decide whether the process had ended *before* reading, so that a
    // line written just before it exited is still seen.
    const bool ended = !running();
    const std::string text = log();
    size_t nl;
    while ((nl = text.find('\n', scanned)) != std::string::npos) {
      std::string line = text.substr(scanned, nl - scanned);
      scanned = nl + 1;
      if (std::regex_search(line, re)) return line;
    }
    if (ended) {
      std::string tail = text.substr(scanned);  // an unterminated last line
      if (!tail.empty() && std::regex_search(tail, re)) return tail;
      return std::nullopt;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(deadline - now,
                                                                              std::chrono::milliseconds(10)));
  }
}

}  // namespace aggvm::harness
