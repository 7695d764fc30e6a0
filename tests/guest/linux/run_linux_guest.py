#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Boots aggvm's Linux test guest under QEMU/TCG and checks its result lines.

The guest's /init runs the workloads named by --run, prints one
`aggvm-<workload>: key=value ...` line each and `aggvm-guest: done
status=...`, then powers off.  This script starts QEMU, timestamps every
console line from QEMU's start, checks the results against what the machine
was built with (--smp, --numa-nodes) and exits 0 (pass), 1 (fail) or 77 (QEMU
missing: meson's skip).  Stdlib only.

  run_linux_guest.py --kernel build-linux/tests/guest/linux/vmlinuz \\
      --initrd build-linux/tests/guest/linux/initramfs.cpio.gz --smp 4 --numa-nodes 2

Environment: AGGVM_QEMU, the QEMU binary (default /usr/bin/qemu-system-x86_64).
"""

import argparse
import json
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import threading
import time

DEFAULT_QEMU = "/usr/bin/qemu-system-x86_64"
WORKLOADS = ("topology", "clock", "atomics", "stream", "omp")
# `aggvm-<name>: [event] key=value ...`; the event word is only on aggvm-guest
# lines (start, done).  Searched, not matched: the serial console may put
# terminal escapes or a kernel message in front of it.
RESULT_RE = re.compile(r"aggvm-([a-z]+): (?:([a-z]+) )?((?:[A-Za-z0-9_]+=\S*\s*)+)$")
SKIP = 77
# Intel's vendor string: Linux then checks the TSC of each vCPU against the
# boot vCPU's as it brings it up (the clock workload reports the verdict);
# for other vendors without an invariant TSC, which TCG cannot offer, it
# declares the TSC unsynchronised without looking.
DEFAULT_CPU = "qemu64,vendor=GenuineIntel"
# panic=-1 with -no-reboot: a guest that panics ends QEMU at once.  The rest
# shortens boot under TCG (measured with initcall_debug): lpj= skips the
# delay-loop calibration of each secondary vCPU (~0.3 s each, it fails under
# TCG anyway), cryptomgr.notests the crypto self-tests (~0.3 s), ipv6.disable
# the IPv6 stack (~0.1 s).  The TSC is left to the kernel's checks.
# loglevel=5 after quiet: warnings, and the backtraces of a soft lockup or an
# RCU stall, reach the console log a failing test leaves; errors alone do not
# say where a vCPU is stuck.
KERNEL_ARGS = ["console=ttyS0", "quiet", "loglevel=5", "panic=-1", "lpj=10000000",
               "cryptomgr.notests", "ipv6.disable=1"]
# After `done` the guest powers off at once; this is slack for a loaded host.
EXIT_GRACE_S = 30


def cpu_ranges(smp, nodes):
    """Contiguous vCPU ranges, one per node, as even as possible."""
    bounds = [smp * i // nodes for i in range(nodes + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(nodes)]


def cpulist(lo, hi):
    return str(lo) if lo == hi else f"{lo}-{hi}"


def smp_spec(args):
    """-smp with one socket per NUMA node: a socket's cores share an LLC, and a
    node boundary inside a socket makes Linux warn (topology_sane)."""
    if not args.numa_nodes:
        return str(args.smp)
    if args.smp % args.numa_nodes == 0:
        return f"{args.smp},sockets={args.numa_nodes},cores={args.smp // args.numa_nodes},threads=1"
    return f"{args.smp},sockets={args.smp},cores=1,threads=1"


def numa_args(smp, numa_nodes, mem_mb):
    """One RAM backend and -numa node per NUMA node, vCPUs and RAM split evenly."""
    sizes = [mem_mb // numa_nodes] * numa_nodes
    sizes[-1] += mem_mb - sum(sizes)
    out = []
    for node, ((lo, hi), size) in enumerate(zip(cpu_ranges(smp, numa_nodes), sizes)):
        out += ["-object", f"memory-backend-ram,id=m{node},size={size}M",
                "-numa", f"node,nodeid={node},cpus={cpulist(lo, hi)},memdev=m{node}"]
    return out


def housekeeping_on_vcpu0(smp):
    """Kernel arguments that keep the guest kernel's own work on vCPU 0:
    nohz_full= for every other vCPU moves kernel threads, unbound
    workqueues, unpinned timers and RCU callbacks to vCPU 0, and keeps the
    timekeeping there.  Aggregated, vCPU 0 is on node 0, so that work stops
    moving its pages between the hosts: this initramfs guest's kernel
    reaches init in about half the time (docs/performance.md, "The guest
    kernel's housekeeping on vCPU 0"), stock's time unchanged.  Debian's
    systemd boot is slower with it: its processes' RCU callbacks then cross
    to node 0."""
    return [f"nohz_full={cpulist(1, smp - 1)}"] if smp > 1 else []


def qemu_command(args):
    cmd = [
        args.qemu, "-nodefaults", "-no-user-config",
        "-accel", args.accel, "-machine", args.machine, "-cpu", args.cpu,
        "-smp", smp_spec(args), "-m", str(args.mem),
        "-nographic", "-serial", "stdio", "-no-reboot",
        "-kernel", args.kernel, "-initrd", args.initrd,
        "-append", " ".join(KERNEL_ARGS + [f"aggvm.run={','.join(args.run)}"]
                            + (housekeeping_on_vcpu0(args.smp) if args.nohz_full else []) + args.append),
    ]
    if args.numa_nodes:
        cmd += numa_args(args.smp, args.numa_nodes, args.mem)
    return cmd + args.qemu_arg


def read_lines(stream, out):
    """Feeds (monotonic time, line) pairs into out, then None at EOF."""
    for raw in iter(stream.readline, b""):
        out.put((time.monotonic(), raw.decode(errors="replace").rstrip("\r\n")))
    out.put(None)


def parse_result(line):
    m = RESULT_RE.search(line)
    if not m:
        return None
    name, event, pairs = m.groups()
    fields = dict(kv.split("=", 1) for kv in pairs.split())
    return f"{name}_{event}" if event else name, fields


class Checker:
    """Collects failed expectations as readable sentences."""

    def __init__(self):
        self.failures = []

    def expect(self, ok, what):
        if not ok:
            self.failures.append(what)
        return ok


def as_number(fields, key):
    try:
        return float(fields.get(key, ""))
    except ValueError:
        return None


def check_results(args, results, check):
    for name in args.run:
        r = results.get(name)
        if not check.expect(r is not None, f"no aggvm-{name} line"):
            continue
        check.expect(r.get("status") == "pass", f"aggvm-{name} status={r.get('status')}")

    # The initramfs guest's topology step also reports its APICs (init.sh).
    apic = results.get("apic")
    if apic:
        check.expect(apic.get("status") == "pass",
                     f"the guest kernel found {apic.get('stale_irr')} APIC(s) with an interrupt "
                     "nothing sent pending (Stale IRR)")

    nodes = args.expect_numa_nodes or args.numa_nodes or 1
    topo = results.get("topology")
    if topo:
        check.expect(topo.get("vcpus") == str(args.expect_vcpus),
                     f"topology vcpus={topo.get('vcpus')}, expected {args.expect_vcpus}")
        check.expect(topo.get("numa_nodes") == str(nodes),
                     f"topology numa_nodes={topo.get('numa_nodes')}, expected {nodes}")
        if args.numa_nodes:
            for node, (lo, hi) in enumerate(cpu_ranges(args.smp, args.numa_nodes)):
                got = topo.get(f"node{node}_cpus")
                check.expect(got == cpulist(lo, hi),
                             f"topology node{node}_cpus={got}, expected {cpulist(lo, hi)}")
        for node in range(nodes):
            mb = as_number(topo, f"node{node}_mb")
            check.expect(mb is not None and 0 < mb <= args.mem,
                         f"topology node{node}_mb={topo.get(f'node{node}_mb')}, "
                         f"expected 0 < MiB <= {args.mem}")

    clock = results.get("clock")
    if clock and "vendor=GenuineIntel" in args.cpu:
        # With this vendor string Linux checks every vCPU's TSC at bring-up.
        check.expect(clock.get("tsc_sync") == "ok",
                     f"clock tsc_sync={clock.get('tsc_sync')}, expected ok")

    omp = results.get("omp")
    if omp:
        # One OpenMP thread per vCPU, each on its own vCPU (OMP_PROC_BIND).
        cpus = sorted(omp.get("cpus", "").split(","))
        check.expect(omp.get("threads") == str(args.expect_vcpus),
                     f"omp threads={omp.get('threads')}, expected one per vCPU ({args.expect_vcpus})")
        check.expect(cpus == sorted(str(c) for c in range(args.expect_vcpus)),
                     f"omp threads ran on vCPUs {omp.get('cpus')}, expected each of 0..{args.expect_vcpus - 1}")
        check.expect(omp.get("checksum") == omp.get("serial") and omp.get("sum") == omp.get("serial_sum"),
                     f"omp: parallel result {omp.get('checksum')}/{omp.get('sum')} differs from the "
                     f"serial one {omp.get('serial')}/{omp.get('serial_sum')}")

    atom = results.get("atomics")
    if atom:
        threads, iters = as_number(atom, "threads"), as_number(atom, "iterations")
        total, expected = atom.get("total"), atom.get("expected")
        check.expect(threads == args.expect_vcpus,
                     f"atomics threads={atom.get('threads')}, expected one per vCPU "
                     f"({args.expect_vcpus})")
        exact = None if threads is None or iters is None else str(int(threads * iters))
        check.expect(total is not None and total == expected == exact,
                     f"atomics total={total} expected={expected}, threads x iterations={exact}")
        check.expect(atom.get("checksum") == "ok", f"atomics checksum={atom.get('checksum')}")

    fileio = results.get("fileio")
    if fileio:
        # One writer per vCPU, a file larger than RAM, every block read back
        # by another vCPU and intact (the Debian disk guest, build_disk.py).
        check.expect(fileio.get("threads") == str(args.expect_vcpus),
                     f"fileio threads={fileio.get('threads')}, expected one per vCPU ({args.expect_vcpus})")
        file_mb, mem_mb = as_number(fileio, "file_mb"), as_number(fileio, "mem_mb")
        check.expect(file_mb is not None and mem_mb is not None and file_mb > mem_mb,
                     f"fileio file_mb={fileio.get('file_mb')} not above the guest's RAM "
                     f"({fileio.get('mem_mb')} MiB): its page cache could hold it")
        check.expect(fileio.get("bad") == "0" and fileio.get("errno") == "0",
                     f"fileio: {fileio.get('bad')} of {fileio.get('blocks')} blocks read back wrong "
                     f"(first at block {fileio.get('first_bad')}), errno {fileio.get('errno')}")

    stream = results.get("stream")
    if stream:
        for key in ("copy_mb_s", "triad_mb_s"):
            v = as_number(stream, key)
            check.expect(v is not None and v > 0, f"stream {key}={stream.get(key)}, expected > 0")

    guest = results.get("guest_done")
    if check.expect(guest is not None, "no 'aggvm-guest: done' line"):
        check.expect(guest.get("status") == "pass", f"aggvm-guest done status={guest.get('status')}")


def stop(proc):
    """Ends QEMU and everything it started; bounded."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            pass


def boot(args, cmd, log):
    """Runs QEMU; returns (results, timings, exit code or None, timed out?)."""
    results, timings = {}, {}
    lines = queue.Queue()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    reader = threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    deadline = t0 + args.timeout
    timed_out = False
    try:
        while True:
            try:
                item = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                timed_out = True
                break
            if item is None:
                break
            when, line = item
            t = when - t0
            if log:
                log.write(f"{t:8.3f} {line}\n")
            parsed = parse_result(line)
            if parsed is None:
                if line.strip():
                    print(f"[{t:7.2f} s] console: {line}", flush=True)
                continue
            name, fields = parsed
            results[name] = fields
            timings[name] = t
            print(f"[{t:7.2f} s] {line[line.find('aggvm-'):]}", flush=True)
            if name == "guest_done":
                # The guest powers off next; give QEMU a bounded time to exit.
                deadline = min(deadline, time.monotonic() + EXIT_GRACE_S)
        if not timed_out:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        timings["qemu_exit"] = time.monotonic() - t0
    finally:
        stop(proc)
        reader.join(timeout=5)
    return results, timings, proc.returncode, timed_out


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernel", required=True)
    p.add_argument("--initrd", required=True)
    p.add_argument("--smp", type=int, default=4)
    p.add_argument("--mem", type=int, default=1024, help="MiB")
    p.add_argument("--numa-nodes", type=int, default=0,
                   help="split vCPUs and RAM into this many NUMA nodes (0: no -numa)")
    p.add_argument("--run", default=",".join(WORKLOADS),
                   help="workloads, comma-separated (default: %(default)s)")
    p.add_argument("--accel", default="tcg", help="-accel value (default: %(default)s)")
    p.add_argument("--machine", default="q35")
    p.add_argument("--cpu", default=DEFAULT_CPU)
    p.add_argument("--timeout", type=float, default=120, help="seconds to the done line")
    p.add_argument("--append", action="append", default=[],
                   help="extra kernel command-line word (repeatable), e.g. aggvm.atomics=-n,100")
    p.add_argument("--nohz-full", action="store_true",
                   help="nohz_full= every vCPU but 0: the kernel's housekeeping on vCPU 0")
    p.add_argument("--qemu-arg", action="append", default=[], help="extra QEMU argument")
    p.add_argument("--expect-vcpus", type=int, help="default: --smp")
    p.add_argument("--expect-numa-nodes", type=int, help="default: --numa-nodes or 1")
    p.add_argument("--log", help="write the timestamped console here")
    p.add_argument("--json", help="write results, timings and failures here as JSON")
    args = p.parse_args()
    args.qemu = os.environ.get("AGGVM_QEMU", DEFAULT_QEMU)
    args.run = [w for w in args.run.split(",") if w]
    unknown = [w for w in args.run if w not in WORKLOADS]
    if unknown:
        p.error(f"unknown workload(s) {unknown}; known: {list(WORKLOADS)}")
    if args.smp < 1 or args.mem < 64:
        p.error("need --smp >= 1 and --mem >= 64")
    if args.numa_nodes and not 1 <= args.numa_nodes <= args.smp:
        p.error("--numa-nodes must be between 1 and --smp")
    if args.expect_vcpus is None:
        args.expect_vcpus = args.smp
    return args


def main():
    args = parse_args()
    if not (os.path.isfile(args.qemu) and os.access(args.qemu, os.X_OK)):
        print(f"run_linux_guest: skip: QEMU {args.qemu} not found (set AGGVM_QEMU)")
        return SKIP
    for path in (args.kernel, args.initrd):
        if not os.path.isfile(path):
            print(f"run_linux_guest: error: {path} missing; build the linux guest first")
            return 1
    # meson sends SIGTERM on its own timeout: turn it into an exception so
    # the finally clause reaps QEMU instead of orphaning it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    cmd = qemu_command(args)
    print("run_linux_guest: " + " ".join(f"'{a}'" if " " in a else a for a in cmd), flush=True)
    log = open(args.log, "w") if args.log else None
    try:
        results, timings, rc, timed_out = boot(args, cmd, log)
    finally:
        if log:
            log.close()

    check = Checker()
    check.expect(not timed_out, f"no result within {args.timeout:.0f} s (or QEMU did not exit)")
    check.expect(timed_out or rc == 0, f"QEMU exited with {rc}")
    check_results(args, results, check)

    # Host CPU time QEMU used: steadier than wall time on a shared machine.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    timings["qemu_cpu"] = usage.ru_utime + usage.ru_stime
    summary = " ".join(f"{k}_s={v:.2f}" for k, v in timings.items())
    verdict = "pass" if not check.failures else "fail"
    for f in check.failures:
        print(f"run_linux_guest: FAIL: {f}")
    print(f"run_linux_guest: smp={args.smp} numa_nodes={args.numa_nodes} {summary} "
          f"status={verdict}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": cmd, "results": results, "seconds": timings,
                       "failures": check.failures, "status": verdict}, f, indent=2)
    return 0 if verdict == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
