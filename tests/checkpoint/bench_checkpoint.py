#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""`make bench-checkpoint`: how fast an aggregated guest is saved and
restored, against the same guest in one stock QEMU, and how long a live
migration of the whole guest stops it.

In one run, in one pair of harness namespaces, on the same disk:

  aggregated  testos under TCG on 2 hosts, --mem MiB in 2 NUMA nodes (one
              homed on each host); the sweep workload writes every page
              (each vCPU a stripe, so half the pages were last written on
              the worker), then QMP stop and migrate to a file on node 0,
              which pulls the worker's pages over the fabric
  stock       that file restored into one stock QEMU process (the same
              machine, no aggregation), then saved again from it to a
              file: the same guest's RAM, written from one process
  restore     the aggregated file restored into 2 hosts again, until the
              guest runs (migrate-incoming, then cont: node 0 sends the
              worker its vCPUs and the pages its fetch brought)
  floor       the disk: the same number of bytes written by this script,
              1 MiB at a time, as QEMU writes (page cache, no fsync)

Then tests/checkpoint/checkpoint_guest.py --scenario live (KVM when
/dev/kvm is usable, else TCG): testos churn on 2 hosts migrated live over
TCP to 2 other hosts; its downtime as the source's query-migrate reports.

The last line is
  checkpoint: save_ratio=X restore_ratio=Y live_downtime_ms=D
