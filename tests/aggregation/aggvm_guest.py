#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Runs one guest aggregated over several hosts and judges what it reports.

Each host is a network namespace made by aggvm-harness; each runs one QEMU
process (a node) with the same machine, started the way a user would:

  -object secret,id=aggsec,file=cluster.key,format=raw
  -object aggvm-cluster,id=agg0,node=I,secret=aggsec,addresses=A0,addresses=A1
  -accel tcg,thread=multi,aggregate=agg0     (or kvm,kernel-irqchip=off,...)

Node 0 owns the devices and QMP; the guest's console is node 0's serial.
Scenarios (--scenario):
  run      boot the guest, check its results (vCPUs, NUMA nodes, workloads)
  kill     kill the last worker (SIGKILL) while the guest runs: node 0 must
           emit AGGVM_NODE_FAILED, stop the guest, and every process must end
  sigterm  the same with SIGTERM: the worker says it leaves, and exits
  sigstop  the same with SIGSTOP: a frozen worker is noticed within the timeout
  stopcont QMP stop on node 0 pauses the workers' vCPUs too, cont resumes
           them; the guest's results (its clock included) must still pass
  nmi      QMP inject-nmi on node 0 once testos's nmi workload is armed:
           every vCPU, on every node, must take it
  migrate  while the guest runs, move a vCPU (--move-vcpu, default the last)
           back and forth between its host and --move-to (default node 0)
           with x-aggvm-migrate-vcpu, --moves times; every move must end
           with AGGVM_VCPU_MIGRATED and no error, x-query-aggvm must follow
           it, and the guest's results must still pass
  evacuatekill  once the sweep wrote all RAM, x-aggvm-evacuate-node of the
           last node, SIGKILL of it once --evac-kill-at of its memory moved
           (progress, not time: the test must hit the middle on a fast
           machine too): AGGVM_NODE_FAILED names it, the
           guest stops, the evacuation ends with an error, no process hangs
  evacuate while the guest runs, x-aggvm-evacuate-node empties the last node
           (bad requests refused first): its vCPUs move, its memory's homes
           move, it leaves and exits 0; the guest's results must still pass
  badmoves while the guest runs, x-aggvm-migrate-vcpu requests that must be
           refused with a clear error (no such vCPU or node, already
           there, already moving, a worker's monitor), then one move that
           must work; the guest's results must still pass
  movefreeze  freeze the last worker (SIGSTOP), then move a vCPU of node 1
           to it: the move must fail with AGGVM_VCPU_MIGRATED naming why,
           the vCPU must not be lost or run twice (the guest stops with
           AGGVM_NODE_FAILED for the frozen node), and every process ends
  join     the last host is a late node (late-nodes): the guest starts
           on the others; once it runs, that host's QEMU starts and joins
           (AGGVM_NODE_JOINED), a vCPU of node 1 moves to it, then node 1
           is evacuated to it (its vCPUs and its memory's homes) and exits
           0; the guest's results must still pass
  movekill as movefreeze, but the frozen destination is killed (SIGKILL)
           while the move waits on its answer to MOVE_IN: the move fails
           naming the lost node, the guest stops with AGGVM_NODE_FAILED,
           no hang, no process left behind
  bqlstuck node 0's main loop blocks with the BQL held (QMP
           dump-guest-memory to a FIFO nobody reads) while a worker's vCPU
           has a device access in flight (testos devloop): the access must
           not be lost silently; node 0 must end, saying why, within twice
           the peer timeout, and every node with it
  sched-*  the vCPU placement scheduler steered over QMP while testos
           'share' runs: see tests/scheduler/scheduler_scenarios.py
Exit status: 0 pass, 1 fail, 77 skip (QEMU, KVM or the harness missing).
Without AGGVM_HOST0_NETNS in the environment the script runs itself under
`aggvm-harness run`, which makes the namespaces and removes them after.
"""

import argparse
import hashlib
import json
import os
import queue
import re
import secrets
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "guest" / "linux"))
sys.path.insert(0, str(REPO / "tests" / "guest" / "testos"))
sys.path.insert(0, str(REPO / "tests" / "lib"))
sys.path.insert(0, str(REPO / "tests" / "scheduler"))
import check_blocks  # noqa: E402
import scheduler_scenarios as sched  # noqa: E402
import run_linux_guest as linux  # noqa: E402
import run_testos as testos  # noqa: E402
import qmp_client  # noqa: E402
from qmp_client import Qmp  # noqa: E402

SKIP = 77
PORT = 7100
PROCESS_EXIT_S = 20


def log(msg):
    print(f"aggvm-guest: {msg}", flush=True)


class Node:
    """One QEMU process in its host's namespace, its output in a log file."""

    def __init__(self, index, netns, cmd, log_dir):
        self.index = index
        self.cmd = cmd
        self.log_path = Path(log_dir) / f"node{index}.log"
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns] + cmd,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    # A message of QEMU's or of libaggvm-dsm's on stderr.  Both write a
    # whole line at once, but it can land in the middle of a line of the
    # guest's console (stdout, the same pipe): "testos: result ... ops_pe"
    # + "qemu-system-x86_64: info: aggvm: node 2 joined ..." + "r_s=...".
    HOST_MESSAGE = re.compile(r"qemu-system-\w+: |\[\d{4}-\d\d-\d\d [\d:.]+\] \[\w+\] aggvm-dsm: ")

    def _read(self):
        with open(self.log_path, "w") as f:
            def emit(line):
                f.write(line + "\n")
                f.flush()
                self.lines.put((time.monotonic(), line))
            cut = ""  # the start of a console line a message interrupted
            for raw in iter(self.proc.stdout.readline, b""):
                line = cut + raw.decode(errors="replace").rstrip("\r\n")
                cut = ""
                m = self.HOST_MESSAGE.search(line, 1)
                if m:  # the message on its own; the console line goes on after it
                    cut = line[:m.start()]
                    line = line[m.start():]
                emit(line)
            if cut:
                emit(cut)
        self.lines.put(None)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self, sig=signal.SIGKILL):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self):
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            if self.wait(5) is None:
                self.kill(signal.SIGKILL)
                self.wait(5)

    def tail(self, n=15):
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-n:])
        except OSError:
            return ""


def guest_command(args):
    """The machine every node builds, as the single-process runners build it."""
    if args.guest == "linux":
        ns = argparse.Namespace(
            qemu=args.qemu, accel=accel_value(args), machine=args.machine, cpu=args.cpu,
            smp=args.vcpus, mem=args.mem, kernel=args.kernel, initrd=args.initrd,
            run=args.linux_run, append=debian_kernel_args(args) + args.append.split(),
            numa_nodes=args.numa_nodes, nohz_full=args.nohz_full, qemu_arg=[])
        return linux.qemu_command(ns)
    ns = argparse.Namespace(
        workload=args.workload, append=args.append, accel=args.accel, machine=args.machine,
        cpu=args.cpu, smp=args.vcpus, mem=args.mem, kernel=args.kernel, bios="qboot",
        extra=[])
    cmd = testos.qemu_command(ns, args.qemu)
    cmd[cmd.index("-accel") + 1] = accel_value(args)
    # One NUMA node per host, so that the default placement spreads the vCPUs.
    return cmd + linux.numa_args(args.vcpus, args.numa_nodes, args.mem)


def disk_args(args, node, image):
    """A virtio-blk disk at a fixed slot: node 0's is the image, the
    workers' an empty stand-in (their device models are never used, but the
    machine must be the same on every node)."""
    size = args.disk_blocks * check_blocks.BLOCK
    if node == 0:
        drive = f"file={image},format=raw,if=none,id=disk0,cache=none,aio=threads"
        return ["-drive", drive, "-device", "virtio-blk-pci,drive=disk0,addr=0x5"]
    return ["-blockdev", f"driver=null-co,node-name=disk0,size={size}",
            "-device", "virtio-blk-pci,drive=disk0,addr=0x5"]


