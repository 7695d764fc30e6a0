#include "internal/netns.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <iostream>
#include <system_error>
#include <thread>

namespace aggvm::harness::internal {
namespace {

constexpr const char* kNetnsDir = "/run/netns";

// Numeric /proc entries (processes).
std::vector<pid_t> all_pids() {
  std::vector<pid_t> pids;
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return pids;
  while (dirent* entry = ::readdir(dir)) {
    pid_t pid = 0;
    const char* end = entry->d_name + std::strlen(entry->d_name);
    auto [ptr, ec] = std::from_chars(entry->d_name, end, pid);
    if (ec == std::errc() && ptr == end && pid > 0) pids.push_back(pid);
  }
  ::closedir(dir);
  return pids;
}

bool same_file(const struct stat& a, const struct stat& b) { return a.st_dev == b.st_dev && a.st_ino == b.st_ino; }

}  // namespace

std::string netns_path(const std::string& name) { return std::string(kNetnsDir) + "/" + name; }

Fd open_netns(const std::string& name) {
  Fd fd(::open(netns_path(name).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) throw std::system_error(errno, std::generic_category(), "open " + netns_path(name));
  return fd;
}

std::vector<std::string> list_netns() {
  std::vector<std::string> names;
  DIR* dir = ::opendir(kNetnsDir);
  if (dir == nullptr) return names;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') names.emplace_back(entry->d_name);
  }
  ::closedir(dir);
  return names;
}

std::optional<pid_t> netns_owner(std::string_view name) {
  if (name.substr(0, kNetnsPrefix.size()) != kNetnsPrefix) return std::nullopt;
  name.remove_prefix(kNetnsPrefix.size());
  pid_t pid = 0;
  auto [ptr, ec] = std::from_chars(name.data(), name.data() + name.size(), pid);
  if (ec != std::errc() || pid <= 0 || ptr == name.data() + name.size() || *ptr != '-') return std::nullopt;
  return pid;
}

int kill_netns_processes(const std::string& name, std::chrono::milliseconds timeout) {
  struct stat ns {};
  if (::stat(netns_path(name).c_str(), &ns) != 0) return 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const pid_t self = ::getpid();
  for (;;) {
    int found = 0;
    for (pid_t pid : all_pids()) {
      struct stat st {};
      const std::string link = "/proc/" + std::to_string(pid) + "/ns/net";
      // Zombies have no namespaces any more, so they do not count.
      if (pid == self || ::stat(link.c_str(), &st) != 0 || !same_file(st, ns)) continue;
      ++found;
      (void)::kill(pid, SIGKILL);  // ESRCH: it is gone already, which is the goal
    }
    if (found == 0 || std::chrono::steady_clock::now() >= deadline) return found;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // let the killed ones exit
  }
}

std::optional<std::string> delete_netns(const std::string& name) {
  const std::string path = netns_path(name);
  // EINVAL: not a mount point (half-created); ENOENT: already gone.
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
    return "umount " + path + ": " + std::strerror(errno);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return "unlink " + path + ": " + std::strerror(errno);
  return std::nullopt;
}

namespace {

// `ip netns add` creates the file, then bind-mounts the namespace onto it.
// A plain file modified in the last seconds is one being created now, by a
// process whose pid merely looks dead to us (another pid namespace) or by a
// test that fakes a dead owner; older plain files are leftovers.
bool being_created(const std::string& name) {
  struct stat st {}, dir {};
  if (::stat(netns_path(name).c_str(), &st) != 0 || ::stat(kNetnsDir, &dir) != 0) return false;
  if (st.st_dev != dir.st_dev) return false;  // mounted: a complete namespace
  return ::time(nullptr) - st.st_mtime < 10;
}

}  // namespace

void remove_stale_netns() {
  for (const std::string& name : list_netns()) {
    const auto owner = netns_owner(name);
    if (!owner || ::kill(*owner, 0) == 0 || errno != ESRCH || being_created(name)) continue;
    const int left = kill_netns_processes(name, std::chrono::milliseconds(2000));
    if (left != 0) std::cerr << "aggvm-harness: stale netns " << name << ": " << left << " processes survive\n";
    if (auto error = delete_netns(name)) std::cerr << "aggvm-harness: stale netns " << name << ": " << *error << "\n";
  }
}

}  // namespace aggvm::harness::internal