with X = stock save time / aggregated save time (throughput ratio, goal
>= 0.7), each save's time as QEMU's query-migrate total-time gives it,
and Y the same for restore, as this script timed it (an incoming
migration has no total-time), cont included on both sides.
"""

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import checkpoint_guest as cg  # noqa: E402
from checkpoint_guest import Guest, ag  # noqa: E402


UNLIMITED = 1 << 40     # bytes/s


def say(msg):
    print(f"bench-checkpoint: {msg}", flush=True)


def mib_s(nbytes, seconds):
    return nbytes / (1 << 20) / seconds if seconds > 0 else 0.0


def timed_migration(guest, what, **kw):
    """Runs one migrate or migrate-incoming to completion; its seconds as
    this script waited for them, and QEMU's own total-time of a save (None
    for a restore, whose query-migrate has none).  QEMU's default cap
    (128 MiB/s) would measure itself: it is lifted, as libvirt does for
    virsh save.  The disk is synced first, so that the previous file's
    write-back does not slow this one down (stock's save follows a restore
    and the aggregated save's file)."""
    os.sync()
    warm_memory()
    info, seconds = guest.migrate(600, **kw, **{"max-bandwidth": UNLIMITED})
    if info.get("status") != "completed":
        raise SystemExit(f"bench-checkpoint: {what} ended {info.get('status')}: "
                         f"{info.get('error-desc', '')}")
    total_ms = info.get("total-time")
    return seconds, (total_ms / 1000 if total_ms is not None else None)


def timed_cont(guest):
    """Seconds `cont` takes on a restored guest: an aggregated node 0 sends
    the workers their vCPUs and what its fetch brought home first."""
    t = time.monotonic()
    guest.qmp.execute("cont")
    return time.monotonic() - t


def cpu_used(guest, fn):
    """Runs fn(); returns its result and the CPU seconds each of the
    guest's processes (node 0 first) used meanwhile."""
    before = [ag.cpu_seconds(n.proc.pid) for n in guest.nodes]
    result = fn()
    return result, [ag.cpu_seconds(n.proc.pid) - b for n, b in zip(guest.nodes, before)]


# This virtual machine gives the memory it frees back to its hypervisor
# (virtio-balloon free page reporting), and the first touch of such memory
# costs a fault in the hypervisor: writing 1 GiB into freshly allocated
# page cache or guest pages then takes 2-3 s instead of 0.3 s.  Whichever
# save happens to get such memory loses, and the first save of a round
# does more often (the stock one follows processes that just freed
# theirs).  So before each save, and the disk floor, this script touches
# and frees as much memory as a save allocates, so that each finds warm
# free memory: the same conditions for both, as on a real host.
WARM_BYTES = 2 << 30


def warm_memory():
    block = b"\x01" * WARM_BYTES
    del block


def disk_floor(path, nbytes):
    """Seconds to write nbytes to path, 1 MiB at a time (page cache)."""
    warm_memory()
    chunk = os.urandom(1 << 20)
    t = time.monotonic()
    with open(path, "wb") as f:
        for _ in range(max(1, nbytes >> 20)):
            f.write(chunk)
    seconds = time.monotonic() - t
    path.unlink()
    return seconds


def save_restore(args):
    hosts = ag.hosts_from_env(2)
    work = Path(tempfile.mkdtemp(prefix="aggvm-bench-checkpoint-", dir=args.work_dir))
    key = work / "cluster.key"
    key.write_text(secrets.token_hex(32))
    opts = cg.parse_args(["--scenario", "restore", "--accel", "tcg", "--kernel", args.testos,
                          "--workload", "sweep", "--append", "hold=1", "--mem", str(args.mem),
                          "--qemu", args.qemu, "--timeout", "600"])
    agg_file, stock_file = work / "aggregated.qemu", work / "stock.qemu"
    figures = {}

    g = Guest(opts, "aggregated", hosts, work, key)
    try:
        if not g.pump(until="testos: holding", timeout=600):
            raise SystemExit("bench-checkpoint: the sweep did not finish")
        resident = cg.resident_mib(g)
        say(f"aggregated guest: {args.mem} MiB, resident MiB per node {resident}")
        g.qmp.execute("stop")
        (figures["save_agg"], figures["save_agg_qemu"]), cpu = cpu_used(g, lambda: timed_migration(
            g, "the aggregated checkpoint", uri=f"file:{agg_file}"))
        figures["save_agg_cpu0"], figures["save_agg_cpu_workers"] = cpu[0], sum(cpu[1:])
        # What node 0 holds once the save is done: its share, plus what its
        # fetch has not given back (patch 0042), not the whole guest.
        # The last chunk goes as the save's clean-up runs: until the figure settles.
        after, deadline = cg.node0_resident_mib(g), time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = cg.node0_resident_mib(g)
            if now == after:
                break
            after = now
        figures["node0_before_mib"], figures["node0_after_mib"] = resident[0], after
    finally:
        g.quit()
    size = agg_file.stat().st_size

    g = Guest(opts, "stock", hosts[:1], work, key, aggregate=False, incoming="defer")
    try:
        figures["restore_stock"], _ = timed_migration(g, "the stock restore",
                                                      incoming=f"file:{agg_file}")
        (figures["save_stock"], figures["save_stock_qemu"]), cpu = cpu_used(g, lambda: timed_migration(
            g, "the stock checkpoint", uri=f"file:{stock_file}"))
        figures["save_stock_cpu"] = cpu[0]
        # Restored means running: the stock guest's cont, once its save is
        # done (a running guest would have made that save a live one).
        figures["restore_stock"] += timed_cont(g)
    finally:
        g.quit()

    g = Guest(opts, "aggregated-restore", hosts, work, key, incoming="defer")
    try:
        figures["restore_agg_load"], _ = timed_migration(g, "the aggregated restore",
                                                         incoming=f"file:{agg_file}")
        figures["restore_agg_cont"] = timed_cont(g)
        figures["restore_agg"] = figures["restore_agg_load"] + figures["restore_agg_cont"]
        figures["node0_restored_mib"] = cg.node0_resident_mib(g)
    finally:
        g.quit()

    figures["floor"] = disk_floor(work / "floor.bin", size)
    for p in (agg_file, stock_file):
        p.unlink(missing_ok=True)
    figures["bytes"] = size
    Path(args.json).write_text(json.dumps(figures))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qemu", required=True)
    p.add_argument("--harness", required=True)
    p.add_argument("--testos", required=True)
    p.add_argument("--mem", type=int, default=1024, help="guest RAM, MiB")
    p.add_argument("--rounds", type=int, default=3, help="save/restore rounds, each with new guests")
    p.add_argument("--work-dir", default=None, help="where the checkpoint files go")
    p.add_argument("--json", help=argparse.SUPPRESS)   # the inner run's figures
    args = p.parse_args()
    os.environ["AGGVM_QEMU"] = args.qemu
    if "AGGVM_HOST0_NETNS" in os.environ:
        return save_restore(args)

    say(f"save and restore: testos sweep over {args.mem} MiB on 2 hosts (TCG), "
        f"then the same guest in one stock QEMU; {args.rounds} rounds, each with new guests")
    rounds = []
    for r in range(1, args.rounds + 1):
        fd, path = tempfile.mkstemp(prefix="aggvm-bench-checkpoint-", suffix=".json")
        os.close(fd)
        rc = subprocess.call([args.harness, "run", "--hosts", "2", "--name", f"bc{os.getpid() % 100000}",
                              "--", sys.executable, __file__, "--json", path] + sys.argv[1:])
        text = Path(path).read_text()
        os.unlink(path)
        if rc != 0 or not text:
            say(f"save and restore failed (exit {rc})")
            return 1
        f = json.loads(text)
        rounds.append(f)
        say(f"round {r}: save aggregated {f['save_agg_qemu']:5.2f} s (waited {f['save_agg']:5.2f}, "
            f"CPU {f['save_agg_cpu0']:.2f} + {f['save_agg_cpu_workers']:.2f} s)"
            f" | stock {f['save_stock_qemu']:5.2f} s (waited {f['save_stock']:5.2f}, "
            f"CPU {f['save_stock_cpu']:.2f} s)"
            f" || restore aggregated {f['restore_agg']:5.2f} s (cont {f['restore_agg_cont']:4.2f})"
            f" | stock {f['restore_stock']:5.2f} s"
            f" || disk floor {mib_s(f['bytes'], f['floor']):6.0f} MiB/s"
            f" || node 0 holds {f['node0_before_mib']} MiB before the save, {f['node0_after_mib']} after,"
            f" {f['node0_restored_mib']} once restored")
    # Stock's own save time varies two-fold from run to run on this
    # machine: the medians of the rounds are compared.
    f = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    mib = f["bytes"] / (1 << 20)
    say(f"checkpoint file: {mib:.0f} MiB; medians of {len(rounds)} rounds, save times as QEMU's "
        "query-migrate total-time gives them:")
    say(f"save     aggregated (2 hosts) {f['save_agg_qemu']:6.2f} s "
        f"{mib_s(f['bytes'], f['save_agg_qemu']):7.1f} MiB/s"
        f" | stock {f['save_stock_qemu']:6.2f} s {mib_s(f['bytes'], f['save_stock_qemu']):7.1f} MiB/s"
        f" | disk floor {mib_s(f['bytes'], f['floor']):7.1f} MiB/s")
    # Both "hosts" share this machine's 2 cores: the worker's CPU is taken
    # from node 0's, which on a real cluster it would not be.
    say(f"CPU used by the save: aggregated node 0 {f['save_agg_cpu0']:.2f} s + worker "
        f"{f['save_agg_cpu_workers']:.2f} s | stock {f['save_stock_cpu']:.2f} s "
        "(the 2 hosts share this machine's 2 cores)")
    say(f"node 0's resident guest RAM: {f['node0_before_mib']:.0f} MiB before the save, "
        f"{f['node0_after_mib']:.0f} MiB after (of {args.mem}; the fetch gives back what the stream sent)")
    say(f"restore, until the guest runs: aggregated (2 hosts) {f['restore_agg']:6.2f} s "
        f"{mib_s(f['bytes'], f['restore_agg']):7.1f} MiB/s (of it cont {f['restore_agg_cont']:.2f} s: "
        f"the fetched pages go home)"
        f" | stock {f['restore_stock']:6.2f} s {mib_s(f['bytes'], f['restore_stock']):7.1f} MiB/s")
    say(f"node 0's resident guest RAM once the restored guest runs: {f['node0_restored_mib']:.0f} MiB "
        f"of {args.mem}")

    accel = "kvm" if not ag.testos.kvm_unusable() else "tcg"
    fd, live_json = tempfile.mkstemp(prefix="aggvm-bench-live-", suffix=".json")
    os.close(fd)
    say(f"live migration: testos churn on 2 hosts ({accel}) to 2 other hosts over TCP")
    env = dict(os.environ, AGGVM_HARNESS=args.harness)
    rc = subprocess.call([sys.executable, str(HERE / "checkpoint_guest.py"), "--scenario", "live",
                          "--accel", accel, "--kernel", args.testos, "--qemu", args.qemu,
                          "--harness", args.harness, "--json", live_json], env=env,
                         stdout=subprocess.DEVNULL)
    live = json.loads(Path(live_json).read_text() or "{}")
    os.unlink(live_json)
    if rc != 0 or live.get("downtime_ms") is None:
        say(f"live migration failed (exit {rc}): {live.get('failures')}")
        return 1
    say(f"live migration: {live['live_s']} s in all, downtime {live['downtime_ms']} ms, "
        f"{live['dirty_syncs']} dirty syncs")
    # The save ratio is QEMU's own total-time of each save: the seconds this
    # script waits include its polling of query-migrate (up to 0.2 s a
    # poll), which would bring both sides closer together than they are.
    # A restore has no total-time: the waits are compared.
    print(f"checkpoint: save_ratio={f['save_stock_qemu'] / f['save_agg_qemu']:.2f} "
          f"restore_ratio={f['restore_stock'] / f['restore_agg']:.2f} "
          f"live_downtime_ms={live['downtime_ms']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
