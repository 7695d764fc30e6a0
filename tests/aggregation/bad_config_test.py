#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Bad aggregated-guest configurations fail at start-up, clearly and quickly.

Each case starts the node(s) on the loopback address and expects every one
to exit non-zero within a bound, with a message naming the problem:
an unknown node id, a placement naming a vCPU the machine lacks, a wrong
cluster secret, the bootstrap vCPU placed off node 0, an unreachable peer,
late nodes that would home memory or run a vCPU at start, or that find no
guest to join, guest RAM that is shared or file-backed, vmport asked for, a
CPU latency bound below -1.  Exit 0 pass,
1 fail, 77 skip.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SKIP = 77
BOUND_S = 30


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def machine(qemu, backend0="memory-backend-ram,id=m0,size=32M", machine_opts="pc"):
    return [qemu, "-nodefaults", "-display", "none", "-machine", machine_opts, "-m", "64",
            "-accel", "tcg,aggregate=agg0", "-smp", "4",
            "-object", backend0,
            "-object", "memory-backend-ram,id=m1,size=32M",
            "-numa", "node,nodeid=0,cpus=0-1,memdev=m0",
            "-numa", "node,nodeid=1,cpus=2-3,memdev=m1"]


def cluster(node, addresses, key, *extra, timeout_ms=2000):
    props = [f"aggvm-cluster,id=agg0,node={node},secret=s0,timeout={timeout_ms}"]
    props += [f"addresses={a}" for a in addresses] + list(extra)
    return ["-object", f"secret,id=s0,file={key},format=raw", "-object", ",".join(props)]


def cluster_json(node, addresses, key, **extra):
    """The same object in QEMU's JSON form, which lists of structs need."""
    obj = {"qom-type": "aggvm-cluster", "id": "agg0", "node": node, "secret": "s0",
           "timeout": 2000, "addresses": addresses, **extra}
    return ["-object", f"secret,id=s0,file={key},format=raw", "-object", json.dumps(obj)]


