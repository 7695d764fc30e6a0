#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""An aggregated guest driven by the distribution's libvirt, end to end.

Scenarios (--scenario):
  lifecycle   2 hosts: define from docs/examples/aggvm-guest.xml (dumpxml
              keeps the aggvm metadata), virsh start, the guest's results on
              its console, list/dominfo, x-query-aggvm through
              qemu-monitor-command, aggvmctl status, virsh shutdown (the ACPI
              power button: every node ends), start again, destroy (every
              node ends within a bounded time), undefine
  worker-killed  3 hosts: the last host dies (every process in it, SIGKILL)
              while the guest runs: virsh qemu-monitor-event sees
              AGGVM_NODE_FAILED naming it, the domain shows paused with a
              reason, the surviving worker ends; destroy; the host comes back
              and virsh start works again
  bad-input   virsh start of domains that must fail with an error naming the
              problem and leave nothing running: a cell with no host, vCPU 0
              away from the head, metadata that does not parse, an
              unreachable host, a daemon refusing the secret, a secret file
              others can read, an option a worker host will not run
  save-restore  2 hosts: virsh save of the running guest, virsh restore,
              x-query-aggvm shows both hosts and the placement again, and
              virsh shutdown reaches the restored guest
  migrate     4 hosts, two libvirtd (hosts 0 and 2): virsh migrate --live
              of the running guest from hosts 0-1 to hosts 2-3 with --xml
              naming the new hosts; it runs on there (x-query-aggvm, the
              ACPI power button, no reboot) and nothing is left on 0-1
Exit status: 0 pass, 1 fail, 77 skip (libvirt or a built part missing).
Without AGGVM_HOST0_NETNS the script runs itself under `aggvm-harness run`.
"""

import argparse
import json
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "guest" / "linux"))
import libvirt_cluster as lc  # noqa: E402
from run_linux_guest import Checker, housekeeping_on_vcpu0  # noqa: E402
from libvirt_cluster import NS, log  # noqa: E402

SKIP = 77
BOOT_S = 300          # a Linux guest under TCG over 2-3 hosts on 2 cores, with slack
HOSTS = {"lifecycle": 2, "worker-killed": 3, "bad-input": 2, "save-restore": 2, "migrate": 4}
# The first libvirtd's cluster, where the scenario runs more than one.
FIRST_CLUSTER_HOSTS = {"migrate": 2}


def check_guest(c, check, name, hosts):
    console = c.wait_console(name, r"aggvm-guest: holding", BOOT_S)
    if not check.expect(console is not None, f"{name}: the guest did not reach its hold point "
                        f"within {BOOT_S} s; state {c.domstate(name)}"):
        return False
    res = lc.results(console)
    topo = res.get("topology", {})
    check.expect(topo.get("status") == "pass" and topo.get("vcpus") == str(2 * hosts)
                 and topo.get("numa_nodes") == str(hosts),
                 f"{name}: the guest's topology is {topo}, expected {2 * hosts} vCPUs on {hosts} NUMA nodes")
    atom = res.get("atomics", {})
    check.expect(atom.get("status") == "pass", f"{name}: atomics across hosts: {atom}")
    log(f"guest: {topo.get('vcpus')} vCPUs, {topo.get('numa_nodes')} NUMA nodes, "
        f"atomics total {atom.get('total')} of {atom.get('expected')}")
    return True


def query_aggvm(c, name):
    r = c.virsh("qemu-monitor-command", name, '{"execute":"x-query-aggvm"}', check=False, quiet=True)
    return json.loads(r.stdout)["return"] if r.returncode == 0 else None


def check_console(c, check, name):
    """virsh console attaches to node 0's serial port (on a terminal, as a
    person runs it) and detaches with ^]."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(["virsh", "-c", c.uri, "console", name], stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and b"Escape character" not in seen:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
    # virsh prints its banner before it puts the terminal in raw mode; a ^]
    # that arrives first sits in the cooked line buffer, unread. So send it
    # again each second until virsh leaves (at most 10 s).
    for _ in range(10):
        os.write(master, b"\x1d")
        try:
            proc.wait(1)
            break
        except subprocess.TimeoutExpired:
            while select.select([master], [], [], 0)[0]:
                try:
                    os.read(master, 4096)
                except OSError:
                    break
    else:
        proc.kill()
        proc.wait()
    os.close(master)
    text = seen.decode(errors="replace").strip().replace("\r", "")
    log(f"virsh console: {text!r}")
    check.expect(f"Connected to domain '{name}'" in text and "Escape character" in text,
                 f"virsh console did not attach: {text!r}")
    check.expect(proc.returncode == 0, f"virsh console exited {proc.returncode} after ^]")


