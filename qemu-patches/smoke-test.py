#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Smoke test of the patched QEMU: QMP, firmware, KVM, the aggregated-mode options.

Usage: smoke-test.py QEMU_BINARY
Exits 0 when every check passed, 1 on a failure, 77 (meson's skip) when the
binary has not been built (`meson test --no-rebuild` without `make qemu`).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from qmp_client import Qmp as QmpClient  # noqa: E402

TIMEOUT_S = 60
SECRET = "0123456789abcdef0123456789abcdef"


class Qmp:
    """QEMU with its QMP monitor on a unix socket, through the tests' client."""

    def __init__(self, binary, args):
        self.dir = tempfile.mkdtemp(prefix="aggvm-smoke-")
        path = os.path.join(self.dir, "qmp.sock")
        self.stderr = open(os.path.join(self.dir, "stderr"), "w+")
        self.proc = subprocess.Popen([binary, "-qmp", f"unix:{path},server=on,wait=off", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr)
        try:
            self.qmp = QmpClient(path, timeout=TIMEOUT_S, alive=lambda: self.proc.poll() is None)
        except (OSError, ConnectionError) as e:
            if self.proc.poll() is None:
                self.proc.kill()
            raise AssertionError(f"no QMP ({e}); QEMU exited (rc {self.proc.wait()}): "
                                 f"{self.errors()}")

    def errors(self):
        self.stderr.seek(0)
        return self.stderr.read()

    def cmd(self, name, **args):
        return self.qmp.command(name, **args)

    def quit(self):
        self.cmd("quit")
        rc = self.proc.wait(timeout=TIMEOUT_S)
        self.qmp.close()
        if rc != 0:
            raise AssertionError(f"QEMU exited with {rc} after quit ({self.dir})")
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def expect_ok(resp, what):
    if "return" not in resp:
        raise AssertionError(f"{what}: {resp}")
    return resp["return"]


def check_qmp_tcg(binary):
    q = Qmp(binary, ["-accel", "tcg", "-machine", "pc", "-display", "none", "-nodefaults", "-S"])
    ver = expect_ok(q.cmd("query-version"), "query-version")["qemu"]
    if (ver["major"], ver["minor"], ver["micro"]) != (10, 0, 2):
        raise AssertionError(f"expected QEMU 10.0.2, got {ver}")
    q.quit()
    return "QMP under TCG: qmp_capabilities, query-version 10.0.2, quit"


def boot_seabios(binary, accel_args):
    """Runs the pc machine without a kernel; SeaBIOS prints its banner on port 0x402."""
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "debugcon.log")
        proc = subprocess.Popen([binary, *accel_args, "-machine", "pc", "-m", "128",
                                 "-display", "none", "-nodefaults", "-serial", "none",
                                 "-chardev", f"file,id=dbg,path={log}",
                                 "-device", "isa-debugcon,iobase=0x402,chardev=dbg"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise AssertionError(f"QEMU exited with {proc.returncode}: "
                                         f"{proc.stderr.read().decode(errors='replace')}")
                if os.path.exists(log):
                    with open(log, errors="replace") as f:
                        text = f.read()
                    if "SeaBIOS (version" in text:
                        return text.split("SeaBIOS (version", 1)[1].split(")", 1)[0].strip()
                time.sleep(0.2)
            raise AssertionError(f"no SeaBIOS banner within {TIMEOUT_S} s")
        finally:
            proc.kill()
            proc.wait(timeout=TIMEOUT_S)


def check_seabios_tcg(binary):
    return f"SeaBIOS {boot_seabios(binary, ['-accel', 'tcg'])} under TCG"


def check_seabios_kvm(binary):
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return None
    return f"SeaBIOS {boot_seabios(binary, ['-accel', 'kvm', '-cpu', 'qemu64'])} under KVM"


def has_type(binary, name):
    q = Qmp(binary, ["-accel", "tcg", "-machine", "none", "-display", "none", "-nodefaults"])
    types = expect_ok(q.cmd("qom-list-types"), "qom-list-types")
    q.quit()
    return any(t["name"] == name for t in types)


# Two NUMA nodes of one vCPU and 64 MiB each, as an aggregated guest would have.
NUMA2 = ["-smp", "2", "-m", "128M",
         "-object", "memory-backend-ram,id=m0,size=64M",
         "-object", "memory-backend-ram,id=m1,size=64M",
         "-numa", "node,nodeid=0,cpus=0,memdev=m0",
         "-numa", "node,nodeid=1,cpus=1,memdev=m1"]


def free_addresses(n):
    """n loopback host:port pairs nobody listens on now."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    addrs = [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    for s in socks:
        s.close()
    return addrs


def cluster_args(node, accel="tcg", extra="", accel_extra="",
                 addresses=("127.0.0.1:7000", "127.0.0.1:7001")):
    """Keyval -object syntax: a list property is a repeated key."""
    listed = ",".join(f"addresses={a}" for a in addresses)
    return ["-object", f"secret,id=sec0,data={SECRET}",
            "-object", f"aggvm-cluster,id=agg0,node={node},secret=sec0,{listed}{extra}",
            "-accel", f"{accel},aggregate=agg0{accel_extra}"]


def cluster_json_args(node, **props):
    """JSON -object syntax, needed for lists of structs such as placement."""
    obj = {"qom-type": "aggvm-cluster", "id": "agg0", "node": node, "secret": "sec0",
           "addresses": ["127.0.0.1:7000", "127.0.0.1:7001"], **props}
    return ["-object", f"secret,id=sec0,data={SECRET}", "-object", json.dumps(obj),
            "-accel", "tcg,aggregate=agg0"]


def expect_startup_error(binary, args, needle):
    res = subprocess.run([binary, "-machine", "pc", "-display", "none", "-nodefaults", "-S",
                          *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=TIMEOUT_S)
    if res.returncode == 0 or needle not in res.stderr:
        raise AssertionError(f"expected exit != 0 with '{needle}', got rc {res.returncode}: "
                             f"{res.stderr.strip()}")


def check_cluster_options(binary):
    if not has_type(binary, "aggvm-cluster"):
        raise AssertionError("type aggvm-cluster missing: is 0002 in the series?")
    expect_startup_error(binary, cluster_args(2), "node id 2 out of range")
    expect_startup_error(binary, cluster_json_args(1, placement=[{"vcpu": 9, "node": 1}]),
                         "placement names vCPU 9")
    expect_startup_error(binary, cluster_json_args(1, placement=[{"vcpu": 0, "node": 3}]),
                         "placement puts vCPU 0 on node 3")
    expect_startup_error(binary, [*NUMA2, *cluster_args(0, extra=",numa-node-hosts=0,"
                                                               "numa-node-hosts=5")],
                         "NUMA node 1 on node 5")
    expect_startup_error(binary, [*NUMA2, *cluster_args(0, extra=",numa-node-hosts=1,"
                                                               "numa-node-hosts=0")],
                         "vCPU 0, the bootstrap processor, must run on node 0")
    expect_startup_error(binary, cluster_args(0, extra=",secret=nosuch"), "nosuch")
    expect_startup_error(binary, cluster_args(0, accel="kvm"), "kernel-irqchip=off")
    expect_startup_error(binary, ["-accel", "kvm,kernel-irqchip=off", "-cpu", "qemu64"],
                         "KVM does not support userspace APIC")
    return ("aggvm-cluster: bad node, placement, numa-node-hosts, vCPU 0 off node 0, secret, "
            "irqchip are refused")


def check_x_query_aggvm(binary):
    """Two nodes on loopback: node 0 answers x-query-aggvm, quitting it ends node 1."""
    addrs = free_addresses(2)
    machine = [*NUMA2, "-machine", "pc", "-display", "none", "-nodefaults"]
    node1 = subprocess.Popen([binary, *machine, *cluster_args(1, addresses=addrs)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        q = Qmp(binary, [*machine, "-S", *cluster_args(0, addresses=addrs)])
        info = expect_ok(q.cmd("x-query-aggvm"), "x-query-aggvm")
        q.quit()
        rc = node1.wait(timeout=TIMEOUT_S)
    finally:
        if node1.poll() is None:
            node1.kill()
            node1.wait(timeout=TIMEOUT_S)
    if rc != 0:
        raise AssertionError(f"node 1 exited with {rc} after node 0 quit: "
                             f"{node1.stderr.read().decode(errors='replace')}")
    want_nodes = [{"id": 0, "address": addrs[0], "state": "local"},
                  {"id": 1, "address": addrs[1], "state": "connected"}]
    nodes = [{k: n[k] for k in ("id", "address", "state") if k in n} for n in info["nodes"]]
    if info["node"] != 0 or info["accelerator"] != "tcg" or nodes != want_nodes:
        raise AssertionError(f"x-query-aggvm: unexpected nodes: {info}")
    # This node's memory figures always; another's once a heartbeat brought
    # them, with their age.
    figures = ("resident-pages", "read-faults", "write-faults")
    if not all(k in info["nodes"][0] for k in figures) or "stats-age-ms" in info["nodes"][0]:
        raise AssertionError(f"x-query-aggvm: node 0's own figures wrong: {info['nodes'][0]}")
    other = info["nodes"][1]
    if any(k in other for k in figures) and not all(k in other for k in figures + ("stats-age-ms",)):
        raise AssertionError(f"x-query-aggvm: node 1's figures incomplete: {other}")
    placed = [(v["vcpu"], v["numa-node"], v["node"], v["local"]) for v in info["vcpus"]]
    if placed != [(0, 0, 0, True), (1, 1, 1, False)]:
        raise AssertionError(f"x-query-aggvm: unexpected placement: {info['vcpus']}")
    if "read-faults" not in info.get("dsm", {}):
        raise AssertionError(f"x-query-aggvm: no memory-service counters: {info}")
    q = Qmp(binary, ["-machine", "pc", "-display", "none", "-nodefaults", "-S", "-accel", "tcg"])
    resp = q.cmd("x-query-aggvm")
    q.quit()
    if "error" not in resp:
        raise AssertionError(f"x-query-aggvm on a plain guest should fail: {resp}")
    return "x-query-aggvm: nodes connected, NUMA placement, counters; node 0 quitting ends node 1"


def check_kvm_user_apic(binary):
    """KVM with the user-space APIC boots SeaBIOS when the guest is aggregated."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return None
    # A cluster of one node: nothing to wait for.
    args = ["-cpu", "qemu64", *cluster_args(0, accel="kvm", accel_extra=",kernel-irqchip=off",
                                            addresses=free_addresses(1))]
    return f"SeaBIOS {boot_seabios(binary, args)} under KVM, kernel-irqchip=off, aggregated"


CHECKS = [check_qmp_tcg, check_seabios_tcg, check_seabios_kvm, check_cluster_options,
          check_x_query_aggvm, check_kvm_user_apic]


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = sys.argv[1]
    if not os.access(binary, os.X_OK):
        print(f"SKIP: {binary} is not built (run `make qemu` or build-qemu.py)")
        return 77
    failed = 0
    for check in CHECKS:
        start = time.monotonic()
        try:
            msg = check(binary)
        except (AssertionError, subprocess.TimeoutExpired) as e:
            print(f"FAIL {check.__name__}: {e}")
            failed += 1
            continue
        took = time.monotonic() - start
        print(f"ok   {check.__name__}: {msg} ({took:.1f} s)" if msg
              else f"skip {check.__name__}: /dev/kvm not usable")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