def run_nodes(cmds):
    """Starts every command, waits for all; returns [(rc or None, output)]."""
    procs = [subprocess.Popen(c, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in cmds]
    out = []
    deadline = time.monotonic() + BOUND_S
    for p in procs:
        try:
            text, _ = p.communicate(timeout=max(1, deadline - time.monotonic()))
            out.append((p.returncode, text))
        except subprocess.TimeoutExpired:
            p.kill()
            text, _ = p.communicate()
            out.append((None, text))
    return out


def main():
    qemu = os.environ.get("AGGVM_QEMU", "")
    if not (qemu and os.access(qemu, os.X_OK)):
        print(f"bad-config: SKIP: the patched QEMU ({qemu or 'AGGVM_QEMU unset'}) is not built")
        return SKIP
    work = Path(tempfile.mkdtemp(prefix="aggvm-badcfg-"))
    key, other_key = work / "a.key", work / "b.key"
    key.write_text(secrets.token_hex(32))
    other_key.write_text(secrets.token_hex(32))
    def fresh():
        # New ports for every case: a node that just exited may leave its
        # listening port in TIME_WAIT.
        return [f"127.0.0.1:{p}" for p in free_ports(2)]
    addrs, addrs2, addrs3 = fresh(), fresh(), fresh()
    p1 = addrs3[1].split(":")[1]

    cases = [
        ("unknown node", [machine(qemu) + cluster(2, addrs, key)],
         [r"node id 2 out of range"]),
        ("placement names a missing vCPU",
         [machine(qemu) + cluster_json(0, addrs2, key, placement=[{"vcpu": 9, "node": 1}])],
         [r"vCPU 9"]),
        ("wrong secret",
         [machine(qemu) + cluster(0, addrs, key), machine(qemu) + cluster(1, addrs, other_key)],
         # Node 0 sees the wrong proof; node 1, the dialer, is refused.
         [r"wrong cluster secret", r"secret|authenticate node 0"]),
        ("bootstrap vCPU placed off node 0",
         [machine(qemu) + cluster_json(0, fresh(), key, **{"numa-node-hosts": [1, 0]})],
         [r"vCPU 0, the bootstrap processor, must run on node 0"]),
        ("unreachable peer", [machine(qemu) + cluster(0, addrs3, key, timeout_ms=1000)],
         [rf"127\.0\.0\.1:{p1}|node 1"]),
        # The memory service drops copies with MADV_DONTNEED: only private
        # anonymous memory in base pages keeps it coherent.
        ("shared RAM backend",
         [machine(qemu, "memory-backend-ram,id=m0,size=32M,share=on") + cluster(0, fresh(), key)],
         [r"guest RAM 'm0' is shared or backed by a file"]),
        ("memfd RAM backend",
         [machine(qemu, "memory-backend-memfd,id=m0,size=32M") + cluster(0, fresh(), key)],
         [r"guest RAM 'm0' is shared or backed by a file"]),
        ("file RAM backend",
         [machine(qemu, f"memory-backend-file,id=m0,size=32M,mem-path={work}/ram0")
          + cluster(0, fresh(), key)],
         [r"guest RAM 'm0' is shared or backed by a file"]),
        # Late nodes (late-nodes): node 0 starts the guest; a late node is
        # not there at start, so it can neither home memory nor run a vCPU
        # then; a late node with no running guest to join says so.
        ("node 0 late",
         [machine(qemu) + cluster_json(0, fresh(), key, **{"late-nodes": [0]})],
         [r"late-nodes names node 0, but node 0 starts the guest"]),
        ("late node homes a NUMA node",
         [machine(qemu) + cluster_json(0, fresh(), key, **{"late-nodes": [1]})],
         [r"NUMA node 1 is on node 1, which joins later"]),
        ("late node runs a vCPU",
         [machine(qemu) + cluster_json(0, fresh(), key, **{"late-nodes": [1], "numa-node-hosts": [0, 0],
                                                           "placement": [{"vcpu": 3, "node": 1}]})],
         [r"vCPU 3 is placed on node 1, which joins later"]),
        ("late node with no guest to join",
         [machine(qemu) + cluster_json(1, fresh(), key, **{"late-nodes": [1], "numa-node-hosts": [0, 0]})],
         [r"node 1 could not join the running guest: .*node 0"]),
        # The scheduler's goals and interval are checked at start, in the
        # library's words; the health file must be a path that does not
        # depend on where QEMU was started.
        ("unknown scheduler goal",
         [machine(qemu) + cluster_json(0, fresh(), key, scheduler="affinity,speed")],
         [r"scheduler 'affinity,speed': .*unknown goal 'speed'"]),
        ("scheduler weight out of range",
         [machine(qemu) + cluster_json(0, fresh(), key, scheduler="balance=500")],
         [r"scheduler 'balance=500': .*weight"]),
        ("scheduler interval of 0",
         [machine(qemu) + cluster_json(0, fresh(), key, **{"scheduler-interval": 0})],
         [r"scheduler-interval must be 100 to 3600000 ms, not 0"]),
        ("relative health file",
         [machine(qemu) + cluster_json(0, fresh(), key, **{"health-file": "failing"})],
         [r"health-file 'failing' must be an absolute path"]),
        ("CPU latency bound below -1",
         [machine(qemu) + cluster(0, fresh(), key, "cpu-latency-us=-2")],
         [r"cpu-latency-us -2 is neither -1 \(leave the host's idle states alone\) nor a bound"]),
        ("dma-prefetch that is not a boolean",
         [machine(qemu) + cluster(0, fresh(), key, "dma-prefetch=sometimes")],
         [r"dma-prefetch.*'on' or 'off'|dma-prefetch.*bool"]),
        # vmport reads and writes the calling vCPU's registers, which only
        # the node running that vCPU has.
        ("vmport asked for", [machine(qemu, machine_opts="pc,vmport=on") + cluster(0, fresh(), key)],
         [r"vmport needs the registers of the vCPU"]),
    ]
    failures = []
    for name, cmds, patterns in cases:
        start = time.monotonic()
        results = run_nodes(cmds)
        took = time.monotonic() - start
        for i, ((rc, text), pattern) in enumerate(zip(results, patterns)):
            errors = [l for l in text.splitlines()
                      if ("aggvm" in l or "error" in l.lower()) and "info:" not in l]
            first = errors[0] if errors else text.strip().splitlines()[-1:] or ["(no output)"]
            print(f"bad-config: {name}: process {i} exit={rc} after {took:.1f} s: "
                  f"{first if isinstance(first, str) else first[0]}")
            if rc is None:
                failures.append(f"{name}: process {i} still running after {BOUND_S} s")
            elif rc == 0:
                failures.append(f"{name}: process {i} exited 0")
            elif not re.search(pattern, text, re.I):
                failures.append(f"{name}: process {i}'s message does not match /{pattern}/:\n"
                                + text[-800:])
    for f in failures:
        print(f"bad-config: FAIL: {f}")
    print(f"bad-config: {len(cases)} cases, {len(failures)} failures")
    shutil.rmtree(work, ignore_errors=True)  # keys and empty RAM files; every message is above
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