def check_both_hosts(c, check, name, what):
    """x-query-aggvm shows the 2-host guest whole: node 1 connected, vCPUs
    0-1 on node 0 and 2-3 on node 1."""
    info = query_aggvm(c, name)
    if check.expect(info is not None, f"{what} failed"):
        states = {n["id"]: n["state"] for n in info["nodes"]}
        placed = [v["node"] for v in sorted(info["vcpus"], key=lambda v: v["vcpu"])]
        log(f"{what}: nodes {states}, vCPUs on nodes {placed}")
        check.expect(states == {0: "local", 1: "connected"}, f"node states {states}")
        check.expect(placed == [0, 0, 1, 1], f"vCPU placement {placed}")


def shut_down(c, check, name, timeout):
    """virsh shutdown: the guest sees the ACPI power button, the domain is
    shut off within `timeout` s and every node's QEMU ends.  Its state."""
    c.virsh("shutdown", name)
    state = c.wait_state(name, "shut off", timeout)
    check.expect(state.startswith("shut off"), f"virsh shutdown: state {state} after {timeout} s")
    check.expect("power button pressed" in c.console_log(name).read_text(errors="replace"),
                 f"{name}: the guest never saw the ACPI power button")
    check.expect(c.wait_no_qemu(name, 15), f"after shutdown: QEMUs left {c.qemu_processes(name)}")
    return state


def lifecycle(c, check):
    name = "aggvm-lifecycle"
    c.start_noded(1)
    path = c.define(name, 2)
    dumped = c.virsh("dumpxml", name, quiet=True).stdout
    hosts = ET.fromstring(dumped).findall(f"metadata/{{{NS}}}cluster/{{{NS}}}host")
    check.expect([(h.get("id"), h.get("address"), h.get("cells")) for h in hosts]
                 == [("0", c.hosts[0][1], "0"), ("1", c.hosts[1][1], "1")],
                 f"dumpxml lost or changed the aggvm metadata: {[h.attrib for h in hosts]}")
    log(f"dumpxml keeps <aggvm:cluster> with {len(hosts)} hosts (defined from {path.name})")

    for boot in (1, 2):
        t0 = time.monotonic()
        r = c.virsh("start", name, check=False)
        if not check.expect(r.returncode == 0, f"virsh start #{boot} failed: {r.stderr.strip()}"):
            return
        if not check_guest(c, check, name, 2):
            return
        log(f"boot #{boot}: guest ready {time.monotonic() - t0:.1f} s after virsh start")
        check.expect(c.domstate(name).startswith("running"), f"state after boot: {c.domstate(name)}")
        listing = c.virsh("list").stdout
        check.expect(name in listing and "running" in listing, f"virsh list: {listing}")
        check.expect("State:          running" in c.virsh("dominfo", name).stdout, "dominfo: not running")
        if boot == 1:
            c.virsh("suspend", name)
            check.expect(c.domstate(name).startswith("paused (user)"), f"suspend: {c.domstate(name)}")
            c.virsh("resume", name)
            check.expect(c.domstate(name).startswith("running"), f"resume: {c.domstate(name)}")
        check_both_hosts(c, check, name, "x-query-aggvm through virsh qemu-monitor-command")
        status = c.aggvmctl("status", name)
        check.expect(status.returncode == 0 and c.hosts[1][1] in status.stdout
                     and "connected" in status.stdout,
                     f"aggvmctl status: rc {status.returncode}: {status.stdout}{status.stderr}")
        # Every host's resident memory (the worker's from its heartbeats).
        rows = [line.split() for line in status.stdout.splitlines() if line[:1].isdigit()]
        check.expect(len(rows) == 2 and all(len(r) >= 6 and r[5] == "MiB" for r in rows),
                     f"aggvmctl status lacks a host's resident memory: {rows}")
        if boot == 1:
            check_console(c, check, name)
            t1 = time.monotonic()
            state = shut_down(c, check, name, 60)
            log(f"shutdown: every node ended {time.monotonic() - t1:.1f} s after virsh shutdown ({state})")
        else:
            moved = c.aggvmctl("move", name, "3", "0", "--timeout", "60")
            check.expect(moved.returncode == 0 and "vCPU 3 now runs on node 0" in moved.stdout,
                         f"aggvmctl move: {moved.stdout}{moved.stderr}")
            info = query_aggvm(c, name)
            placed = [v["node"] for v in sorted(info["vcpus"], key=lambda v: v["vcpu"])] if info else None
            check.expect(placed == [0, 0, 1, 0], f"after aggvmctl move: vCPUs on nodes {placed}")
            t1 = time.monotonic()
            c.virsh("destroy", name)
            gone = c.wait_no_qemu(name, 15)
            check.expect(gone, f"after destroy: QEMUs left {c.qemu_processes(name)}")
            log(f"destroy: every node ended {time.monotonic() - t1:.1f} s after virsh destroy")
    check.expect(c.noded_log(1).count("ended") >= 2, "aggvm-noded did not log both workers' ends")
    c.virsh("undefine", name)
    c.domains.discard(name)
    check.expect(c.virsh("dominfo", name, check=False, quiet=True).returncode != 0, "undefine left it")


