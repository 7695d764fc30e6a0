#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""`make bench-migration`: how long a vCPU stops when it moves between hosts.

In one run, testos on 2 hosts (one vCPU each) under KVM, then under TCG:
the peer vCPU spins in ring 3 (workload gap) while the host moves it
between node 1 and node 0 --moves times with x-aggvm-migrate-vcpu.

  host    downtime as the source measured it (AGGVM_VCPU_MIGRATED
          downtime-us): from the vCPU's stop to the destination's word that
          it runs, one message each way included
  guest   the same moves seen from inside the guest: the peer's TSC steps
          longer than 100 us during the run, the largest as many as there
          were moves (the guest's TSC is the cluster clock, so a move shows
          as its downtime; a step can also be the host preempting the vCPU
          thread on these 2 shared cores)

Evacuating a host is not implemented yet: evac_mib_s, fabric_mib_s and
evac_ratio print n/a.  The last line is
  vcpu-migration: kvm_downtime_p50_us=A kvm_downtime_p99_us=B tcg_downtime_p50_us=C evac_mib_s=E fabric_mib_s=F evac_ratio=R
with A, B and C the guest's view.
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "aggregation"))
sys.path.insert(0, str(HERE.parent / "guest" / "testos"))
import aggvm_guest  # noqa: E402
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
             "--move-interval", "0.05", "--workload", "gap",
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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qemu", required=True)
    p.add_argument("--harness", required=True)
    p.add_argument("--testos", required=True)
    p.add_argument("--moves", type=int, default=40)
    p.add_argument("--window-ms", type=int, default=8000)
    args = p.parse_args()
    kvm = None
    if run_testos.kvm_unusable() is None:
        kvm = measure(args, "kvm")
    else:
        say(f"/dev/kvm unusable ({run_testos.kvm_unusable()}): kvm figures print n/a")
    tcg = measure(args, "tcg")

    def fig(f, key):
        return str(f[key]) if f else "n/a"
    print(f"vcpu-migration: kvm_downtime_p50_us={fig(kvm, 'guest_p50')} "
          f"kvm_downtime_p99_us={fig(kvm, 'guest_p99')} "
          f"tcg_downtime_p50_us={tcg['guest_p50']} evac_mib_s=n/a fabric_mib_s=n/a "
          f"evac_ratio=n/a", flush=True)


if __name__ == "__main__":
    main()
