// Helpers shared by the harness tests.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

namespace aggvm::harness::testing {

// Runs GoogleTest; exits 77 (meson's "skipped") with the reason when this
// process cannot build clusters, or 1 with it under CI=true.
int run_tests_or_skip(int argc, char** argv);

// True once `pid` no longer exists or is a zombie.
bool pid_gone(pid_t pid);

// Polls `done` every 20 ms until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout);

// A fresh log dir for one cluster: <root>/<tag>-XXXXXX, where <root> is
// /tmp/aggvm-harness-test-<pid> of the test process (inherited by children
// through AGGVM_TEST_LOG_ROOT).  run_tests_or_skip removes the root when
// every test passed, and keeps it to read otherwise.
std::string test_log_dir(const std::string& tag);

// Value of a required environment variable (set by meson.build); throws if unset.
std::string required_env(const char* name);

// Harness namespaces (in /run/netns) whose name starts with `prefix`.
int count_netns_with_prefix(const std::string& prefix);

}  // namespace aggvm::harness::testing
