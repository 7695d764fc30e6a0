#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""`make demo`: one guest spanning two hosts, the way a user runs it, through
the distribution's libvirt.

The two hosts are network namespaces on this machine.  Host 0 (the head)
runs libvirtd; host 1 runs aggvm-noded.  The demo defines
docs/examples/aggvm-guest.xml (Debian's Linux under TCG, 4 vCPUs, one NUMA
cell per host) with virsh, starts it, shows what the guest saw and
`aggvmctl status`, and destroys it.  The last line is
`aggvm demo: ok hosts=H vcpus=V numa_nodes=N`, with the guest's own figures.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import libvirt_cluster as lc  # noqa: E402

lc.LOG_PREFIX = "  "

NAME = "aggvm-demo"


def banner(text):
    print(f"\n=== {text} ===", flush=True)


def demo(c):
    banner("host 1: aggvm-noded (the node daemon of a worker host)")
    c.start_noded(1)
    print(f"    listening on {c.hosts[1][1]}:7150, config {c.work / 'host1-noded.conf'}")

    banner("the domain: docs/examples/aggvm-guest.xml, with this machine's addresses and paths")
    path = c.domain_xml(NAME, 2, run="topology,clock,atomics")
    c.domains.add(NAME)
    text = path.read_text()
    meta = re.search(r"<aggvm:cluster.*?</aggvm:cluster>", text, re.S)
    numa = re.search(r"<numa>.*?</numa>", text, re.S)
    for snippet in (meta, numa):
        if snippet:
            print("\n".join("  " + line for line in snippet.group(0).splitlines()))
    c.virsh("define", str(path))

    banner("virsh start: node 0 here, node 1 on host 1")
    t0 = time.monotonic()
    r = c.virsh("start", NAME, check=False)
    if r.returncode != 0:
        return None
    log = (c.state / "log" / "qemu" / f"{NAME}.log")
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("aggvm:"):
            print(f"    domain log: {line}")
    c.virsh("list")

    banner("the guest's console (virsh console's serial port, logged)")
    console = c.wait_console(NAME, r"aggvm-guest: holding", 300)
    if console is None:
        print("    the guest did not reach its results")
        return None
    for line in console.splitlines():
        if line.startswith("aggvm-"):
            print(f"    {line}")
    res = lc.results(console)
    topo, atom, clock = res.get("topology", {}), res.get("atomics", {}), res.get("clock", {})
    banner("what the Linux guest saw")
    print(f"    vCPUs {topo.get('vcpus')}, NUMA nodes {topo.get('numa_nodes')}: "
          + ", ".join(f"node{i} cpus {topo.get(f'node{i}_cpus')} ({topo.get(f'node{i}_mb')} MiB)"
                      for i in range(int(topo.get("numa_nodes", 0)))))
    print(f"    atomics: {atom.get('threads')} threads on every vCPU, total {atom.get('total')} "
          f"(expected {atom.get('expected')})")
    print(f"    clock: every vCPU's TSC checked against vCPU 0's: {clock.get('tsc_sync')}")
    print(f"    {time.monotonic() - t0:.1f} s from virsh start to the guest's results")

    banner("aggvmctl status (libvirt's C API, node 0's monitor)")
    status = c.aggvmctl("status", NAME)
    r = c.virsh("qemu-monitor-command", NAME, '{"execute":"x-query-aggvm"}', check=False, quiet=True)
    topo["hosts"] = len(json.loads(r.stdout)["return"]["nodes"]) if r.returncode == 0 else 0

    banner("virsh destroy: every node ends")
    t1 = time.monotonic()
    c.virsh("destroy", NAME)
    gone = c.wait_no_qemu(NAME, 15)
    print(f"    {'no QEMU left on any host' if gone else 'QEMU processes left!'} "
          f"({time.monotonic() - t1:.1f} s)")
    for line in c.noded_log(1).splitlines()[-2:]:
        print(f"    host 1: {line}")
    c.virsh("undefine", NAME)
    c.domains.discard(NAME)
    ok = (topo.get("status") == "pass" and atom.get("status") == "pass" and status.returncode == 0
          and gone)
    return topo if ok else None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for opt in ("--qemu", "--harness", "--wrapper", "--noded", "--aggvmctl", "--kernel", "--initrd"):
        p.add_argument(opt, required=True)
    p.add_argument("--result", help=argparse.SUPPRESS)  # the inner run's figures, for the outer
    args = p.parse_args()
    why = lc.missing_prerequisite(args)
    if why:
        print(f"aggvm demo: FAILED ({why})")
        return 1
    if "AGGVM_HOST0_NETNS" not in os.environ:
        # The hosts exist while the inner run lasts; the verdict is printed
        # after the harness has removed them, as the last line.
        with tempfile.NamedTemporaryFile(prefix="aggvm-demo-", suffix=".json") as result:
            rc = subprocess.call([args.harness, "run", "--hosts", "2", "--name", "demo", "--",
                                  sys.executable, __file__, "--result", result.name] + sys.argv[1:])
            text = Path(result.name).read_text()
        topo = json.loads(text) if rc == 0 and text else None
        if topo is None:
            print(f"aggvm demo: FAILED (exit {rc})")
            return 1
        print(f"\naggvm demo: ok hosts={topo.get('hosts')} vcpus={topo.get('vcpus')} "
              f"numa_nodes={topo.get('numa_nodes')}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="aggvm-demo-"))
    c = lc.Cluster(lc.Tools(args), work, 2)
    topo = None
    try:
        version = subprocess.run(["libvirtd", "--version"], capture_output=True, text=True).stdout.split()[-1]
        banner(f"host 0 (head, {c.hosts[0][1]}): libvirtd {version}, private to this demo")
        c.start_libvirtd()
        topo = demo(c)
    except Exception as e:  # noqa: BLE001: the demo says what went wrong
        print(f"error: {e}")
    finally:
        c.teardown()
    if topo is None:
        print(f"demo failed: logs in {work}")
        return 1
    subprocess.run(["rm", "-rf", str(work)])
    Path(args.result).write_text(json.dumps(topo))
    return 0


if __name__ == "__main__":
    sys.exit(main())
