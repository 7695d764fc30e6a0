// Whether this process can build clusters at all, decided up front so that
// tests skip (exit 77) with a reason instead of failing half-way, or fail
// with it under CI=true (prerequisites_required).
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "harness.h"
#include "internal/spawn.h"

namespace aggvm::harness {
namespace {

// Tries unshare(CLONE_NEWNET) in a throwaway child: catches missing
// privileges and kernels or containers without network namespaces.
std::optional<std::string> probe_unshare() {
  const pid_t pid = ::fork();
  if (pid < 0) return std::string("fork: ") + std::strerror(errno);
  if (pid == 0) _exit(::unshare(CLONE_NEWNET) == 0 ? 0 : (errno & 0x7f) + 1);
  auto status = internal::wait_child(pid, std::chrono::milliseconds(5000));
  if (!status) {
    (void)::kill(pid, SIGKILL);
    (void)internal::wait_child(pid, std::chrono::milliseconds(2000));
    return std::string("unshare(CLONE_NEWNET) probe did not finish");
  }
  if (status->exited && status->code == 0) return std::nullopt;
  if (status->exited) return std::string("unshare(CLONE_NEWNET): ") + std::strerror(status->code - 1);
  return std::string("unshare(CLONE_NEWNET) probe ") + describe(*status);
}

bool have_tool(const char* name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    if (::access((std::string(dir) + name).c_str(), X_OK) == 0) return true;
  }
  return internal::find_in_path(name).has_value();
}

}  // namespace

std::optional<std::string> unavailable_reason() {
  if (::geteuid() != 0) return std::string("not root: creating network namespaces needs root");
  if (!have_tool("ip")) return std::string("`ip` (iproute2) not found");
  return probe_unshare();
}

std::optional<std::string> firewall_unavailable_reason() {
  if (!have_tool("nft")) return std::string("`nft` (nftables) not found");
  return std::nullopt;
}

bool prerequisites_required() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string_view(ci) == "true";
}

}  // namespace aggvm::harness
