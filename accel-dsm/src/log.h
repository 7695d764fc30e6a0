// The library's logger.
//
// Not spdlog's default logger: that one belongs to spdlog's registry, a
// static object destroyed when the process exits, and the service thread
// may still log then.  QEMU, for one, stops the node from an exit notifier
// that runs after the statics created since it registered are gone (a
// vCPU thread calls exit() for isa-debug-exit), and a node failing in that
// window logged through a destroyed logger: SIGSEGV.  This logger is
// never destroyed.
#pragma once

#include <spdlog/logger.h>

namespace aggvm::dsm {

spdlog::logger& log();

}  // namespace aggvm::dsm