def debian_kernel_args(args):
    """The Debian disk guest's root, NIC name and scratch disk (build_disk.py)."""
    if not args.disk_image:
        return []
    return ["root=/dev/vda", "rw", "net.ifnames=0", "aggvm.scratch=/dev/sda"]


def virtual_size(image):
    info = subprocess.run(["qemu-img", "info", "--output=json", str(image)], check=True,
                          capture_output=True, text=True, timeout=30)
    return json.loads(info.stdout)["virtual-size"]


class DebianDisks:
    """The Debian disk guest's disks: its root file system on virtio-blk (the
    built qcow2 behind a qcow2 overlay in the work directory, so the image
    stays as built) and a blank qcow2 scratch disk on virtio-scsi, which the
    fileio workload formats and fills.  Node 0 serves both; the workers get
    null stand-ins of the same sizes at the same addresses."""

    SCRATCH_BYTES = 4 << 30

    def __init__(self, image, work):
        self.root = work / "root.qcow2"
        self.scratch = work / "scratch.qcow2"
        image = Path(image).resolve()
        for cmd in (["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image),
                     str(self.root)],
                    ["qemu-img", "create", "-q", "-f", "qcow2", str(self.scratch),
                     str(self.SCRATCH_BYTES)]):
            subprocess.run(cmd, check=True, capture_output=True, timeout=30)
        self.root_bytes = virtual_size(image)

    def args(self, node):
        devices = ["-device", "virtio-blk-pci,drive=root,addr=0x7",
                   "-device", "virtio-scsi-pci,id=scsi0,addr=0x8",
                   "-device", "scsi-hd,drive=scratch,bus=scsi0.0,scsi-id=0,lun=0"]
        if node == 0:
            common = "format=qcow2,if=none,cache=none,aio=threads"
            return ["-drive", f"file={self.root},id=root,{common}",
                    "-drive", f"file={self.scratch},id=scratch,{common}"] + devices
        return ["-blockdev", f"driver=null-co,node-name=root,size={self.root_bytes}",
                "-blockdev", f"driver=null-co,node-name=scratch,size={self.SCRATCH_BYTES}"] + devices


def net_args(node):
    """A virtio-net NIC at a fixed slot: node 0's on QEMU's user networking,
    the workers' without a back-end (node 0 serves the device)."""
    if node == 0:
        return ["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,addr=0x6,romfile="]
    return ["-device", "virtio-net-pci,addr=0x6,romfile="]


