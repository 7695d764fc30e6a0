// aggvm-noded: the node daemon of a worker host.  See node_daemon.h and
// docs/libvirt.md; its configuration is /etc/aggvm/noded.conf.
#include <signal.h>
#include <sys/signalfd.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "error.h"
#include "node_daemon.h"

int main(int argc, char** argv) {
  using aggvm::libvirt::DaemonConfig;
  DaemonConfig config;
  unsigned handshake_ms = 5000, stop_ms = 5000;
  CLI::App app{"aggvm-noded: starts and supervises the worker nodes of aggregated guests on this host"};
  app.set_config("--config", "/etc/aggvm/noded.conf", "configuration file (key = value)");
  app.add_option("--listen", config.listen_address, "the one address to listen on (IPv4 or IPv6 literal)")
      ->required();
  app.add_option("--port", config.port, "TCP port")->capture_default_str();
  app.add_option("--secret", config.secret_file, "cluster secret file, mode 0600")->capture_default_str();
  app.add_option("--qemu", config.qemu, "the patched QEMU that runs workers")->capture_default_str();
  app.add_option("--log-dir", config.log_dir, "where each worker's output goes")->capture_default_str();
  app.add_option("--handshake-timeout-ms", handshake_ms, "time a client has to authenticate")
      ->capture_default_str();
  app.add_option("--stop-timeout-ms", stop_ms, "from SIGTERM to SIGKILL when a worker is stopped")
      ->capture_default_str();
  app.add_option("--max-connections", config.max_connections, "connections served at once")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  config.handshake_timeout = std::chrono::milliseconds(handshake_ms);
  config.stop_timeout = std::chrono::milliseconds(stop_ms);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e aggvm-noded %l: %v");

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);  // before any thread starts
  signal(SIGPIPE, SIG_IGN);
  const int stop_fd = signalfd(-1, &mask, SFD_CLOEXEC);
  try {
    aggvm::libvirt::NodeDaemon daemon(std::move(config));
    daemon.serve(stop_fd);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}
