#include "log.h"

#include <memory>

#include <spdlog/sinks/stdout_sinks.h>

namespace aggvm::dsm {

spdlog::logger& log() {
  // Leaked on purpose (see log.h); the stderr sink's own lock is a static
  // mutex, whose destruction is a no-op.
  static spdlog::logger* const logger = [] {
    auto* l = new spdlog::logger("aggvm-dsm", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    l->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");  // spdlog's default, without a logger name
    return l;
  }();
  return *logger;
}

}  // namespace aggvm::dsm
