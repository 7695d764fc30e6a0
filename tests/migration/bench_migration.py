#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""`make bench-migration`: how long a vCPU stops when it moves between hosts.

In one run, testos on 2 hosts (one vCPU each) under KVM, then under TCG:
the peer vCPU spins in ring 3 (workload gap) while the host moves it
between node 1 and node 0 as often as it can in the window (at least --moves times)

  host    downtime as the source measured it (AGGVM_VCPU_MIGRATED
          downtime-us): from the vCPU's stop to the destination's word that
          it runs, one message each way included
  guest   the same moves seen from inside the guest: the peer's TSC steps
          longer than 100 us during the run, the largest as many as there
          were moves (the guest's TSC is the cluster clock, so a move shows
          as its downtime; a step can also be the host preempting the vCPU
          thread on these 2 shared cores)

Then the evacuation, in one pair of harness namespaces:

  fabric  the fabric's own bulk throughput between the two namespaces:
          dsm-ucx-floor streams --evac-mib MiB over raw UCP (64 KiB sends),
          over TCP as the DSM (UCX_TLS=tcp)
  evac    testos under TCG on the same 2 hosts, 2 x --evac-mib MiB of RAM
          in 2 NUMA nodes; once the sweep has written and verified all of
          it (node 1 then holds the home copy of every page it homes),
          x-aggvm-evacuate-node empties node 1: bytes node 1 sent over
          the whole evacuation (its vCPU's move, its copies, the home of
          its memory) divided by its duration (AGGVM_NODE_EVACUATED)

The last line is
  vcpu-migration: kvm_downtime_p50_us=A kvm_downtime_p99_us=B tcg_downtime_p50_us=C evac_mib_s=E fabric_mib_s=F evac_ratio=R
with A, B and C the guest's view and R = E / F.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "aggregation"))
sys.path.insert(0, str(HERE.parent / "guest" / "testos"))
import aggvm_guest  # noqa: E402
import ucx_floor_pair  # noqa: E402  (tests/lib, on the path through aggvm_guest)
import run_testos  # noqa: E402


def say(msg):
    print(f"bench-migration: {msg}", flush=True)


def percentile(values, p):
    if not values:
        return 0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def measure(args, accel):
    extra = ["--guest", "testos", "--accel", accel, "--hosts", "2", "--vcpus-per-host", "1",
             "--kernel", args.testos, "--scenario", "migrate", "--moves", str(args.moves),
             "--keep-moving", "--move-interval", "0.05", "--workload", "gap",
             "--append", f"ms={args.window_ms}", "--timeout", "300"]
    rc, report, out = aggvm_guest.run_reported(args.qemu, args.harness, extra, capture=True)
    if rc != 0:
        sys.stdout.write(out)
        raise SystemExit(f"bench-migration: the {accel} run failed (exit {rc})")
    host = report.get("moves", {}).get("downtime_us", [])
    gap = report.get("results", {}).get("gap", {})
    gaps = [int(g) for g in str(gap.get("gaps_us", "none")).split(",") if g.isdigit()]
    guest = sorted(gaps, reverse=True)[:len(host)]
    if len(guest) < len(host):
        say(f"{accel}: the guest saw {len(guest)} stops for {len(host)} moves")
    figures = {
        "host_p50": percentile(host, 50), "host_p99": percentile(host, 99),
        "guest_p50": percentile(guest, 50), "guest_p99": percentile(guest, 99),
        "moves": len(host), "guest_stops": len(gaps),
    }
    say(f"{accel}: {figures['moves']} moves; downtime host p50 {figures['host_p50']} us "
        f"p99 {figures['host_p99']} us; guest p50 {figures['guest_p50']} us "
        f"p99 {figures['guest_p99']} us ({figures['guest_stops']} stops over 100 us in the "
        f"{args.window_ms} ms window)")
    return figures


def fabric_bulk(args):
    """Raw UCP bulk throughput from host 1 to host 0 (the evacuation's direction)."""
    out, err = ucx_floor_pair.run(args.ucx_floor, ["--bulk-mib", str(args.evac_mib)])
    m = re.search(r"mib_s=([0-9.]+)", out)
    if not m:
        raise SystemExit(f"bench-migration: dsm-ucx-floor gave no figure: {out}{err}")
    return float(m.group(1))


