// Named network namespaces (/run/netns/<name>, as iproute2 keeps them) and
// the naming scheme that lets a later run find namespaces a dead run left.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "internal/fd.h"

namespace aggvm::harness::internal {

// Every harness namespace is "aggvm-<owner pid>-<counter>-<tag>-<role>".
inline constexpr std::string_view kNetnsPrefix = "aggvm-";

std::string netns_path(const std::string& name);

// Opens /run/netns/<name> for setns(); throws std::system_error.
Fd open_netns(const std::string& name);

// Names in /run/netns (empty if the directory does not exist).
std::vector<std::string> list_netns();

// The owner pid encoded in a harness namespace name; nullopt for other names.
std::optional<pid_t> netns_owner(std::string_view name);

// SIGKILLs every process whose network namespace is <name>'s, repeating until
// none is left (children may fork meanwhile) or `timeout` passes.  Returns the
// number still there (0 on success, also when the namespace does not exist).
int kill_netns_processes(const std::string& name, std::chrono::milliseconds timeout);

// Detaches and removes /run/netns/<name>, which is what `ip netns delete`
// does; done with syscalls so that the reaper needs no exec.  The kernel then
// frees the namespace with its interfaces and nftables tables once no process
// is left in it.  A missing namespace is not an error.  Returns an error text.
std::optional<std::string> delete_netns(const std::string& name);

// Kills the processes of, and deletes, harness namespaces whose owner process
// no longer exists (left by a run that died before its reaper could act).
// Problems are written to stderr; never throws.
void remove_stale_netns();

}  // namespace aggvm::harness::internal
