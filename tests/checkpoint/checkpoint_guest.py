#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Checkpoints, restores and live-migrates a whole aggregated guest with
QEMU's own migration, and judges what the guest reports.

The guest is testos with 4 vCPUs in 2 NUMA nodes (the machine every
command line below builds).  The source runs it on 2 hosts, 2 vCPUs each.
Once its first workload (compute) reported, the scenario acts, and the
guest must finish every workload, passing, wherever it ends up:

  restore  QMP stop, then migrate to a file on node 0; the source quits.
           Restored (-incoming defer, migrate-incoming file:) on 3 hosts
           (vCPU 3 placed on the third, which homes no memory), then the
           same file into one stock QEMU process.  A truncated copy and a
           copy with a broken header are refused with an error.
  live     migrate over TCP while the guest runs, to an aggregated guest
           on 2 other hosts started with -incoming; the source quits.
  head     empties the head host: the same, to an aggregated guest whose
           node 0 runs on the source's worker host and whose worker runs on
           a third host; once the source quits, host 0 runs nothing.
  stockin  the source is one stock QEMU process; it migrates over TCP,
           live, into an aggregated guest on 2 hosts.
  periodic three checkpoints to files while the guest runs (migrate,
           then cont; it pauses for the switch-over only), a few seconds
           apart, each pause measured; the last is restored on 2 hosts.
  killed   a worker is killed (SIGKILL) while node 0 writes the
           checkpoint (live, at 1 MiB/s under churn, so that it cannot
           end first): the migration fails, the guest stops with
           AGGVM_NODE_FAILED, and the file is refused on restore.