def evacuation_inside(args):
    """Under aggvm-harness: the fabric's figure, then the evacuation's, same namespaces."""
    fabric = fabric_bulk(args)
    say(f"fabric: {args.evac_mib} MiB over raw UCP (UCX_TLS=tcp, as the DSM) from host 1 to "
        f"host 0: {fabric:.1f} MiB/s")
    extra = ["--guest", "testos", "--accel", "tcg", "--hosts", "2", "--vcpus-per-host", "1",
             "--kernel", args.testos, "--mem", str(2 * args.evac_mib), "--scenario", "evacuate",
             "--kill-after", "workload=sweep", "--kill-delay", "0", "--append", "ms=2000",
             "--timeout", "400"]
    rc, report, out = aggvm_guest.run_reported(args.qemu, args.harness, extra, capture=True)
    ev = report.get("evacuation", {}).get("evacuated")
    if rc != 0 or not ev:
        sys.stdout.write(out)
        raise SystemExit(f"bench-migration: the evacuation run failed (exit {rc})")
    mib = ev["bytes"] / 2**20
    evac = mib / (ev["duration-ms"] / 1000)
    say(f"evacuation of node 1: {ev['vcpus']} vCPU, {ev['pages']} pages re-homed, "
        f"{mib:.1f} MiB sent in {ev['duration-ms']} ms: {evac:.1f} MiB/s")
    print(f"evacuation: evac_mib_s={evac:.1f} fabric_mib_s={fabric:.1f}", flush=True)


def evacuation(args):
    """Runs evacuation_inside() under a harness of its own; (evac, fabric) MiB/s."""
    cmd = [args.harness, "run", "--hosts", "2", "--name", f"bm{os.getpid() % 100000}", "--",
           sys.executable, __file__, "--evacuation-inside", "--qemu", args.qemu,
           "--harness", args.harness, "--testos", args.testos, "--ucx-floor", args.ucx_floor,
           "--evac-mib", str(args.evac_mib)]
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("bench-migration:"):
            print(line, flush=True)
    m = re.search(r"evacuation: evac_mib_s=([0-9.]+) fabric_mib_s=([0-9.]+)", out.stdout)
    if out.returncode != 0 or not m:
        sys.stdout.write(out.stdout + out.stderr)
        raise SystemExit(f"bench-migration: the evacuation measure failed (exit {out.returncode})")
    say(f"evacuation measured in {time.monotonic() - t0:.0f} s")
    return float(m.group(1)), float(m.group(2))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qemu", required=True)
    p.add_argument("--harness", required=True)
    p.add_argument("--testos", required=True)
    p.add_argument("--moves", type=int, default=20,
                   help="at least this many moves in the guest's window (more if time allows)")
    p.add_argument("--window-ms", type=int, default=8000)
    p.add_argument("--ucx-floor", default=str(HERE.parent.parent / "build" / "tests" / "dsm" /
                                              "dsm-ucx-floor"))
    p.add_argument("--evac-mib", type=int, default=320,
                   help="MiB of RAM the evacuated node homes (and the fabric's transfer)")
    p.add_argument("--evacuation-inside", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.evacuation_inside:
        evacuation_inside(args)
        return
    kvm = None
    if run_testos.kvm_unusable() is None:
        kvm = measure(args, "kvm")
    else:
        say(f"/dev/kvm unusable ({run_testos.kvm_unusable()}): kvm figures print n/a")
    tcg = measure(args, "tcg")
    evac, fabric = evacuation(args)

    def fig(f, key):
        return str(f[key]) if f else "n/a"
    print(f"vcpu-migration: kvm_downtime_p50_us={fig(kvm, 'guest_p50')} "
          f"kvm_downtime_p99_us={fig(kvm, 'guest_p99')} "
          f"tcg_downtime_p50_us={tcg['guest_p50']} evac_mib_s={evac:.1f} "
          f"fabric_mib_s={fabric:.1f} evac_ratio={evac / fabric:.3f}", flush=True)


if __name__ == "__main__":
    main()
