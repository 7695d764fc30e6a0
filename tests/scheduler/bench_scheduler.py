#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""`make bench-scheduler`: what the placement scheduler buys a guest.

testos 'share' under KVM on 2 hosts: vCPU 0 and vCPU 1 write the same 64
pages, homed on node 0, in turn.  Three placements, in one run, with the
same QEMU build throughout, alternating, the best of each counting:

  bad        vCPU 1 on node 1, no scheduler: every write of one vCPU takes
             the page from the other host (a DSM fault each)
  scheduled  the same bad start, then node 0's scheduler with goal
             affinity (started 1.5 s into the workload, interval 500 ms)
  best       the best static placement: both vCPUs and all memory on
             node 0 (numa-node-hosts=0,0), found by hand: with two vCPUs
             sharing every page, any split costs a fault per hand-over

Throughput is the guest's writes per 250 ms window over the last 4 s of
an 8 s workload (the scheduler has converged by then); converge_ms is
from x-aggvm-scheduler-set to the scheduler's first move done.  The last
line is
  scheduler: converged_ratio=X bad_ratio=Y converge_ms=T
with X = scheduled / best and Y = bad / best (goal: X >= 0.9).
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "aggregation"))
import aggvm_guest  # noqa: E402

REPEAT = 2
LAST_WINDOWS = 16   # 4 s of 250 ms windows


def say(msg):
    print(f"bench-scheduler: {msg}", flush=True)


def run(args, scenario, extra):
    cmd = ["--guest", "testos", "--accel", "kvm", "--hosts", "2", "--vcpus-per-host", "1",
           "--kernel", args.testos, "--mem", "256", "--workload", "share",
           "--append", "ms=8000 peer=1", "--scenario", scenario, "--timeout", "120"] + extra
    rc, report, output = aggvm_guest.run_reported(args.qemu, args.harness, cmd, capture=True)
    if rc != 0:
        sys.stdout.write(output[-3000:])
        raise SystemExit(f"bench-scheduler: the {scenario} run failed")
    windows = report.get("results", {}).get("share_windows", [])
    if len(windows) < LAST_WINDOWS:
        raise SystemExit(f"bench-scheduler: the guest printed {len(windows)} windows")
    tail = windows[-LAST_WINDOWS:]
    per_window = sum(w["ops"] for w in tail) / len(tail)
    return per_window, report.get("sched", {})


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--qemu", required=True)
    p.add_argument("--harness", required=True)
    p.add_argument("--testos", required=True)
    args = p.parse_args()
    if not Path("/dev/kvm").exists():
        print("bench-scheduler: SKIP: /dev/kvm is missing (testos 'share' runs under KVM)")
        return 77
    best = {"bad": 0.0, "scheduled": 0.0, "best": 0.0}
    converge = []
    for round_ in range(REPEAT):
        for name, scenario, extra in (
                ("bad", "run", []),
                ("scheduled", "sched-affinity", []),
                ("best", "run", ["--cluster-prop", "numa-node-hosts=0",
                                 "--cluster-prop", "numa-node-hosts=0"])):
            ops, sched = run(args, scenario, extra)
            best[name] = max(best[name], ops)
            note = ""
            if "converge_ms" in sched:
                converge.append(sched["converge_ms"])
                note = f", first move {sched['converge_ms']} ms after the scheduler started"
            say(f"round {round_ + 1}: {name:<9} {ops * 4 / 1e6:8.2f} M writes/s{note}")
    ratio = best["scheduled"] / best["best"]
    bad = best["bad"] / best["best"]
    say(f"best of {REPEAT}: bad {best['bad'] * 4 / 1e6:.2f}, scheduled "
        f"{best['scheduled'] * 4 / 1e6:.2f}, best static {best['best'] * 4 / 1e6:.2f} M writes/s")
    print(f"scheduler: converged_ratio={ratio:.2f} bad_ratio={bad:.4f} "
          f"converge_ms={min(converge)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