Each host is a network namespace made by aggvm-harness (the script runs
itself under `aggvm-harness run` when AGGVM_HOST0_NETNS is not set).
Exit status: 0 pass, 1 fail, 77 skip.
"""

import argparse
import json
import os
import secrets
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "aggregation"))
import aggvm_guest as ag  # noqa: E402
from aggvm_guest import Node, Qmp, log  # noqa: E402

SKIP = 77
PORT = 7100                 # the fabric
MIGRATION_PORT = 7300       # node 0's -incoming tcp:
# What a stock VM must run without to grow into an aggregated one.
GROWABLE = ["-machine", "vmport=off", "-global", "apic.vapic=off"]
HOSTS = {"restore": 3, "live": 4, "head": 3, "stockin": 3, "periodic": 2, "killed": 2}


class Guest:
    """One run of the guest: its nodes (or one stock process), node 0's QMP,
    and what node 0's console printed."""

    def __init__(self, opts, name, hosts, work, key, aggregate=True, cluster=None,
                 incoming=None, extra=(), port=PORT, worker_qmp=False):
        self.name = name
        argv = ["--guest", opts.guest, "--accel", opts.accel, "--hosts", "2",
                "--vcpus-per-host", "2", "--kernel", opts.kernel, "--append", opts.append,
                "--qemu", opts.qemu, "--peer-timeout-ms", str(opts.peer_timeout_ms)]
        if opts.guest == "linux":
            argv += ["--initrd", opts.initrd]
        else:
            argv += ["--workload", opts.workload]
        if opts.mem:
            argv += ["--mem", str(opts.mem)]
        self.args = ag.parse_args(argv)
        self.args.aggregate = aggregate
        self.results = {}
        self.nodes = []
        self.qmp = None
        base = ag.guest_command(self.args)
        qmp_path = work / f"{name}.qmp"
        addresses = [f"{addr}:{port}" for _, addr in hosts]
        log_dir = work / name
        log_dir.mkdir()
        count = len(hosts) if aggregate else 1
        for i in reversed(range(count)):
            cmd = list(base) + list(extra)
            if aggregate:
                obj = {"qom-type": "aggvm-cluster", "id": "agg0", "node": i, "secret": "aggsec",
                       "timeout": opts.peer_timeout_ms, "addresses": addresses, **(cluster or {})}
                cmd += ["-object", f"secret,id=aggsec,file={key},format=raw",
                        "-object", json.dumps(obj)]
            if i == 0:
                cmd += ["-qmp", f"unix:{qmp_path},server=on,wait=off"]
                if incoming:
                    cmd += ["-incoming", incoming]
            else:
                cmd[cmd.index("-serial") + 1] = "null"
                if worker_qmp and i == 1:
                    cmd += ["-qmp", f"unix:{work / (name + '-node1.qmp')},server=on,wait=off"]
            log(f"{name}: node {i} ({hosts[i][0]}): {shlex.join(cmd)}")
            self.nodes.insert(0, Node(i, hosts[i][0], cmd, log_dir))
        node0 = self.nodes[0]
        self.qmp = Qmp(str(qmp_path), timeout=opts.peer_timeout_ms / 1000 + 30,
                       alive=lambda: node0.proc.poll() is None)

    def pump(self, until=None, timeout=0.0):
        """Reads node 0's console for up to @timeout s, or until a line
        contains @until; returns True if it did.  Ends early if node 0 exits."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                item = self.nodes[0].lines.get(timeout=max(0.05, min(left, 0.2)))
            except Exception:
                item = False
            if item is None:
                self.nodes[0].lines.put(None)   # stays ended for the next call
                return False
            if item:
                _, line = item
                ag.parse_guest_line(self.args, line, self.results)
                parse_done(self.results, line)
                if line.strip():
                    print(f"[{self.name}] {line}", flush=True)
                if until and until in line:
                    return True
            if left <= 0:
                return False

    def migrate(self, timeout, uri=None, incoming=None, **params):
        """migrate to @uri (or migrate-incoming from @incoming), with
        migration @params set first; waits for its end.  Returns
        (query-migrate's last answer, seconds) and says what went wrong
        unless it completed."""
        if params:
            self.qmp.execute("migrate-set-parameters", **params)
        t = time.monotonic()
        if incoming:
            self.qmp.execute("migrate-incoming", uri=incoming, **{"exit-on-error": False})
        else:
            self.qmp.execute("migrate", uri=uri)
        info = self.wait_migration(timeout)
        seconds = time.monotonic() - t
        if info.get("status") != "completed":
            log(f"{self.name}: migration ended {info.get('status')}: {info.get('error-desc', '')}")
        return info, seconds

    def wait_migration(self, timeout):
        """Polls query-migrate until it leaves the running states."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            info = self.qmp.execute("query-migrate")
            status = info.get("status")
            if status != last:
                ram = info.get("ram", {})
                log(f"{self.name}: migration {status}, {ram.get('transferred', 0) >> 20} MiB sent, "
                    f"{ram.get('remaining', 0) >> 20} MiB left")
                last = status
            if status in ("completed", "failed", "cancelled"):
                return info
            self.pump(timeout=0.2)
        return {"status": "timeout"}

    def finish(self, timeout):
        """Waits for the guest's last result and node 0's exit; returns its status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and "done" not in self.results and \
                "guest_done" not in self.results:
            if not self.pump(timeout=1.0) and self.nodes[0].proc.poll() is not None:
                break
        return self.nodes[0].wait(max(1, deadline - time.monotonic()))

    def quit(self):
        try:
            self.qmp.execute("quit")
        except Exception:
            pass
        for n in self.nodes:
            if n.wait(ag.PROCESS_EXIT_S) is None:
                log(f"{self.name}: node {n.index} did not exit after quit")
        self.stop()

    def stop(self):
        if self.qmp:
            self.qmp.close()
        for n in self.nodes:
            n.stop()


# Pages node 0 may keep from a save or a restore: those the stream faulted in itself
# (a chunk the fetch had not reached) and a few granted Exclusive.
RELEASE_SLACK_MIB = 16


def resident_mib(guest):
    """Guest RAM each node holds, in MiB, by node id (x-query-aggvm)."""
    nodes = guest.qmp.execute("x-query-aggvm")["nodes"]
    return {n["id"]: n.get("resident-pages", 0) * 4096 >> 20 for n in nodes}


def node0_resident_mib(guest):
    return resident_mib(guest)[0]


def parse_done(results, line):
    if line.startswith("testos: done"):
        results["done"] = dict(w.split("=", 1) for w in line.split()[2:] if "=" in w)


class Run:
    def __init__(self, opts):
        self.opts = opts
        self.hosts = ag.hosts_from_env(HOSTS[opts.scenario])
        self.work = Path(tempfile.mkdtemp(prefix="aggvm-checkpoint-", dir=opts.log_dir))
        self.key = self.work / "cluster.key"
        self.key.write_text(secrets.token_hex(32))
        self.check = ag.linux.Checker()
        self.guests = []
        self.report = {"scenario": opts.scenario, "accel": opts.accel, "log_dir": str(self.work)}

    def guest(self, name, hosts, **kw):
        g = Guest(self.opts, name, hosts, self.work, self.key, **kw)
        self.guests.append(g)
        return g

    def source_until_first_result(self, g):
        """Runs the source until the scenario may act: testos's compute
        reported (the next workload runs), churn began, or Linux's clock
        reported and atomics has run for 2 s (of about 14: see --append)."""
        if self.opts.guest == "linux":
            mark = "aggvm-clock:"
        else:
            mark = "churn running" if self.opts.workload == "churn" else "result workload=compute"
        ok = g.pump(until=mark, timeout=self.opts.timeout)
        self.check.expect(ok, f"{g.name}: no '{mark}' within {self.opts.timeout} s")
        if ok and self.opts.guest == "linux":
            g.pump(timeout=2.0)
        return ok

    def judge(self, guest, before, after, rc, what):
        """Every workload passed, counting the results printed before the
        checkpoint and after the restore, and the guest exited passing."""
        results = dict(before)
        results.update(after)
        check = ag.linux.Checker()
        ag.judge(guest.args, results, rc, check)
        for f in check.failures:
            self.check.expect(False, f"{what}: {f}")
        if self.opts.guest == "linux":
            # The guest's clock goes on from where it stood, not from the
            # destination's start.
            start = ag.linux.as_number(before.get("guest_start", {}), "uptime_s")
            done = ag.linux.as_number(after.get("guest_done", {}), "uptime_s")
            self.check.expect(start is not None and done is not None and done > start,
                              f"{what}: the guest's uptime went from {start} s before the "
                              f"switch to {done} s at the end")
            wanted = list(guest.args.linux_run)
        else:
            wanted = ag.testos.WORKLOADS if self.opts.workload == "all" else [self.opts.workload]
        log(f"{what}: {len([w for w in wanted if w in after])} workloads ended after "
            f"the switch, {len([w for w in wanted if w in before])} before")

    def restore_and_finish(self, name, hosts, path, before, paused=True, **kw):
        g = self.guest(name, hosts, incoming="defer", **kw)
        info, load_s = g.migrate(120, incoming=f"file:{path}")
        if not self.check.expect(info.get("status") == "completed",
                                 f"{name}: restore ended {info.get('status')}: "
                                 f"{info.get('error-desc', '')}"):
            g.stop()
            return g
        status = g.qmp.execute("query-status")
        # A guest checkpointed paused comes back paused; one checkpointed
        # running comes back running (-incoming defer does not start it).
        expect = "paused" if paused else "running"
        self.check.expect(status.get("status") in (expect, "paused"),
                          f"{name}: restored guest is {status.get('status')}, expected {expect}")
        log(f"{name}: loaded in {load_s:.1f} s")
        self.report[f"{name}_load_s"] = round(load_s, 2)
        if kw.get("aggregate", True):
            placed = {v["vcpu"]: v["node"] for v in g.qmp.execute("x-query-aggvm")["vcpus"]}
            self.report[f"{name}_placement"] = placed
            log(f"{name}: vCPUs on nodes {placed}")
        if g.qmp.execute("query-status").get("status") != "running":
            g.qmp.execute("cont")
        if kw.get("aggregate", True):
            # The stream wrote every page on node 0; before the guest ran,
            # what the fetch brought of the other nodes' went home with
            # that data.  Node 0 keeps its own half (NUMA node 0) and what
            # the stream faulted in, not the whole guest.  Read at once: the
            # vCPUs, running now, fault in a few MiB a second at most here.
            mem, held = g.args.mem, node0_resident_mib(g)
            bound = mem // 2 + RELEASE_SLACK_MIB
            log(f"{name}: node 0 holds {held} MiB of the guest's {mem} MiB once it runs")
            self.report[f"{name}_node0_mib"] = held
            self.check.expect(held <= bound,
                              f"{name}: node 0 kept what it fetched for the restore: it holds {held} MiB "
                              f"of {mem} (at most {bound} expected)")
        rc = g.finish(self.opts.timeout)
        self.judge(g, before, g.results, rc, name)
        g.stop()
        return g

    def refused(self, name, path, why):
        """A damaged file: migrate-incoming must fail and say so; no guest runs."""
        g = self.guest(name, self.hosts[:1], aggregate=False, incoming="defer")
        try:
            info, _ = g.migrate(60, incoming=f"file:{path}")
            error = info.get("error-desc", "")
            self.check.expect(info.get("status") == "failed" and error,
                              f"{name} ({why}): restore ended {info.get('status')} "
                              f"with error {error!r}, expected failed with a reason")
            log(f"{name} ({why}): refused: {error}")
            status = g.qmp.execute("query-status")["status"]
            self.check.expect(status != "running", f"{name}: the guest runs after a failed restore")
        finally:
            g.quit()

    # ---- scenarios ------------------------------------------------------

    def restore(self):
        path = self.work / "checkpoint.qemu"
        src = self.guest("source", self.hosts[:2], worker_qmp=True)
        if not self.source_until_first_result(src):
            return
        # Only node 0 saves the guest: a worker's stream would be wrong.
        worker = Qmp(str(self.work / "source-node1.qmp"), timeout=10)
        r = worker.command("migrate", uri=f"file:{self.work / 'from-worker.qemu'}")
        worker.close()
        err = r.get("error", {}).get("desc", "")
        self.check.expect("worker" in err and "node 0" in err,
                          f"migrate on a worker's monitor was not refused as it should: {r}")
        log(f"migrate on node 1's monitor refused: {err}")
        src.qmp.execute("stop")
        held_before = node0_resident_mib(src)
        info, save_s = src.migrate(120, uri=f"file:{path}")
        if not self.check.expect(info.get("status") == "completed",
                                 f"checkpoint ended {info.get('status')}: "
                                 f"{info.get('error-desc', '')}"):
            return
        size = path.stat().st_size
        log(f"checkpoint: {size >> 20} MiB in {save_s:.1f} s")
        # Node 0 fetched every page it lacked for the stream and gave back
        # those homed on the worker once sent (the last chunk as the
        # save's clean-up runs): it ends holding its own half of the guest
        # and what it held before, not the whole guest.
        mem = src.args.mem
        bound = held_before + mem // 2 + RELEASE_SLACK_MIB
        held_after = node0_resident_mib(src)
        deadline = time.monotonic() + 10
        while held_after > bound and time.monotonic() < deadline:
            time.sleep(0.2)
            held_after = node0_resident_mib(src)
        log(f"node 0 holds {held_before} MiB of the guest's {mem} MiB before the checkpoint, "
            f"{held_after} MiB after")
        self.check.expect(held_after <= bound,
                          f"node 0 kept what it fetched for the checkpoint: it held {held_before} MiB "
                          f"of {mem} before, {held_after} MiB after (at most {bound} expected)")
        self.report.update(node0_before_mib=held_before, node0_after_mib=held_after)
        self.report.update(checkpoint_bytes=size, save_s=round(save_s, 2))
        # Paused, with every worker paused too, node 0 read the worker's
        # pages through snapshots (aggvm_dsm_peek()) and dropped them all
        # before the save ended.
        dsm = src.qmp.execute("x-query-aggvm")["dsm"]
        log(f"node 0 took {dsm['peeked-pages']} snapshots of guest pages for the checkpoint, "
            f"holds {dsm['snapshot-pages']} now")
        self.check.expect(dsm["peeked-pages"] > 0 and dsm["snapshot-pages"] == 0,
                          f"node 0 took {dsm['peeked-pages']} snapshots for the checkpoint and holds "
                          f"{dsm['snapshot-pages']} after it (some, then none, expected)")
        before = dict(src.results)
        # The source goes on from where it was saved, and ends exact: a
        # snapshot left mapped on node 0 would show it a page as it was at
        # the checkpoint after a worker's vCPU wrote it again.
        src.qmp.execute("cont")
        rc = src.finish(self.opts.timeout)
        self.judge(src, before, src.results, rc, "source-after-checkpoint")
        src.quit()
        # Three hosts: NUMA node i homed on host i, vCPU 3 on the third host.
        g = self.restore_and_finish("restored-3-hosts", self.hosts[:3], path, before,
                                    cluster={"numa-node-hosts": [0, 1],
                                             "placement": [{"vcpu": 3, "node": 2}]})
        self.check.expect(self.report.get("restored-3-hosts_placement", {}).get(3) == 2,
                          "restored-3-hosts: vCPU 3 is not on node 2")
        self.restore_and_finish("restored-stock", self.hosts[:1], path, before, aggregate=False)
        data = path.read_bytes()
        short = self.work / "truncated.qemu"
        short.write_bytes(data[: len(data) // 2])
        self.refused("truncated", short, "half of the file")
        broken = self.work / "broken.qemu"
        broken.write_bytes(b"\0\0\0\0" + data[4:])
        self.refused("broken-header", broken, "its magic zeroed")
        del g

    def postcopy_refused(self, g):
        """postcopy-ram is refused on an aggregated node 0, source or
        destination, with the reason (its RAM has a userfaultfd already),
        and the precopy that follows is not disturbed."""
        r = g.qmp.command("migrate-set-capabilities",
                          capabilities=[{"capability": "postcopy-ram", "state": True}])
        desc = r.get("error", {}).get("desc", "")
        self.check.expect("error" in r and "aggregated guest" in desc,
                          f"{g.name}: postcopy-ram was not refused as it should be: {r}")
        log(f"{g.name}: postcopy-ram refused: {desc}")

    def live(self, source_hosts, dest_hosts, stock_source=False, dest_port=PORT):
        # With churn (the live scenario's default), every vCPU rewrites and
        # checks its own RAM all through the migration: a page a worker
        # wrote that was not sent again shows up as stale on the
        # destination.
        dest_addr = dest_hosts[0][1]
        uri = f"tcp:{dest_addr}:{MIGRATION_PORT}"
        dst = self.guest("destination", dest_hosts, incoming=uri, port=dest_port)
        # A VM that is to grow onto several hosts runs without what
        # aggregated guests lack (docs/checkpoint.md), or its sections
        # would not load: kvmvapic (it patches guest code as one node sees
        # it) and vmport (it reads a vCPU's registers from a device model).
        src = self.guest("source", source_hosts, aggregate=not stock_source,
                         extra=GROWABLE if stock_source else [])
        if not self.source_until_first_result(src):
            return
        for g in (dst,) if stock_source else (src, dst):
            self.postcopy_refused(g)
        info, total_s = src.migrate(180, uri=uri, **{"downtime-limit": 300})
        if not self.check.expect(info.get("status") == "completed",
                                 f"live migration ended {info.get('status')}: "
                                 f"{info.get('error-desc', '')}"):
            return
        ram = info.get("ram", {})
        log(f"live migration: {total_s:.1f} s, downtime {info.get('downtime')} ms, "
            f"{ram.get('transferred', 0) >> 20} MiB sent, {ram.get('dirty-sync-count')} dirty syncs")
        self.report.update(live_s=round(total_s, 2), downtime_ms=info.get("downtime"),
                           dirty_syncs=ram.get("dirty-sync-count"))
        before = dict(src.results)
        src.quit()
        left = [n.index for n in src.nodes if n.proc.poll() is None]
        self.check.expect(not left, f"the source's nodes {left} still run after quit")
        rc = dst.finish(self.opts.timeout)
        self.judge(dst, before, dst.results, rc, "destination")
        placed = {v["vcpu"]: v["node"] for v in dst.qmp.execute("x-query-aggvm")["vcpus"]} \
            if dst.nodes[0].proc.poll() is None else None
        if placed is not None:
            log(f"destination: vCPUs on nodes {placed}")

    def snapshot_pages(self, g):
        return g.qmp.execute("x-query-aggvm")["dsm"]["snapshot-pages"]

    def resumed_during_save(self, g, path):
        """A checkpoint begun paused (node 0 reads the worker's pages
        through snapshots), the guest resumed in the middle of it: the
        snapshots go before any vCPU runs, what they held is sent again,
        and the save ends as a live one.  Returns query-migrate's end."""
        g.qmp.execute("stop")
        g.qmp.execute("migrate-set-parameters", **{"max-bandwidth": 1 << 20})
        g.qmp.execute("migrate", uri=f"file:{path}")
        time.sleep(1.0)
        status = g.qmp.execute("query-migrate").get("status")
        held = self.snapshot_pages(g)
        self.check.expect(status == "active" and held > 0,
                          f"a paused guest's checkpoint is {status} with {held} snapshots on node 0 "
                          "a second in (active with some expected)")
        g.qmp.execute("cont")
        left = self.snapshot_pages(g)
        log(f"checkpoint begun paused: {held} snapshots on node 0, {left} once resumed")
        self.check.expect(left == 0, f"node 0 holds {left} snapshots after cont (none expected)")
        g.pump(timeout=1.0)
        g.qmp.execute("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        return g.wait_migration(120)

    def periodic(self):
        """Checkpoints the running guest every few seconds without stopping
        it first (migrate to a file while it runs, then cont: the guest
        pauses for the switch-over only), then restores the last one.  The
        last is begun paused and resumed during the save."""
        src = self.guest("source", self.hosts[:2])
        if not self.source_until_first_result(src):
            return
        pauses = []
        for i in range(3):
            src.pump(timeout=2.0)
            path = self.work / f"periodic-{i}.qemu"
            if i == 2:
                info = self.resumed_during_save(src, path)
            else:
                info, _ = src.migrate(120, uri=f"file:{path}")
            if not self.check.expect(info.get("status") == "completed",
                                     f"periodic checkpoint {i} ended {info.get('status')}: "
                                     f"{info.get('error-desc', '')}"):
                return
            t = time.monotonic()
            src.qmp.execute("cont")
            # Paused from the switch-over until cont: the downtime QEMU
            # measured plus the time this script took to resume it.
            pause_ms = info.get("downtime", 0) + (time.monotonic() - t) * 1000
            pauses.append(round(pause_ms, 1))
            log(f"periodic checkpoint {i}: {path.stat().st_size >> 20} MiB, "
                f"{info.get('total-time')} ms in all, the guest paused {pause_ms:.0f} ms")
        self.report.update(periodic_pauses_ms=pauses)
        self.check.expect(src.qmp.execute("query-status")["status"] == "running",
                          "the guest does not run after its periodic checkpoints")
        before = dict(src.results)
        src.quit()
        self.restore_and_finish("restored-last", self.hosts[:2], path, before, paused=False)

    def killed(self):
        path = self.work / "checkpoint.qemu"
        src = self.guest("source", self.hosts[:2])
        if not self.source_until_first_result(src):
            return
        # Live, at 1 MiB/s, while churn rewrites 4 MiB over and over: the
        # stream cannot converge, so the kill lands in the middle of it
        # however fast this host is (a stopped guest of mostly zero pages
        # was written whole in under a second in CI, before the kill).
        src.qmp.execute("migrate-set-parameters", **{"max-bandwidth": 1 << 20})
        src.qmp.execute("migrate", uri=f"file:{path}")     # not waited for: killed during it
        time.sleep(1.0)
        info = src.qmp.execute("query-migrate")
        self.check.expect(info.get("status") == "active",
                          f"the checkpoint is {info.get('status')} before the kill, expected active")
        src.nodes[1].kill(signal.SIGKILL)
        info = src.wait_migration(60)
        self.check.expect(info.get("status") == "failed",
                          f"checkpoint with a killed worker ended {info.get('status')}, "
                          "expected failed")
        log(f"checkpoint with a killed worker: {info.get('status')}: {info.get('error-desc', '')}")
        failed = src.qmp.wait_event("AGGVM_NODE_FAILED", self.opts.peer_timeout_ms / 1000 + 10)
        self.check.expect(failed is not None and failed["data"].get("node") == 1,
                          f"no AGGVM_NODE_FAILED for node 1: {failed}")
        status = src.qmp.execute("query-status")["status"]
        self.check.expect(status != "running", f"the guest runs on after losing node 1 ({status})")
        src.quit()
        if path.exists():
            self.refused("partial", path, "what the failed checkpoint wrote")

    def run(self):
        try:
            if self.opts.scenario == "restore":
                self.restore()
            elif self.opts.scenario == "live":
                self.live(self.hosts[:2], self.hosts[2:4])
            elif self.opts.scenario == "head":
                # Host 1 runs the source's worker and the destination's
                # node 0 side by side (another fabric port) until the
                # switch-over; then host 0, the head, is empty.
                self.live(self.hosts[:2], self.hosts[1:3], dest_port=PORT + 1)
            elif self.opts.scenario == "stockin":
                self.live(self.hosts[:1], self.hosts[1:3], stock_source=True)
            elif self.opts.scenario == "periodic":
                self.periodic()
            elif self.opts.scenario == "killed":
                self.killed()
        except Exception as e:  # a QMP error, a dead process: a failure, said plainly
            self.check.expect(False, f"{type(e).__name__}: {e}")
        finally:
            for g in self.guests:
                g.stop()
        self.report.update(failures=self.check.failures,
                           status="fail" if self.check.failures else "pass")
        if self.check.failures:
            for g in self.guests:
                for n in g.nodes:
                    tail = n.tail()
                    if tail:
                        print(f"--- {g.name} node {n.index} log tail ({n.log_path}):\n{tail}", end="")
        # After the nodes' logs: CI keeps only the end of a failed test's output.
        for f in self.check.failures:
            log(f"FAIL: {f}")
        if self.opts.json:
            Path(self.opts.json).write_text(json.dumps(self.report, indent=2))
        log(f"{self.opts.scenario} {self.opts.accel}: status={self.report['status']}")
        ag.dispose_work(self.work, failed=bool(self.check.failures), asked_for=self.opts.log_dir)
        return 1 if self.check.failures else 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", choices=sorted(HOSTS), required=True)
    p.add_argument("--accel", choices=["kvm", "tcg"], default="tcg")
    p.add_argument("--guest", choices=["testos", "linux"], default="testos")
    p.add_argument("--kernel", required=True, help="testos, or the Linux guest's kernel")
    p.add_argument("--initrd", help="the Linux guest's initramfs")
    p.add_argument("--workload", default=None,
                   help="testos workload (default: live: churn, which rewrites and checks RAM "
                        "all through the migration; else all, acting once compute reported)")
    p.add_argument("--append", default=None,
                   help="testos options (default: with churn, ms=20000)")
    p.add_argument("--mem", type=int, help="guest RAM, MiB (default: testos 256, Linux 1024)")
    p.add_argument("--peer-timeout-ms", type=int, default=5000)
    p.add_argument("--timeout", type=float, default=180)
    p.add_argument("--qemu", default=os.environ.get("AGGVM_QEMU", ""))
    p.add_argument("--harness", default=os.environ.get("AGGVM_HARNESS", ""))
    p.add_argument("--log-dir")
    p.add_argument("--json")
    opts = p.parse_args(argv)
    if opts.workload is None:
        opts.workload = "churn" if opts.scenario in ("live", "head", "periodic", "killed") else "all"
    if opts.append is None:
        if opts.guest == "linux":
            # About 14 s of atomics (1M iterations a thread take 0.7 s here),
            # so that the scenario acts in the middle of it.
            opts.append = "aggvm.atomics=-n,20000000"
        else:
            opts.append = "ms=20000" if opts.workload == "churn" else ""
    if opts.guest == "linux" and not opts.initrd:
        p.error("--guest linux needs --initrd")
    return opts


def main():
    opts = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    rc = ag.start_in_hosts(opts, HOSTS[opts.scenario], __file__, "ck")
    return rc if rc is not None else Run(opts).run()


if __name__ == "__main__":
    sys.exit(main())
