#include "test_util.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "harness.h"
#include "internal/netns.h"

namespace aggvm::harness::testing {

int run_tests_or_skip(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (auto reason = unavailable_reason()) {
    if (prerequisites_required()) {
      std::cout << "FAIL: the harness cannot build network namespaces here: " << *reason
                << " (CI=true: a missing prerequisite is an error, not a skip)\n";
      return 1;
    }
    std::cout << "SKIP: the harness cannot build network namespaces here: " << *reason << "\n";
    return 77;
  }
  const std::string root = "/tmp/aggvm-harness-test-" + std::to_string(::getpid());
  if (::setenv("AGGVM_TEST_LOG_ROOT", root.c_str(), 1) != 0) throw std::runtime_error("setenv");
  const int rc = RUN_ALL_TESTS();
  if (rc == 0) {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  } else {
    std::cout << "logs kept in " << root << "\n";
  }
  return rc;
}

std::string test_log_dir(const std::string& tag) {
  const std::string root = required_env("AGGVM_TEST_LOG_ROOT");
  std::filesystem::create_directories(root);
  std::string path = root + "/" + tag + "-XXXXXX";
  if (::mkdtemp(path.data()) == nullptr) throw std::system_error(errno, std::generic_category(), "mkdtemp " + path);
  return path;
}

bool pid_gone(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string required_env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') throw std::runtime_error(std::string(name) + " is not set (meson.build sets it)");
  return value;
}

int count_netns_with_prefix(const std::string& prefix) {
  int n = 0;
  for (const auto& name : internal::list_netns()) n += name.rfind(prefix, 0) == 0 ? 1 : 0;
  return n;
}

}  // namespace aggvm::harness::testing
