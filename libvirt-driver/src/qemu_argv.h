// The QEMU command lines of an aggregated domain's nodes, derived from the
// one libvirt built for the domain.
//
// Node 0 runs libvirt's command line as it is, with the accelerator made
// aggregated and the cluster objects added.  A worker runs the same machine
// (-machine -cpu -smp -m -numa and the same devices at the same addresses),
// but its device back-ends are never used: node 0 serves every device
// access.  So each back-end that names something of the head host (a file
// descriptor, a disk image, a socket, a tap) becomes a null one, and
// anything not understood is refused rather than passed on: a worker host
// runs only options on this list, and opens no file but the boot files the
// machine names (-kernel, -initrd, -bios), no socket and no descriptor.
#pragma once

#include <string>
#include <vector>

#include "cluster_spec.h"

namespace aggvm::libvirt {

inline constexpr const char* kClusterObjectId = "aggvm0";
inline constexpr const char* kSecretObjectId = "aggvm-secret";

// The value of `-name guest=NAME,...`, or "" when there is none (libvirt's
// capability probes run QEMU without a name).
std::string domain_name(const std::vector<std::string>& argv);

// True for runs that are not a domain: capability probing (-machine none),
// -version, -help.  The wrapper passes these straight to QEMU.
bool is_probe(const std::vector<std::string>& argv);

// `-object aggvm-cluster` (and its secret) for node `node`.
std::vector<std::string> cluster_args(const ClusterSpec& spec, uint16_t node, const std::string& secret_file);

// Node 0's command line: argv (argv[0] replaced by qemu) with the
// accelerator aggregated and cluster_args(0).
std::vector<std::string> head_command(const std::vector<std::string>& argv, const std::string& qemu,
                                      const ClusterSpec& spec);

// A worker's command line, built from libvirt's argv for node 0.  Throws
// DriverError naming an option it does not know how to run on a worker.
std::vector<std::string> worker_command(const std::vector<std::string>& argv, const std::string& qemu,
                                        const ClusterSpec& spec, uint16_t node, const std::string& secret_file);

}  // namespace aggvm::libvirt
