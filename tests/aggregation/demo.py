#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""`make demo`: one guest spanning two hosts, then the test guest the same way.

1. Debian's Linux under TCG, 4 vCPUs and 2 NUMA nodes over 2 hosts (network
   namespaces on this machine): the guest's own view of its vCPUs and NUMA
   nodes, its threaded workload's result, and node 0's x-query-aggvm.
2. testos under KVM (TCG where /dev/kvm is unusable), 2 hosts x 2 vCPUs: AP
   bring-up and IPIs across hosts.
The last line is `aggvm demo: ok hosts=H vcpus=V numa_nodes=N`, with the
figures the Linux guest itself reported.
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "guest" / "testos"))
sys.path.insert(0, str(HERE))
import aggvm_guest  # noqa: E402
import run_testos  # noqa: E402


def banner(text):
    print(f"\n=== {text} ===", flush=True)


def run(args, extra, title):
    banner(title)
    rc, report, _ = aggvm_guest.run_reported(args.qemu, args.harness, extra)
    return rc, report


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qemu", required=True)
    p.add_argument("--harness", required=True)
    p.add_argument("--linux-kernel", required=True)
    p.add_argument("--linux-initrd", required=True)
    p.add_argument("--testos", required=True)
    args = p.parse_args()

    rc, linux = run(args, ["--guest", "linux", "--accel", "tcg", "--hosts", "2",
                           "--vcpus-per-host", "2", "--kernel", args.linux_kernel,
                           "--initrd", args.linux_initrd],
                    "Debian Linux (TCG), 2 hosts x 2 vCPUs, one NUMA node per host")
    if rc != 0:
        print(f"aggvm demo: FAILED (Linux guest, exit {rc})")
        return 1
    topo = linux["results"].get("topology", {})
    atom = linux["results"].get("atomics", {})
    banner("what the Linux guest saw")
    print(f"  vCPUs {topo.get('vcpus')}, NUMA nodes {topo.get('numa_nodes')}: "
          + ", ".join(f"node{i} cpus {topo.get(f'node{i}_cpus')} ({topo.get(f'node{i}_mb')} MiB)"
                      for i in range(int(topo.get('numa_nodes', 0)))))
    print(f"  atomics: {atom.get('threads')} threads, total {atom.get('total')} "
          f"(expected {atom.get('expected')}), checksum {atom.get('checksum')}")
    clock = linux["results"].get("clock", {})
    print(f"  clock: Linux checked every vCPU's TSC against vCPU 0's: {clock.get('tsc_sync')}; "
          f"clocksource {clock.get('clocksource')}")
    print(f"  seconds from start to the guest's result: {linux.get('seconds_to_result', 0):.1f}")

    accel = "kvm" if run_testos.kvm_unusable() is None else "tcg"
    rc, tos = run(args, ["--guest", "testos", "--accel", accel, "--hosts", "2",
                         "--vcpus-per-host", "2", "--kernel", args.testos],
                  f"testos ({accel.upper()}), 2 hosts x 2 vCPUs: AP bring-up, IPIs across hosts")
    if rc != 0:
        print(f"aggvm demo: FAILED (testos guest, exit {rc})")
        return 1
    print(f"\naggvm demo: ok hosts={linux['hosts']} vcpus={topo.get('vcpus')} "
          f"numa_nodes={topo.get('numa_nodes')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