class HttpFile:
    """N random bytes served over HTTP on host 0's loopback, which the guest
    reaches through user networking at 10.0.2.2."""

    def __init__(self, args, netns, work, size):
        self.dir = work / "net"
        self.dir.mkdir()
        data = os.urandom(size)
        (self.dir / "blob").write_bytes(data)
        self.size = size
        self.sha256 = hashlib.sha256(data).hexdigest()
        # Only the Debian guest reports where its NIC and interrupts are.
        self.node0_vcpus = args.vcpus_per_host if args.aggregate and args.disk_image else 0
        self.port = 18000 + os.getpid() % 1000
        self.proc = subprocess.Popen(
            [args.harness, "exec", netns, "--", sys.executable, "-m", "http.server", str(self.port),
             "--bind", "127.0.0.1", "--directory", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def kernel_arg(self):
        return f"aggvm.net=http://10.0.2.2:{self.port}/blob,{self.sha256}"

    def judge(self, results, check):
        r = results.get("net", {})
        check.expect(r.get("sha256") == self.sha256 and r.get("bytes") == str(self.size),
                     f"net: the guest fetched {r.get('bytes')} bytes with SHA-256 {r.get('sha256')}, "
                     f"expected {self.size} bytes, {self.sha256}")
        if self.node0_vcpus:
            self.judge_interrupts(r, check)

    def judge_interrupts(self, r, check):
        """Node 0 runs the NIC's model, and QEMU gives the PCI root bus node 0's
        NUMA node (_PXM): the Debian guest must place the NIC there and take its
        receive interrupts on node 0's vCPUs.  Left to itself, Linux put them on
        a worker's vCPU, and each packet crossed the fabric as an interrupt
        (docs/performance.md, "Device interrupts on node 0's vCPUs")."""
        check.expect(r.get("nic_node") == "0",
                     f"net: the guest put its NIC in NUMA node {r.get('nic_node')}, not node 0's")
        counts = [int(c) for c in r.get("rx_irqs", "").split(":") if c.isdigit()]
        on_node0, on_workers = sum(counts[:self.node0_vcpus]), sum(counts[self.node0_vcpus:])
        check.expect(on_node0 > 0 and on_workers == 0,
                     f"net: receive interrupts per vCPU {r.get('rx_irqs')}: {on_node0} on node 0's "
                     f"vCPUs, {on_workers} on workers' (expected all on node 0's)")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def accel_value(args):
    if not args.aggregate:
        return "kvm,kernel-irqchip=off" if args.accel == "kvm" else "tcg,thread=multi"
    if args.accel == "kvm":
        return "kvm,kernel-irqchip=off,aggregate=agg0"
    return "tcg,thread=multi,aggregate=agg0"


def cluster_args(args, node, addresses, key):
    props = [f"aggvm-cluster,id=agg0,node={node},secret=aggsec,timeout={args.peer_timeout_ms}"]
    props += [f"addresses={a}" for a in addresses]
    if args.scenario == "join":
        # The last host joins later: its NUMA node starts on the one before.
        late = args.hosts - 1
        props += [f"late-nodes={late}"]
        props += [f"numa-node-hosts={min(i, late - 1)}" for i in range(args.hosts)]
    if args.scenario == "sched-health":
        props += [f"health-file={args.health_dir}/node{node}.failing", "scheduler=none"]
    props += args.cluster_prop
    return ["-object", f"secret,id=aggsec,file={key},format=raw",
            "-object", ",".join(props)]


def hosts_from_env(n):
    hosts = []
    for i in range(n):
        netns = os.environ.get(f"AGGVM_HOST{i}_NETNS")
        addr = os.environ.get(f"AGGVM_HOST{i}_ADDR")
        if not netns or not addr:
            raise SystemExit(f"aggvm-guest: AGGVM_HOST{i}_NETNS/_ADDR missing: "
                             "run under aggvm-harness run")
        hosts.append((netns, addr))
    return hosts


def parse_guest_line(args, line, results):
    """Collects the guest's result lines; returns True at its last one."""
    if args.guest == "linux":
        parsed = linux.parse_result(line)
        if parsed:
            results[parsed[0]] = parsed[1]
            return parsed[0] == "guest_done"
        return False
    window = sched.parse_window(line)
    if window:
        results.setdefault("share_windows", []).append(window)
    banner, res = testos.parse([line])
    if banner:
        results["banner"] = banner
    for r in res:
        results[r.get("workload")] = r
    return False


def guest_finished(args, results):
    """The guest reported its last result (it powers off next)."""
    if args.guest == "linux":
        return "guest_done" in results
    wanted = testos.WORKLOADS if args.workload == "all" else [args.workload]
    return all(w in results for w in wanted)


def judge(args, results, rc, check):
    if args.guest == "linux":
        ns = argparse.Namespace(run=args.linux_run, expect_numa_nodes=args.numa_nodes,
                                numa_nodes=args.numa_nodes, smp=args.vcpus, mem=args.mem,
                                expect_vcpus=args.vcpus, cpu=args.cpu)
        linux.check_results(ns, results, check)
        check.expect(rc == 0, f"node 0 exited with {rc}, expected 0 after the guest's poweroff")
        return
    banner = results.get("banner")
    if check.expect(banner is not None, "no testos banner"):
        check.expect(int(banner.get("vcpus", 0)) == args.vcpus,
                     f"guest brought up {banner.get('vcpus')} vCPUs, expected {args.vcpus}")
    wanted = testos.WORKLOADS if args.workload == "all" else [args.workload]
    for w in wanted:
        r = results.get(w)
        if check.expect(r is not None, f"no result for workload {w}"):
            check.expect(r.get("status") == "pass", f"workload {w}: status {r.get('status')}")
    check.expect(rc == 1, f"node 0 exited with {rc}, expected 1 (isa-debug-exit: pass)")


def guest_facts(args, results):
    """vcpus and NUMA nodes as the guest itself reported them."""
    if args.guest == "linux":
        topo = results.get("topology", {})
        return topo.get("vcpus"), topo.get("numa_nodes")
    banner = results.get("banner", {})
    return banner.get("vcpus"), banner.get("numa_nodes", banner.get("nodes"))


def print_stuck_vcpus(qmp):
    """Where a guest that gave no result is: node 0's view of each vCPU
    (instruction pointer, halted or not; a vCPU on another node shows the
    state node 0 last held for it)."""
    try:
        regs = qmp.execute("human-monitor-command", **{"command-line": "info registers -a"})
    except (OSError, RuntimeError, ConnectionError, ValueError) as e:
        log(f"info registers: {e}")
        return
    for line in regs.splitlines():
        if line.startswith(("CPU#", "RIP=", "EIP=", "CS ", "CR0=")):
            log(f"stuck: {line.strip()}")


def describe_query(info):
    lines = [f"x-query-aggvm on node {info['node']} ({info['accelerator']}, cluster "
             f"{info['cluster']}):"]
    for n in info["nodes"]:
        clock = ""
        if "clock-error-ns" in n:
            clock = f"  guest clock within {n['clock-error-ns']} ns of node 0's"
        lines.append(f"  node {n['id']}  {n['address']:<22} {n['state']:<10}{clock}")
    by_node = {}
    for v in info["vcpus"]:
        by_node.setdefault(v["node"], []).append(str(v["vcpu"]))
    for node, vcpus in sorted(by_node.items()):
        lines.append(f"  vCPUs on node {node}: {' '.join(vcpus)}")
    d = info.get("dsm", {})
    lines.append(f"  memory: {d.get('read-faults', 0)} read / {d.get('write-faults', 0)} write "
                 f"faults, {d.get('fault-latency-avg-us', 0)} us mean, "
                 f"{d.get('bytes-received', 0) >> 10} KiB received, "
                 f"{d.get('resident-pages', 0)} pages resident")
    lines.append(f"  ahead of use: {d.get('fetched-pages', 0)} pages fetched, "
                 f"{d.get('released-pages', 0)} given back; {d.get('peeked-pages', 0)} snapshots "
                 f"taken, {d.get('snapshot-pages', 0)} held; {d.get('copied-pages', 0)} copied for devices")
    lines.append(f"  devices: {d.get('io-served', 0)} accesses served for other nodes; "
                 f"interrupts {d.get('interrupts-sent', 0)} sent, "
                 f"{d.get('interrupts-received', 0)} received")
    return "\n".join(lines)


def run_cluster(args):
    hosts = hosts_from_env(args.hosts)
    addresses = [f"{addr}:{PORT}" for _, addr in hosts]
    work = Path(tempfile.mkdtemp(prefix="aggvm-guest-", dir=args.log_dir))
    key = work / "cluster.key"
    key.write_text(secrets.token_hex(32))
    args.health_dir = work
    qmp_path = work / "qmp.sock"
    disk = work / "disk.img"
    if args.disk_blocks:
        check_blocks.prepare(disk, args.disk_blocks)
    http = HttpFile(args, hosts[0][0], work, args.net_bytes) if args.net_bytes else None
    debian = DebianDisks(args.disk_image, work) if args.disk_image else None
    if http:
        args.append = f"{args.append} {http.kernel_arg()}".strip()
    base = guest_command(args)
    report = {"hosts": args.hosts, "vcpus": args.vcpus, "guest": args.guest,
              "accel": args.accel, "scenario": args.scenario, "log_dir": str(work)}
    nodes = []
    check = linux.Checker()
    qmp = None
    results = {}
    rc = None
    t0 = time.monotonic()
    report["cpu_latency_before_us"] = host_cpu_latency_us()
    try:
        # Workers first: node 0 waits for them (timeout) when it starts.
        late = None
        for i in reversed(range(args.hosts)):
            cmd = base + cluster_args(args, i, addresses, key)
            if i == 0:
                cmd += ["-qmp", f"unix:{qmp_path},server=on,wait=off"]
            else:
                # A worker's devices are never used; its console stays empty.
                cmd[cmd.index("-serial") + 1] = "null"
            if args.disk_blocks:
                cmd += disk_args(args, i, disk)
            if debian:
                cmd += debian.args(i)
            if http or debian:
                cmd += net_args(i)
            for pattern in args.trace:
                cmd += ["-trace", pattern]
            if args.trace:
                cmd += ["-msg", "timestamp=on"]   # thread id and time on each event
            if i == 0 or args.verbose:
                log(f"node {i} ({hosts[i][0]}): {shlex.join(cmd)}")
            if args.scenario == "join" and i == args.hosts - 1:
                late = (i, hosts[i][0], cmd)  # started once the guest runs
                continue
            nodes.insert(0, Node(i, hosts[i][0], cmd, work))
        node0 = nodes[0]
        try:
            qmp = Qmp(str(qmp_path), timeout=args.peer_timeout_ms / 1000 + 30,
                      alive=lambda: node0.proc.poll() is None)
        except OSError as e:
            node0.wait(5)
            check.expect(False, f"no QMP on node 0 ({e}); node 0 exit "
                         f"{node0.proc.returncode}:\n{node0.tail()}")
            return finish(args, nodes, check, results, report, t0)
        info = None
        mover = VcpuMover(args) if args.scenario == "migrate" else None
        killed_at = None
        started_by_line = False
        deadline = t0 + args.timeout
        last_query = 0.0
        while True:
            try:
                item = node0.lines.get(timeout=0.2)
            except queue.Empty:
                item = False
            if item is None:
                break
            if item:
                when, line = item
                if parse_guest_line(args, line, results):
                    report["seconds_to_result"] = when - t0
                if line.strip():
                    print(f"[{when - t0:7.2f} s] {line}", flush=True)
                if args.scenario == "nmi" and "testos: nmi armed" in line:
                    log("QMP inject-nmi on node 0")
                    qmp.execute("inject-nmi")
            now = time.monotonic()
            if now - last_query > 1.0:
                sample_rss(nodes, report)
                seen = report.setdefault("cpu_latency_seen_us", [])
                seen.append(host_cpu_latency_us())
            if info is None or now - last_query > 1.0:
                try:
                    info = qmp.execute("x-query-aggvm")
                    if args.fault_trace:
                        fault_trace(info, now - t0, report)
                except (OSError, RuntimeError, ConnectionError, ValueError):
                    pass
                last_query = now
            started = results.get("banner") or results.get("topology")
            if args.kill_after:
                started = started_by_line or (item and re.search(args.kill_after, item[1]))
                started_by_line = bool(started)
            if args.scenario in FAILURES and killed_at is None and started:
                time.sleep(args.kill_delay)
                victim = nodes[-1]
                sig = FAILURES[args.scenario]
                log(f"sending {sig.name} to node {victim.index} while the guest runs")
                victim.kill(sig)
                killed_at = time.monotonic()
                break
            if args.scenario in ("movefreeze", "movekill") and killed_at is None and started:
                time.sleep(args.kill_delay)
                victim = nodes[-1]
                vcpu = args.vcpus_per_host          # the first vCPU of node 1
                log(f"sending SIGSTOP to node {victim.index}, then moving vCPU {vcpu} to it")
                victim.kill(signal.SIGSTOP)
                qmp.execute("x-aggvm-migrate-vcpu", **{"cpu-index": vcpu, "node": victim.index})
                killed_at = time.monotonic()
                if args.scenario == "movekill":
                    # The move waits on the destination's answer (MOVE_IN)
                    # and has stopped nothing yet; the destination dies.
                    time.sleep(0.3)
                    placed = {v["vcpu"]: v for v in qmp.execute("x-query-aggvm")["vcpus"]}
                    check.expect(placed[vcpu].get("moving"),
                                 f"vCPU {vcpu} is not moving when its destination is killed: "
                                 f"{placed[vcpu]}")
                    log(f"SIGKILL to node {victim.index} while vCPU {vcpu} moves to it")
                    victim.kill(signal.SIGKILL)
                    killed_at = time.monotonic()
                event = qmp.wait_event("AGGVM_VCPU_MIGRATED", args.peer_timeout_ms / 1000 + 15)
                if check.expect(event is not None, "no AGGVM_VCPU_MIGRATED for the move to a "
                                "frozen node"):
                    log(f"event AGGVM_VCPU_MIGRATED {event['data']}")
                    check.expect("error" in event["data"], "the move to a frozen node "
                                 f"succeeded: {event['data']}")
                    report["move_event"] = event["data"]
                break
            if args.scenario == "bqlstuck" and killed_at is None and started:
                time.sleep(args.kill_delay)
                fifo = work / "stuck.fifo"
                os.mkfifo(fifo)
                log("QMP dump-guest-memory to a FIFO nobody reads: node 0's main "
                    "loop blocks in open() with the BQL held")
                qmp.send("dump-guest-memory", paging=False, protocol=f"file:{fifo}")
                killed_at = time.monotonic()
                break
            if args.scenario == "evacuatekill" and killed_at is None and started:
                time.sleep(args.kill_delay)
                victim = nodes[-1]
                log(f"x-aggvm-evacuate-node node={victim.index}, then SIGKILL of it once "
                    f"{args.evac_kill_at:.0%} of its memory moved")
                qmp.execute("x-aggvm-evacuate-node", node=victim.index)
                # Killed on progress, not after a delay: how long an evacuation
                # takes depends on the machine, and one that ended first shows nothing.
                give_up = time.monotonic() + 60
                while time.monotonic() < give_up:
                    ev = (qmp.execute("x-query-aggvm").get("evacuation") or {})
                    report["evacuation_at_kill"] = ev
                    total = ev.get("pages-total") or 0
                    if ev.get("phase") not in ("vcpus", "memory") or (
                            total and ev.get("pages-moved", 0) >= args.evac_kill_at * total):
                        break
                    time.sleep(0.005)
                log(f"evacuation when killed: {report.get('evacuation_at_kill')}")
                victim.kill(signal.SIGKILL)
                killed_at = time.monotonic()
                break
            if args.scenario == "evacuate" and started and "evacuation" not in report:
                time.sleep(args.kill_delay)
                report["evacuation"] = evacuate(args, nodes, qmp, check)
            if args.scenario == "join" and started and "join" not in report:
                report["join"] = join(args, nodes, late, qmp, check, work)
            if args.scenario in sched.SCENARIOS and started and "sched" not in report:
                report["sched"] = {"t0": t0}
                sched.run(args, nodes, qmp, check, report["sched"])
            if args.scenario == "badmoves" and started and not report.get("badmoves"):
                report["badmoves"] = bad_moves(args, qmp, check)
            if args.scenario == "migrate" and (started or args.move_early) and mover.due(results):
                mover.move(qmp, check, started, results)
            if args.scenario == "stopcont" and not report.get("paused") and started:
                time.sleep(args.kill_delay)
                report["paused"] = pause_and_resume(args, nodes, qmp, check)
            if now > deadline:
                check.expect(False, f"no result within {args.timeout:.0f} s")
                print_stuck_vcpus(qmp)
                break
        if args.scenario in FAILURES or args.scenario in ("movefreeze", "movekill", "evacuatekill"):
            if args.scenario == "evacuatekill":
                # Before judge_failure(), which ends node 0 with quit.
                judge_evacuation_killed(qmp, check, report)
            judge_failure(args, nodes, qmp, killed_at, check, report)
            if args.disk_blocks:
                judge_disk(disk, check, report)
        elif args.scenario == "bqlstuck":
            judge_stuck(args, nodes, killed_at, check, report)
        else:
            rc = node0.wait(PROCESS_EXIT_S)
            judge(args, results, rc, check)
            if http:
                http.judge(results, check)
            if args.scenario in sched.SCENARIOS:
                sched.judge(args, results, report.setdefault("sched", {}), check)
            for n in nodes[1:]:
                wrc = n.wait(PROCESS_EXIT_S)
                check.expect(wrc is not None, f"node {n.index} still running "
                             f"{PROCESS_EXIT_S} s after node 0 exited")
        if args.max_rss_mib:
            for i, mib in sorted(report.get("rss_peak_mib", {}).items()):
                log(f"node {i}: largest resident set {mib} MiB (guest RAM {args.mem} MiB)")
                check.expect(mib <= args.max_rss_mib, f"node {i} held {mib} MiB resident, "
                             f"more than {args.max_rss_mib} MiB")
            check.expect(len(report.get("rss_peak_mib", {})) == args.hosts,
                         "resident set not sampled on every node")
        if info:
            print(describe_query(info), flush=True)
            report["query_aggvm"] = info
            if mover:
                mover.judge(info, check, report)
            judge_dma_prefetch(args, info, check)
            if args.scenario in ("run", "stopcont", "nmi", "migrate", "badmoves", "evacuate",
                                 "join"):
                # Node 0 shares its clock before any vCPU runs.
                unshared = [n["id"] for n in info["nodes"]
                            if n["id"] != 0 and "clock-error-ns" not in n]
                check.expect(not unshared, f"x-query-aggvm shows no shared clock "
                             f"for nodes {unshared}")
    finally:
        if qmp:
            qmp.close()
        for n in nodes:
            n.stop()
        if http:
            http.stop()
    return finish(args, nodes, check, results, report, t0)


def finish(args, nodes, check, results, report, t0):
    # Before reading the logs (the early return below runs ahead of finally).
    for n in nodes:
        n.stop()
    judge_cpu_latency(args, report, check)
    vcpus, numa = guest_facts(args, results)
    report.update(results=results, failures=check.failures, guest_vcpus=vcpus,
                  guest_numa_nodes=numa, status="fail" if check.failures else "pass")
    if check.failures:
        for n in nodes:
            if n.index != 0:
                tail = n.tail()
                if tail:
                    print(f"--- node {n.index} log tail ({n.log_path}):\n{tail}", end="")
    # After the nodes' logs: CI keeps only the end of a failed test's output.
    for f in check.failures:
        log(f"FAIL: {f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    log(f"{args.guest} {args.accel} hosts={args.hosts} vcpus={args.vcpus} "
        f"guest_vcpus={vcpus} guest_numa_nodes={numa} "
        f"wall_s={time.monotonic() - t0:.1f} status={report['status']}")
    dispose_work(Path(report["log_dir"]), failed=bool(check.failures), asked_for=args.log_dir)
    return 0 if not check.failures else 1


def dispose_work(work, failed, asked_for):
    """Removes a passing run's work directory: its disk overlays and
    checkpoint files run to hundreds of MiB, and `make check` would leave
    gigabytes in /tmp each time.  A failing run's, or one under a --log-dir
    the caller gave, stays for a look, and the last line says where."""
    if failed or asked_for:
        log(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


CPU_LATENCY_DEVICE = "/dev/cpu_dma_latency"


def host_cpu_latency_us():
    """The host's CPU wake-up latency bound in force now (PM QoS); None if unreadable."""
    try:
        return struct.unpack("i", Path(CPU_LATENCY_DEVICE).read_bytes()[:4])[0]
    except (OSError, struct.error):
        return None


def judge_cpu_latency(args, report, check):
    """With cpu-latency-us=N, the nodes held the host's bound at N or less
    all through the run, and gave it back when they exited."""
    bounds = [int(p.split("=", 1)[1]) for p in args.cluster_prop if p.startswith("cpu-latency-us=")]
    if not bounds or bounds[-1] < 0:
        return
    seen = [v for v in report.get("cpu_latency_seen_us", []) if v is not None]
    before, after = report.get("cpu_latency_before_us"), host_cpu_latency_us()
    log(f"host CPU wake-up latency bound: {before} us before, {min(seen, default=None)}-"
        f"{max(seen, default=None)} us while the guest ran, {after} us after")
    check.expect(bool(seen) and max(seen) <= bounds[-1],
                 f"the nodes did not hold {CPU_LATENCY_DEVICE} at {bounds[-1]} us or less "
                 f"while the guest ran: {seen}")
    check.expect(after == before, f"{CPU_LATENCY_DEVICE} was {before} us before the guest "
                 f"and is {after} us after it: the nodes' request was not withdrawn")


def sample_rss(nodes, report):
    """Keeps each node's largest resident set seen, in MiB."""
    peak = report.setdefault("rss_peak_mib", {})
    for n in nodes:
        try:
            status = Path(f"/proc/{n.proc.pid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        if m:
            peak[n.index] = max(peak.get(n.index, 0), int(m.group(1)) >> 10)


def fault_trace(info, t, report):
    """One --fault-trace line: what changed since the last one."""
    now = {f"n{n['id']} r": n.get("read-faults", 0) for n in info["nodes"]}
    now.update({f"n{n['id']} w": n.get("write-faults", 0) for n in info["nodes"]})
    d = info.get("dsm", {})
    for key in ("io-served", "interrupts-sent", "interrupts-received"):
        now[key] = d.get(key, 0)
    last = report.setdefault("fault_trace_last", {})
    print(f"[{t:7.2f} s] faults: " + " ".join(f"{k}+{v - last.get(k, 0)}" for k, v in now.items()),
          flush=True)
    report["fault_trace_last"] = now


def cpu_seconds(pid):
    """User plus system CPU time a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def expect_refused(qmp, check, command, cases):
    return qmp_client.expect_refused(qmp, check, command, cases, say=log)


def bad_moves(args, qmp, check):
    """Requests x-aggvm-migrate-vcpu must refuse, each naming why."""
    last = args.vcpus - 1
    home = last // args.vcpus_per_host
    cases = [
        ({"cpu-index": args.vcpus + 5, "node": 0}, f"no vCPU {args.vcpus + 5}"),
        ({"cpu-index": last, "node": args.hosts + 3}, f"no node {args.hosts + 3}"),
        ({"cpu-index": last, "node": home}, "already runs on node"),
    ]
    refused = expect_refused(qmp, check, "x-aggvm-migrate-vcpu", cases)
    # Two moves of one vCPU at once: the second must wait its turn.
    qmp.execute("x-aggvm-migrate-vcpu", **{"cpu-index": last, "node": 0})
    try:
        qmp.execute("x-aggvm-migrate-vcpu", **{"cpu-index": last, "node": 0})
        check.expect(False, "a second move of a moving vCPU was accepted")
    except RuntimeError as e:
        log(f"refused as it should be: a vCPU already moving: {e}")
        refused += check.expect("already moving" in str(e) or "already runs" in str(e),
                                f"refusal of a second move does not say why: {e}")
    event = qmp.wait_event("AGGVM_VCPU_MIGRATED", 30)
    if check.expect(event is not None, "no AGGVM_VCPU_MIGRATED for the good move"):
        qmp.events.remove(event)
        check.expect("error" not in event["data"], f"the good move failed: {event['data']}")
        log(f"the good move: {event['data']}")
    return {"refused": refused}


def join(args, nodes, late, qmp, check, work):
    """The late node joins the running guest; a vCPU and then the whole of
    node 1 (vCPUs and memory) move to it; node 1 exits 0."""
    index, netns, cmd = late
    report = {}
    states = {n["id"]: n["state"] for n in qmp.execute("x-query-aggvm")["nodes"]}
    check.expect(states.get(index) == "absent",
                 f"x-query-aggvm shows the late node {index} {states.get(index)}, expected absent")
    expect_refused(qmp, check, "x-aggvm-migrate-vcpu",
                   [({"cpu-index": 1, "node": index}, "not connected")])
    t0 = time.monotonic()
    log(f"starting node {index}, which joins the running guest")
    newcomer = Node(index, netns, cmd, work)
    nodes.append(newcomer)
    event = qmp.wait_event("AGGVM_NODE_JOINED", 60)
    if not check.expect(event is not None and event["data"]["node"] == index,
                        f"no AGGVM_NODE_JOINED for node {index} within 60 s: {event}\n"
                        f"{newcomer.tail()}"):
        return report
    qmp.events.remove(event)
    report["joined_s"] = time.monotonic() - t0
    log(f"event AGGVM_NODE_JOINED {event['data']} {report['joined_s']:.2f} s after its start")
    info = qmp.execute("x-query-aggvm")
    node_info = {n["id"]: n for n in info["nodes"]}
    check.expect(node_info[index]["state"] == "connected" and "clock-error-ns" in node_info[index],
                 f"x-query-aggvm after the join: {node_info[index]}")
    vcpu = args.vcpus_per_host  # node 1's first vCPU
    log(f"x-aggvm-migrate-vcpu cpu-index={vcpu} node={index}")
    qmp.execute("x-aggvm-migrate-vcpu", **{"cpu-index": vcpu, "node": index})
    moved = qmp.wait_event("AGGVM_VCPU_MIGRATED", 30)
    if not check.expect(moved is not None and "error" not in moved["data"]
                        and moved["data"]["to"] == index,
                        f"the move of vCPU {vcpu} to the new node: {moved}"):
        return report
    qmp.events.remove(moved)
    log(f"event AGGVM_VCPU_MIGRATED {moved['data']}")
    leaver = nodes[1]
    log(f"x-aggvm-evacuate-node node={leaver.index} to={index}")
    qmp.execute("x-aggvm-evacuate-node", node=leaver.index, to=index)
    evacuated = qmp.wait_event("AGGVM_NODE_EVACUATED", 120)
    if not check.expect(evacuated is not None and "error" not in evacuated["data"],
                        f"the evacuation of node {leaver.index} to node {index}: {evacuated}"):
        return report
    data = evacuated["data"]
    log(f"event AGGVM_NODE_EVACUATED {data}")
    check.expect(data["pages"] > 0, "no page changed home")
    rc = leaver.wait(PROCESS_EXIT_S)
    check.expect(rc == 0, f"node {leaver.index} exited with {rc} after its evacuation, expected 0")
    info = qmp.execute("x-query-aggvm")
    on = {v["vcpu"]: v["node"] for v in info["vcpus"]}
    check.expect(all(n != leaver.index for n in on.values()) and
                 sum(n == index for n in on.values()) == 2 * args.vcpus_per_host,
                 f"placement after the evacuation: {on}")
    report.update(evacuated=data, placement=on)
    return report


def evacuate(args, nodes, qmp, check):
    """Empties the last node while the guest runs: it must leave and exit 0."""
    victim = nodes[-1]
    report = {}
    cases = [
        ({"node": 0}, "holds the devices"),
        ({"node": args.hosts + 2}, f"no node {args.hosts + 2}"),
        ({"node": victim.index, "to": victim.index}, "is the node evacuated"),
    ]
    expect_refused(qmp, check, "x-aggvm-evacuate-node", cases)
    t0 = time.monotonic()
    log(f"x-aggvm-evacuate-node node={victim.index} while the guest runs")
    qmp.execute("x-aggvm-evacuate-node", node=victim.index)
    try:
        qmp.execute("x-aggvm-evacuate-node", node=victim.index)
        check.expect(False, "a second evacuation of the same node was accepted")
    except RuntimeError as e:
        check.expect("evacuated already" in str(e) or "evacuating" in str(e),
                     f"a second evacuation was refused without saying why: {e}")
    progress = []
    event = None
    while time.monotonic() - t0 < 120:
        event = qmp.wait_event("AGGVM_NODE_EVACUATED", 0.2)
        info = qmp.execute("x-query-aggvm").get("evacuation")
        if info and (not progress or info != progress[-1]):
            progress.append(info)
        if event:
            break
    if not check.expect(event is not None, "no AGGVM_NODE_EVACUATED within 120 s"):
        return report
    data = event["data"]
    log(f"event AGGVM_NODE_EVACUATED {data} after {time.monotonic() - t0:.2f} s")
    for p in progress:
        log(f"  progress: {p['phase']} vcpus {p['vcpus-moved']}/{p['vcpus-total']} pages "
            f"{p['pages-moved']}/{p['pages-total']} bytes {p['bytes-moved']}")
    report["evacuated"] = data
    check.expect("error" not in data, f"the evacuation failed: {data}")
    check.expect(data["vcpus"] == args.vcpus_per_host,
                 f"{data['vcpus']} vCPUs moved off node {victim.index}, expected "
                 f"{args.vcpus_per_host}")
    check.expect(data["pages"] > 0, "no page changed home")
    rc = victim.wait(PROCESS_EXIT_S)
    check.expect(rc == 0, f"node {victim.index} exited with {rc} after its evacuation, "
                 "expected 0")
    info = qmp.execute("x-query-aggvm")
    states = {n["id"]: n["state"] for n in info["nodes"]}
    check.expect(states.get(victim.index) == "left",
                 f"x-query-aggvm shows node {victim.index} {states.get(victim.index)}, "
                 "expected left")
    ev = info.get("evacuation") or {}
    check.expect(ev.get("phase") == "done" and ev.get("pages-moved") == ev.get("pages-total"),
                 f"x-query-aggvm's evacuation: {ev}")
    still = [v["vcpu"] for v in info["vcpus"] if v["node"] == victim.index]
    check.expect(not still, f"vCPUs {still} still placed on node {victim.index}")
    try:
        qmp.execute("x-aggvm-evacuate-node", node=victim.index)
        check.expect(False, "the node that left was accepted for evacuation")
    except RuntimeError as e:
        check.expect("left" in str(e), f"refusal names no reason: {e}")
    return report


class VcpuMover:
    """Moves one vCPU back and forth between two nodes while the guest runs."""

    def __init__(self, args):
        self.args = args
        self.vcpu = args.move_vcpu if args.move_vcpu >= 0 else args.vcpus - 1
        self.home = self.vcpu // args.vcpus_per_host
        self.other = args.move_to
        self.where = self.home
        self.done = 0
        self.downtimes_us = []
        self.next_at = 0.0
        self.first_before_start = None
        self.failed = False
        self.monitor_lost = None   # (why, results) when node 0's monitor went away

    def due(self, results):
        if self.failed or time.monotonic() < self.next_at:
            return False
        if self.args.keep_moving:
            # Moves go on through every workload, until the guest's last result.
            return not guest_finished(self.args, results)
        return self.done < self.args.moves

    def move(self, qmp, check, started, results):
        to = self.other if self.where == self.home else self.home
        what = f"move {self.done + 1} of vCPU {self.vcpu} to node {to}"
        try:
            qmp.execute("x-aggvm-migrate-vcpu", **{"cpu-index": self.vcpu, "node": to})
            event = qmp.wait_event("AGGVM_VCPU_MIGRATED", 30)
            if event:
                qmp.events.remove(event)
            placed = {v["vcpu"]: v for v in qmp.execute("x-query-aggvm")["vcpus"]}
        except (OSError, ConnectionError) as e:
            # Node 0 may have ended with the guest while this move ran; the
            # guest's last lines may still be unread. judge() decides, once
            # every line is in.
            self.monitor_lost = (f"{what}: node 0's monitor went away: {e}", results)
            self.failed = True
            return
        except (RuntimeError, ValueError) as e:
            check.expect(False, f"{what} refused: {e}")
            self.failed = True
            return
        if not check.expect(event is not None, f"{what}: no AGGVM_VCPU_MIGRATED within 30 s"):
            self.failed = True
            return
        data = event["data"]
        if not check.expect("error" not in data and data["to"] == to, f"{what} failed: {data}"):
            self.failed = True
            return
        check.expect(placed[self.vcpu]["node"] == to and not placed[self.vcpu].get("moving"),
                     f"after move {self.done + 1}, x-query-aggvm shows vCPU {self.vcpu} as "
                     f"{placed[self.vcpu]}, expected on node {to}, not moving")
        self.where = to
        self.done += 1
        if self.done == 1:
            self.first_before_start = not started
            log(f"first move: vCPU {self.vcpu} to node {to}, "
                f"{'before' if not started else 'after'} the guest started")
        self.downtimes_us.append(data["downtime-us"])
        self.next_at = time.monotonic() + self.args.move_interval

    def judge(self, info, check, report):
        d = sorted(self.downtimes_us)
        p50 = d[len(d) // 2] if d else 0
        log(f"vCPU {self.vcpu}: {self.done} moves between nodes {self.home} and {self.other}, "
            f"downtime p50 {p50} us, max {d[-1] if d else 0} us")
        report["moves"] = {"vcpu": self.vcpu, "done": self.done, "downtime_us": d}
        if self.monitor_lost:
            why, results = self.monitor_lost
            # Only a guest that had finished may take node 0 away mid-move.
            finished = self.args.keep_moving and guest_finished(self.args, results)
            check.expect(finished, why)
            if finished:
                log(f"the guest finished while the last move ran ({why})")
                check.expect(self.done >= self.args.moves,
                             f"only {self.done} moves done while the guest ran, at least "
                             f"{self.args.moves} expected")
        elif self.failed:
            pass  # the failed move said why
        elif self.args.keep_moving:
            check.expect(self.done >= self.args.moves,
                         f"only {self.done} moves done while the guest ran, at least "
                         f"{self.args.moves} expected")
        else:
            check.expect(self.done == self.args.moves,
                         f"only {self.done} of {self.args.moves} moves done while the guest ran")
        if self.args.move_early:
            check.expect(self.first_before_start is True, "the first move came after the "
                         "guest had started: the test shows nothing of AP bring-up")


def pause_and_resume(args, nodes, qmp, check):
    """QMP stop on node 0 pauses every node's vCPUs; cont resumes them."""
    qmp.execute("stop")
    status = qmp.execute("query-status")
    check.expect(status["status"] == "paused", f"node 0 is {status['status']} after stop")
    time.sleep(0.5)  # the workers follow node 0's word
    before = {n.index: cpu_seconds(n.proc.pid) for n in nodes[1:]}
    time.sleep(args.pause_s)
    used = {i: cpu_seconds(nodes[i].proc.pid) - t for i, t in before.items()}
    for i, cpu in used.items():
        log(f"node {i} used {cpu:.2f} s of CPU in {args.pause_s:.1f} s while paused")
        # A running TCG vCPU spinning in ring 3 burns a whole core.
        check.expect(cpu < 0.25 * args.pause_s,
                     f"node {i} used {cpu:.2f} s of CPU in {args.pause_s:.1f} s: its vCPUs "
                     "did not pause with node 0's")
    qmp.execute("cont")
    status = qmp.execute("query-status")
    check.expect(status["running"], f"node 0 is {status['status']} after cont")
    log(f"paused {args.pause_s:.1f} s and resumed")
    return {"seconds": args.pause_s, "worker_cpu_s": used}


def judge_dma_prefetch(args, info, check):
    """A Debian guest that wrote its disk from a vCPU on another node: node 0's
    device models copied those buffers in one round (aggvm-cluster
    dma-prefetch, on unless turned off), not a fault a page."""
    off = "dma-prefetch=off" in args.cluster_prop
    wrote = {"fileio", "blk"} & set(args.linux_run)
    if args.guest != "linux" or not args.disk_image or args.hosts < 2 or not wrote or off:
        return
    d = info.get("dsm", {})
    check.expect(d.get("copied-pages", 0) > 0,
                 f"node 0 copied {d.get('copied-pages', 0)} pages other nodes held for its devices "
                 f"while vCPUs on other nodes ran {'/'.join(sorted(wrote))}: expected some")


def judge_disk(disk, check, report):
    """The guest's disk holds what it wrote or what was there: no block of
    zeros (lost memory handed out as zero pages and written out) or torn."""
    counts, first_bad = check_blocks.census(disk)
    log(f"disk after the failure: {counts['valid']} valid blocks, {counts['untouched']} "
        f"untouched, {counts['zeroed']} zeroed, {counts['torn']} torn")
    report["disk"] = counts
    check.expect(counts["valid"] >= 64, f"only {counts['valid']} valid blocks: the guest "
                 "barely wrote, the test shows nothing")
    check.expect(counts["zeroed"] == 0 and counts["torn"] == 0,
                 f"{counts['zeroed']} zeroed and {counts['torn']} torn blocks on the disk "
                 f"(first at block {first_bad})")


# Scenarios in which the last worker fails, and how it is made to.
FAILURES = {"kill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigstop": signal.SIGSTOP}


LOST_MEMORY_EXIT = "a device model touched guest memory lost with a failed node"


def judge_failure(args, nodes, qmp, killed_at, check, report):
    """Node 0 stops the guest and names the failed node; or, if one of its
    device models touched memory lost with that node (a virtio ring homed
    there), it ends saying so, so that nothing is written from that memory."""
    try:
        judge_failure_on_node0(args, nodes, qmp, killed_at, check, report)
    except (ConnectionError, OSError) as e:
        rc = nodes[0].wait(PROCESS_EXIT_S)
        node0_log = nodes[0].log_path.read_text(errors="replace")
        ended = rc is not None and rc != 0 and LOST_MEMORY_EXIT in node0_log
        log(f"node 0's monitor closed ({e}); node 0 exited with {rc}")
        check.expect(ended, f"node 0 went away (exit {rc}) without saying that a device "
                     f"model touched lost memory:\n{nodes[0].tail()}")
        report["node0_ended"] = LOST_MEMORY_EXIT if ended else f"exit {rc}"
        for n in nodes[1:]:
            check.expect(n.wait(PROCESS_EXIT_S) is not None,
                         f"node {n.index} still running {PROCESS_EXIT_S} s after node 0 ended")


def judge_failure_on_node0(args, nodes, qmp, killed_at, check, report):
    if not check.expect(killed_at is not None, "the guest never started: nothing killed"):
        return
    victim = nodes[-1]
    wait_s = args.peer_timeout_ms / 1000 + 15
    event = qmp.wait_event("AGGVM_NODE_FAILED", wait_s)
    if check.expect(event is not None, f"no AGGVM_NODE_FAILED within {wait_s:.0f} s"):
        data = event["data"]
        took = time.monotonic() - killed_at
        log(f"event AGGVM_NODE_FAILED node={data['node']} after {took:.2f} s: {data['reason']}")
        check.expect(data["node"] == victim.index,
                     f"event names node {data['node']}, node {victim.index} failed")
        if args.scenario == "sigterm":
            # A worker told to end says so: no need to wait for a timeout.
            check.expect("left the cluster" in data["reason"],
                         f"reason does not say node {victim.index} left: {data['reason']}")
            check.expect(victim.wait(PROCESS_EXIT_S) is not None,
                         f"node {victim.index} still running {PROCESS_EXIT_S} s after SIGTERM")
        if args.scenario in ("sigstop", "movefreeze"):
            # Heartbeats notice a frozen node even when no page or call waits on it.
            check.expect(took < args.peer_timeout_ms / 1000 + 5,
                         f"a frozen node was noticed only after {took:.1f} s "
                         f"(timeout {args.peer_timeout_ms} ms)")
        report["event"] = data
    status = None
    for _ in range(50):
        try:
            status = qmp.execute("query-status")
        except (OSError, RuntimeError, ConnectionError, ValueError) as e:
            check.expect(False, f"query-status failed: {e}")
            break
        if not status["running"]:
            break
        time.sleep(0.1)
    try:
        info = qmp.execute("x-query-aggvm")
        states = {n["id"]: n["state"] for n in info["nodes"]}
        log(f"x-query-aggvm after the failure: node states {states}")
        check.expect(states.get(victim.index) == "failed",
                     f"x-query-aggvm shows node {victim.index} {states.get(victim.index)}, "
                     "expected failed")
    except (OSError, RuntimeError, ConnectionError, ValueError) as e:
        check.expect(False, f"x-query-aggvm failed after the failure: {e}")
    if status:
        log(f"node 0 status: {status['status']}")
        check.expect(not status["running"] and status["status"] == "internal-error",
                     f"guest is {status['status']}, expected stopped (internal-error)")
        try:
            qmp.execute("cont")
            check.expect(False, "cont resumed a guest whose memory is lost")
        except RuntimeError as e:
            log(f"cont refused as it should be: {e}")
    for n in nodes[1:-1]:
        check.expect(n.wait(PROCESS_EXIT_S) is not None,
                     f"node {n.index} still running {PROCESS_EXIT_S} s after node "
                     f"{victim.index} died")
    try:
        qmp.execute("quit")
    except (OSError, RuntimeError, ConnectionError, ValueError):
        pass
    rc = nodes[0].wait(PROCESS_EXIT_S)
    check.expect(rc is not None, f"node 0 did not exit {PROCESS_EXIT_S} s after quit")
    log(f"every process ended {time.monotonic() - killed_at:.1f} s after the kill")


def judge_evacuation_killed(qmp, check, report):
    """The evacuation of a node killed midway ends with an error, never as done."""
    at_kill = report.get("evacuation_at_kill") or {}
    check.expect(at_kill.get("phase") == "memory"
                 and at_kill.get("pages-moved", 0) < at_kill.get("pages-total", 0),
                 f"the node was killed when its evacuation was {at_kill or 'over'}, "
                 "not midway: the test shows nothing")
    try:
        event = qmp.wait_event("AGGVM_NODE_EVACUATED", 10)
    except (ConnectionError, OSError) as e:
        check.expect(False, f"node 0's monitor went away before the evacuation ended: {e}")
        return
    if check.expect(event is not None, "no AGGVM_NODE_EVACUATED after the node died"):
        log(f"event AGGVM_NODE_EVACUATED {event['data']}")
        check.expect("error" in event["data"], f"the evacuation of a dead node "
                     f"succeeded: {event['data']}")
        report["evacuated"] = event["data"]


def judge_stuck(args, nodes, killed_at, check, report):
    """Node 0 cannot take its BQL: the worker's access fails the cluster."""
    if not check.expect(killed_at is not None, "the guest never started: nothing stalled"):
        return
    limit = 2 * args.peer_timeout_ms / 1000 + 10
    rc = nodes[0].wait(limit)
    took = time.monotonic() - killed_at
    if not check.expect(rc is not None, f"node 0 still running {limit:.0f} s after its "
                        f"BQL got stuck (timeout {args.peer_timeout_ms} ms)"):
        return
    log(f"node 0 exited with status {rc} {took:.1f} s after the stall")
    report["stuck_exit_s"] = round(took, 2)
    node0_log = nodes[0].log_path.read_text(errors="replace")
    check.expect(rc != 0, "node 0 exited with status 0 after losing its BQL")
    check.expect("node 0 cannot go on" in node0_log,
                 f"node 0 does not say why it ended:\n{nodes[0].tail()}")
    for n in nodes[1:]:
        wrc = n.wait(PROCESS_EXIT_S)
        if check.expect(wrc is not None, f"node {n.index} still running {PROCESS_EXIT_S} s "
                        "after node 0 ended"):
            check.expect(wrc != 0, f"node {n.index} exited with status 0: its device "
                         "access was never carried out")
    # The worker whose vCPU waited says what was not done, unless node 0's
    # end reached it first (then it ends on the lost connection).
    worker_log = nodes[-1].log_path.read_text(errors="replace")
    said = [line for line in worker_log.splitlines()
            if "not carried out by node 0" in line or "failed" in line]
    log(f"node {nodes[-1].index}: {said[-1] if said else '(nothing said)'}")
    check.expect(bool(said), f"node {nodes[-1].index} does not say why it ended:\n"
                 f"{nodes[-1].tail()}")


def run_reported(qemu, harness, extra, capture=False):
    """Runs this script as a child (harness included) with extra arguments.

    Returns (exit status, its --json report or {}, its output when captured).
    """
    fd, path = tempfile.mkstemp(prefix="aggvm-guest-", suffix=".json")
    os.close(fd)
    out = Path(path)
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--json", str(out),
                               "--qemu", qemu, "--harness", harness] + extra,
                              stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.STDOUT if capture else None, text=True)
        report = json.loads(out.read_text()) if out.stat().st_size else {}
    finally:
        out.unlink(missing_ok=True)
    return proc.returncode, report, proc.stdout or ""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--guest", choices=["linux", "testos"], required=True)
    p.add_argument("--accel", choices=["kvm", "tcg"], default="tcg")
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--vcpus-per-host", type=int, default=2)
    p.add_argument("--kernel", required=True)
    p.add_argument("--initrd", help="Linux guest's initramfs")
    p.add_argument("--mem", type=int, help="MiB (default: linux 1024, testos 256)")
    p.add_argument("--machine", default="pc")
    p.add_argument("--cpu", help="default: the runner's model, without x2APIC "
                   "(aggregated mode's user-space APIC is xAPIC only)")
    p.add_argument("--workload", default="all", help="testos workload")
    p.add_argument("--append", default="",
                   help="testos options, or Linux kernel arguments (space-separated)")
    p.add_argument("--moves", type=int, default=20,
                   help="migrate: how many moves (with --keep-moving: at least)")
    p.add_argument("--keep-moving", action="store_true",
                   help="migrate: go on moving until the guest's last result, so that every "
                   "workload runs with moves")
    p.add_argument("--move-interval", type=float, default=0.2,
                   help="migrate: seconds between the end of a move and the next")
    p.add_argument("--move-vcpu", type=int, default=-1, help="migrate: the vCPU (default the last)")
    p.add_argument("--move-to", type=int, default=0, help="migrate: the other node")
    p.add_argument("--move-early", action="store_true",
                   help="migrate: start moving as soon as QMP answers, before the guest "
                   "has started its APs")
    p.add_argument("--scenario", choices=["run", "stopcont", "nmi", "migrate", "badmoves",
                                          "movefreeze", "movekill", "bqlstuck", "evacuate", "evacuatekill",
                                          "join"]
                   + list(FAILURES) + list(sched.SCENARIOS),
                   default="run")
    p.add_argument("--kill-delay", type=float, default=0.5,
                   help="seconds after the guest starts before the scenario acts")
    p.add_argument("--pause-s", type=float, default=2.0, help="stopcont: how long to stay paused")
    p.add_argument("--sched-delay", type=float, default=1.5,
                   help="sched-affinity: seconds of bad placement before the scheduler starts")
    p.add_argument("--deadline", type=float, default=60,
                   help="sched-*: seconds within which a node must be emptied and gone")
    p.add_argument("--evac-kill-at", type=float, default=0.25,
                   help="evacuatekill: SIGKILL once this fraction of the node's memory moved")
    p.add_argument("--kill-after", help="act once node 0's console prints a line matching this")
    p.add_argument("--linux-run", default=",".join(linux.WORKLOADS),
                   help="Linux guest workloads, comma-separated (e.g. blkwrite)")
    p.add_argument("--disk-blocks", type=int, default=0,
                   help="give the guest a virtio-blk disk of this many 4 KiB blocks (node 0's "
                        "is an image filled with 0xee, checked after a failure)")
    p.add_argument("--disk-image",
                   help="Linux guest: boot the Debian disk guest (build_disk.py) from this qcow2 "
                        "(--kernel and --initrd: its debian-vmlinuz and debian-initrd.img), with "
                        "a scratch disk on virtio-scsi and a NIC on node 0's user networking")
    p.add_argument("--net-bytes", type=int, default=0,
                   help="Linux: a virtio-net NIC (user networking on node 0) and a file of this "
                        "size to fetch over HTTP (workload net)")
    p.add_argument("--cluster-prop", action="append", default=[],
                   help="extra aggvm-cluster property, e.g. placement.0.vcpu=1")
    p.add_argument("--peer-timeout-ms", type=int, default=5000)
    p.add_argument("--fault-trace", action="store_true",
                   help="print each node's remote faults, device accesses served and "
                        "interrupts every second (deltas), beside the guest's lines")
    p.add_argument("--trace", action="append", default=[],
                   help="QEMU trace events (-trace) on every node, in its log")
    p.add_argument("--max-rss-mib", type=int, default=0,
                   help="fail when a node's resident set grows beyond this (with resident-cap)")
    p.add_argument("--timeout", type=float, default=240)
    p.add_argument("--no-aggregate", dest="aggregate", action="store_false",
                   help="one stock process (the baseline): --hosts 1")
    p.add_argument("--qemu", default=os.environ.get("AGGVM_QEMU", ""))
    p.add_argument("--harness", default=os.environ.get("AGGVM_HARNESS", ""))
    p.add_argument("--nohz-full", action="store_true",
                   help="Linux: nohz_full= every vCPU but 0, so that the guest kernel's "
                        "housekeeping stays on vCPU 0, on node 0 (run_linux_guest.py)")
    p.add_argument("--log-dir", default=None)
    p.add_argument("--json")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.guest == "linux" and not args.initrd:
        p.error("--guest linux needs --initrd")
    for path in (args.disk_image, args.initrd) if args.disk_image else ():
        if not os.path.isfile(path):
            p.error(f"{path} is missing: build the Debian disk guest first (make disk-guest, "
                    "or meson compile -C build linux-disk-guest)")
    args.linux_run = [w for w in args.linux_run.split(",") if w]
    args.mem = args.mem or (1024 if args.guest == "linux" else 256)
    args.cpu = args.cpu or (linux.DEFAULT_CPU if args.guest == "linux" else "qemu64") + ",-x2apic"
    args.vcpus = args.hosts * args.vcpus_per_host
    args.numa_nodes = args.hosts
    if args.guest == "testos" and "peer=" not in args.append and args.vcpus > 1:
        # Ping-pong and IPIs between vCPU 0 (node 0) and one on the last host.
        args.append = f"{args.append} peer={args.vcpus - 1}".strip()
    return args


def start_in_hosts(args, hosts, script, prefix):
    """What a script that runs nodes in harness hosts does first: None once
    inside the hosts (go on), else its exit status: SKIP, saying why, when
    QEMU, KVM or the harness is missing, or that of the script run again
    under `aggvm-harness run` with @hosts namespaces."""
    if not (args.qemu and os.access(args.qemu, os.X_OK)):
        log(f"SKIP: the patched QEMU ({args.qemu or 'AGGVM_QEMU unset'}) is not built")
        return SKIP
    if args.accel == "kvm":
        why = testos.kvm_unusable()
        if why:
            log(f"SKIP: KVM not usable: {why}")
            return SKIP
    if "AGGVM_HOST0_NETNS" in os.environ:
        return None
    if not (args.harness and os.access(args.harness, os.X_OK)):
        log(f"SKIP: aggvm-harness ({args.harness or 'AGGVM_HARNESS unset'}) not built")
        return SKIP
    name = f"{prefix}{os.getpid() % 100000}"
    cmd = [args.harness, "run", "--hosts", str(hosts), "--name", name, "--",
           sys.executable, str(script)] + sys.argv[1:]
    return subprocess.call(cmd)


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    rc = start_in_hosts(args, args.hosts, __file__, "ag")
    return rc if rc is not None else run_cluster(args)


if __name__ == "__main__":
    sys.exit(main())