def worker_killed(c, check):
    name = "aggvm-hostdies"
    for i in (1, 2):
        c.start_noded(i)
    # It boots twice on 3 hosts: with the kernel's own work on vCPU 0, each
    # boot takes half as long (tests/aggregation/meson.build says why).
    c.define(name, 3, kernel_args=housekeeping_on_vcpu0(6))
    c.virsh("start", name)
    if not check_guest(c, check, name, 3):
        return
    events = subprocess.Popen(["virsh", "-c", c.uri, "qemu-monitor-event", "--domain", name,
                               "--event", "AGGVM_NODE_FAILED", "--timeout", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)  # virsh registers its callback
    victims = c.kill_host(2)
    t0 = time.monotonic()
    log(f"host 2 dies: SIGKILL to its {len(victims)} processes (aggvm-noded, node 2)")
    try:
        out, _ = events.communicate(timeout=70)
    except subprocess.TimeoutExpired:
        events.kill()
        out, _ = events.communicate()
    log(f"virsh qemu-monitor-event: {out.strip()}")
    check.expect("AGGVM_NODE_FAILED" in out and '"node":2' in out.replace(" ", ""),
                 f"no AGGVM_NODE_FAILED for node 2 through virsh qemu-monitor-event: {out.strip()}")
    state = c.wait_state(name, "paused", 30)
    log(f"domstate --reason: {state} ({time.monotonic() - t0:.1f} s after the host died)")
    check.expect(state.startswith("paused") or state.startswith("crashed") or state.startswith("shut off"),
                 f"after a worker host died the domain is '{state}'")
    check.expect(state != "paused (user)" and "(" in state, f"no reason given: {state}")
    info = query_aggvm(c, name)
    if info is not None:
        states = {n["id"]: n["state"] for n in info["nodes"]}
        log(f"x-query-aggvm: nodes {states}")
        check.expect(states.get(2) == "failed", f"node 2 is not marked failed: {states}")
    check.expect(c.wait_noded_log(1, "ended", 20), "the surviving worker (host 1) did not end")
    c.virsh("destroy", name, check=False)
    check.expect(c.wait_no_qemu(name, 15), f"after destroy: QEMUs left {c.qemu_processes(name)}")
    log("host 2 comes back: its aggvm-noded starts again")
    c.start_noded(2)
    r = c.virsh("start", name, check=False)
    if check.expect(r.returncode == 0, f"virsh start after the failure: {r.stderr.strip()}"):
        # Booted again: its init runs (the workloads were checked above).
        console = c.wait_console(name, r"aggvm-guest: start", BOOT_S)
        check.expect(console is not None, "the guest did not boot again after the failure")
        # The operator empties host 2 while the guest runs: it leaves, the
        # guest goes on over hosts 0 and 1.
        ev = c.aggvmctl("evacuate", name, "2", "--timeout", "120")
        check.expect(ev.returncode == 0 and "node 2 is empty" in ev.stdout,
                     f"aggvmctl evacuate: {ev.stdout}{ev.stderr}")
        check.expect("evacuating node 2 [" in ev.stderr, "aggvmctl evacuate showed no progress")
        check.expect(c.wait_noded_log(2, "exit status 0", 20),
                     "host 2's node did not leave with status 0")
        check.expect(c.domstate(name).startswith("running"), f"after the evacuation: {c.domstate(name)}")
        c.virsh("destroy", name)
        check.expect(c.wait_no_qemu(name, 15), f"after destroy: QEMUs left {c.qemu_processes(name)}")


def bad_input(c, check):
    c.start_noded(1)
    other_key = c.work / "other.key"
    other_key.write_bytes(os.urandom(32))
    other_key.chmod(0o600)
    open_key = c.work / "open.key"
    open_key.write_bytes(os.urandom(32))
    open_key.chmod(0o644)

    def host(cluster, i):
        return cluster.findall(f"{{{NS}}}host")[i]

    def extra_cell(dom, cluster):
        dom.find("vcpu").text = "6"
        dom.find("memory").text = "1536"
        ET.SubElement(dom.find("cpu/numa"), "cell", id="2", cpus="4-5", memory="512", unit="MiB")

    def swap_cells(dom, cluster):
        host(cluster, 0).set("cells", "1")
        host(cluster, 1).set("cells", "0")

    def bad_address(dom, cluster):
        host(cluster, 1).set("address", "worker-b.example")

    def typo(dom, cluster):
        host(cluster, 1).set("cell", host(cluster, 1).attrib.pop("cells"))

    def unreachable(dom, cluster):
        host(cluster, 1).set("address", c.hosts[1][1].rsplit(".", 1)[0] + ".250")

    def wrong_secret(dom, cluster):
        cluster.find(f"{{{NS}}}secret").set("file", str(other_key))

    def readable_secret(dom, cluster):
        cluster.find(f"{{{NS}}}secret").set("file", str(open_key))

    def bad_port(dom, cluster):
        cluster.set("port", "70000")

    def worker_option(dom, cluster):
        # An option node 0 runs but a worker host will not (a host directory
        # shared into the guest): aggvm-noded refuses it by name.
        qemu_ns = "http://libvirt.org/schemas/domain/qemu/1.0"
        cmd = ET.SubElement(dom, f"{{{qemu_ns}}}commandline")
        for value in ("-fsdev", f"local,id=fs0,path={c.work},security_model=none"):
            ET.SubElement(cmd, f"{{{qemu_ns}}}arg", value=value)

    cases = [
        ("a cell with no host", extra_cell, "guest NUMA cell 2 (vCPUs 4-5) has no host"),
        ("vCPU 0 away from the head", swap_cells, "vCPU 0 is in cell 0, on host 1"),
        ("an address that is not one", bad_address, "address 'worker-b.example' is not an IPv4 or IPv6"),
        ("a misspelt attribute", typo, "unknown attribute 'cell'"),
        ("a port out of range", bad_port, "<aggvm:cluster port>: '70000' is not a number"),
        ("an option a worker will not run", worker_option, "option '-fsdev' of the domain's command line "
         "cannot run on a worker"),
        ("an unreachable host", unreachable, "cannot connect to"),
        ("a daemon refusing the secret", wrong_secret, "refused the cluster secret"),
        ("a secret others can read", readable_secret, "lets others read it"),
    ]
    for i, (what, edit, expect) in enumerate(cases):
        name = f"aggvm-bad{i}"
        c.define(name, 2, edit=edit)
        t0 = time.monotonic()
        r = c.virsh("start", name, check=False)
        took = time.monotonic() - t0
        err = r.stderr.strip()
        check.expect(r.returncode != 0, f"{what}: virsh start succeeded")
        check.expect(expect in err, f"{what}: the error does not say '{expect}': {err}")
        check.expect(took < 20, f"{what}: virsh start took {took:.1f} s to fail")
        check.expect(c.domstate(name).startswith("shut off"), f"{what}: state {c.domstate(name)}")
        check.expect(c.wait_no_qemu(name, 10), f"{what}: QEMUs left {c.qemu_processes(name)}")
        log(f"refused in {took:.1f} s, nothing left: {what}")
        c.virsh("undefine", name, quiet=True)
        c.domains.discard(name)
    check.expect("refused" in c.noded_log(1), "aggvm-noded did not log the refused secret")
    check.expect("started pid" not in c.noded_log(1),
                 "aggvm-noded started a worker for a domain that had to be refused")


def start_on_two_hosts(c, check, name):
    """aggvm-noded on host 1, then the guest defined and started on hosts
    0-1 and at its hold point with its results checked; False if not."""
    c.start_noded(1)
    c.define(name, 2)
    r = c.virsh("start", name, check=False)
    if not check.expect(r.returncode == 0, f"virsh start failed: {r.stderr.strip()}"):
        return False
    return check_guest(c, check, name, 2)


def save_restore(c, check):
    """virsh save of the running guest on 2 hosts (QEMU's migration to a
    file, from node 0), then virsh restore: the guest runs on again on both
    hosts, and an ACPI shutdown reaches it and ends every node."""
    name = "aggvm-save"
    if not start_on_two_hosts(c, check, name):
        return
    saved = c.work / f"{name}.save"
    t0 = time.monotonic()
    r = c.virsh("save", name, str(saved), check=False, timeout=300)
    if not check.expect(r.returncode == 0, f"virsh save failed: {r.stderr.strip()}"):
        return
    log(f"virsh save: {saved.stat().st_size >> 20} MiB in {time.monotonic() - t0:.1f} s")
    check.expect(c.domstate(name).startswith("shut off"), f"after save: state {c.domstate(name)}")
    check.expect(c.wait_no_qemu(name, 15), f"after save: QEMUs left {c.qemu_processes(name)}")
    t0 = time.monotonic()
    r = c.virsh("restore", str(saved), check=False, timeout=300)
    if not check.expect(r.returncode == 0, f"virsh restore failed: {r.stderr.strip()}"):
        return
    log(f"virsh restore: running again {time.monotonic() - t0:.1f} s later")
    check.expect(c.domstate(name).startswith("running"), f"after restore: state {c.domstate(name)}")
    check_both_hosts(c, check, name, "x-query-aggvm after restore")
    shut_down(c, check, name, 120)
    c.virsh("undefine", name)
    c.domains.discard(name)


def migration_xml(src, dest, name):
    """The running domain's migratable XML with the destination's hosts,
    secret and console log: what `virsh migrate --xml` is given."""
    dom = ET.fromstring(src.virsh("dumpxml", "--migratable", name, quiet=True).stdout)
    cluster = dom.find(f"metadata/{{{NS}}}cluster")
    cluster.find(f"{{{NS}}}secret").set("file", str(dest.key))
    for h in cluster.findall(f"{{{NS}}}host"):
        h.set("address", dest.hosts[int(h.get("id"))][1])
    dom.find("devices/serial/log").set("file", str(dest.console_log(name)))
    path = dest.work / f"{name}-migrate.xml"
    ET.ElementTree(dom).write(path)
    return path


def migrate(c, check):
    """virsh migrate --live of the running guest from hosts 0-1 (the first
    libvirtd) to hosts 2-3 (a second libvirtd, as on another head host):
    it runs on there on both hosts with the same placement, nothing of it is
    left on the source hosts (whose worker ends with status 0), and virsh
    shutdown on the destination reaches the guest, which never rebooted."""
    name = "aggvm-migrate"
    dest = lc.Cluster(c.tools, c.work / "dest", 2, first=2)
    try:
        dest.start_libvirtd()
        dest.start_noded(1)
        if not start_on_two_hosts(c, check, name):
            return
        xml = migration_xml(c, dest, name)
        dest_addr = dest.hosts[0][1]
        t0 = time.monotonic()
        # --unsafe: the disk is one file that both "head hosts" see, as on
        # shared storage, which libvirt cannot tell from a local one here.
        r = c.virsh("migrate", "--live", "--persistent", "--undefinesource", "--unsafe",
                    "--verbose", "--xml", str(xml), "--migrateuri", f"tcp://{dest_addr}",
                    "--listen-address", dest_addr, name, dest.uri, check=False, timeout=300)
        dest.domains.add(name)
        if not check.expect(r.returncode == 0, f"virsh migrate failed: {r.stderr.strip()}"):
            return
        c.domains.discard(name)
        log(f"virsh migrate: running on hosts 2-3 {time.monotonic() - t0:.1f} s later")
        state = dest.domstate(name)
        check.expect(state.startswith("running"), f"destination: state {state}")
        check_both_hosts(dest, check, name, "x-query-aggvm on the destination")
        gone = c.virsh("domstate", name, check=False, quiet=True)
        check.expect(gone.returncode != 0, f"the source still has the domain: {gone.stdout.strip()}")
        check.expect(c.wait_no_qemu(name, 15), f"QEMUs left on the source hosts: {c.qemu_processes(name)}")
        check.expect(c.wait_noded_log(1, "ended, exit status 0", 15),
                     "the source's worker did not end with status 0")
        shut_down(dest, check, name, 120)
        check.expect("aggvm-guest: start" not in dest.console_log(name).read_text(errors="replace"),
                     "the guest booted again on the destination instead of running on")
    finally:
        names = sorted(dest.domains)
        dest.teardown()
        for n in names:
            check.expect(not dest.qemu_processes(n), f"QEMU of {n} left on the destination hosts")
        if dest.libvirtd:
            check.expect(dest.libvirtd.poll() is not None, "the second libvirtd still runs")
        if check.failures:
            for i in range(1, len(dest.hosts)):
                log(f"destination host {i} aggvm-noded log:\n{dest.noded_log(i)[-1500:]}")


SCENARIOS = {"lifecycle": lifecycle, "worker-killed": worker_killed, "bad-input": bad_input,
             "save-restore": save_restore, "migrate": migrate}


def run(args):
    tools = lc.Tools(args)
    work = Path(tempfile.mkdtemp(prefix=f"aggvm-libvirt-{args.scenario}-"))
    c = lc.Cluster(tools, work, FIRST_CLUSTER_HOSTS.get(args.scenario, HOSTS[args.scenario]))
    check = Checker()
    try:
        c.start_libvirtd()
        SCENARIOS[args.scenario](c, check)
    except Exception as e:  # noqa: BLE001: the test reports any failure with its context
        check.expect(False, f"{type(e).__name__}: {e}")
    finally:
        names = sorted(c.domains)
        c.teardown()
        for name in names:
            left = c.qemu_processes(name)
            if left:
                check.expect(False, f"QEMU of {name} left after the test: {left}")
                for pid, _ in left:
                    os.kill(pid, signal.SIGKILL)
        if c.libvirtd:
            check.expect(c.libvirtd.poll() is not None, "libvirtd still runs after the test")
    if check.failures:
        log(f"FAILED ({len(check.failures)}): logs in {work}")
        for f in check.failures:
            log(f"  - {f}")
        for i in range(1, len(c.hosts)):
            tail = c.noded_log(i)[-1500:]
            if tail:
                log(f"host {i} aggvm-noded log:\n{tail}")
        return 1
    log(f"PASS: {args.scenario}")
    subprocess.run(["rm", "-rf", str(work)])
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    p.add_argument("--qemu", required=True)
    p.add_argument("--harness", required=True)
    p.add_argument("--wrapper", required=True, help="aggvm-qemu")
    p.add_argument("--noded", required=True, help="aggvm-noded")
    p.add_argument("--aggvmctl", required=True)
    p.add_argument("--kernel", required=True)
    p.add_argument("--initrd", required=True)
    args = p.parse_args()
    why = lc.missing_prerequisite(args)
    if why:
        log(f"SKIP: {why}")
        return SKIP
    if "AGGVM_HOST0_NETNS" not in os.environ:
        cmd = [args.harness, "run", "--hosts", str(HOSTS[args.scenario]), "--name",
               f"lv{os.getpid() % 100000}", "--", sys.executable, __file__] + sys.argv[1:]
        return subprocess.call(cmd)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
