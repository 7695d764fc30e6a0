# SPDX-License-Identifier: GPL-2.0-or-later
"""The vCPU placement scheduler on a running aggregated guest.

aggvm_guest.py runs these (--scenario sched-*) once the guest has started;
the guest runs testos 'share': vCPU 0 and vCPU 1 write the same pages,
homed on node 0, and print their writes and slow writes (DSM faults) per
250 ms.  Each scenario steers node 0's scheduler over QMP and checks what
it did; judge() checks the guest's own figures once it has finished.

  sched-affinity     vCPU 1 starts on node 1; with goal affinity the
                     scheduler moves it (or the pages) and the guest's
                     slow-write rate drops at least tenfold
  sched-consolidate  a light guest (duty=) on 3 hosts with goal consolidate
                     and nodes 1 and 2 releasable: both are emptied, leave
                     and exit 0
  sched-makeroom     an operator wants the last node back (draining): it is
                     empty and gone within --deadline, the guest runs on
  sched-health       the last node's health file appears: it is emptied
                     and gone, no other node is touched
  sched-bad          bad goals, weights, intervals and node marks are
                     refused with clear errors; a dry run plans the move
                     and carries out nothing
"""

import time

import qmp_client  # tests/lib, on the path aggvm_guest.py sets

SCENARIOS = ("sched-affinity", "sched-consolidate", "sched-makeroom", "sched-health",
             "sched-bad")
PROCESS_EXIT_S = 20


def log(msg):
    print(f"aggvm-guest: {msg}", flush=True)


def parse_window(line):
    """'testos: share-window t_ms=750 ops=123 slow=4' -> dict, else None."""
    if not line.startswith("testos: share-window "):
        return None
    fields = dict(w.split("=", 1) for w in line.split()[2:] if "=" in w)
    return {k: int(v) for k, v in fields.items()}


def expect_refused(qmp, check, command, cases):
    return qmp_client.expect_refused(qmp, check, command, cases, say=log)


def describe(action):
    what = {"move-vcpu": f"vCPU {action.get('vcpu')}",
            "move-home": f"home of [{action.get('gpa', 0):#x}, +{action.get('size', 0) >> 20} MiB)",
            "release": f"node {action['from']}"}[action["kind"]]
    end = f" ({action['error']})" if action.get("error") else ""
    return (f"{action['kind']} {what} {action['from']} -> {action['to']}: {action['status']}{end}"
            f" -- {action['reason']}")


def wait_actions(qmp, until, timeout):
    """AGGVM_SCHEDULER_ACTION events, logged, until until(actions) or timeout."""
    actions = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(actions):
        event = qmp.take_event("AGGVM_SCHEDULER_ACTION", 0.5)
        if event:
            action = event["data"]["action"]
            log(f"scheduler: {describe(action)} in {event['data']['duration-ms']} ms")
            actions.append(action)
    return actions


def wait_left(qmp, nodes, victims, timeout):
    """Seconds until every node in victims is 'left', or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        event = qmp.take_event("AGGVM_SCHEDULER_ACTION", 0.25)
        if event:
            log(f"scheduler: {describe(event['data']['action'])} in "
                f"{event['data']['duration-ms']} ms")
        states = {n["id"]: n["state"] for n in qmp.execute("x-query-aggvm")["nodes"]}
        if all(states.get(v) == "left" for v in victims):
            return time.monotonic() - t0
    return None


def check_released(qmp, nodes, victims, check):
    """Each released node exited 0, holds no vCPU, and the others are still there."""
    for v in victims:
        rc = nodes[v].wait(PROCESS_EXIT_S)
        check.expect(rc == 0, f"node {v} exited with {rc} after it was released, expected 0")
    info = qmp.execute("x-query-aggvm")
    still = [c["vcpu"] for c in info["vcpus"] if c["node"] in victims]
    check.expect(not still, f"vCPUs {still} still placed on nodes {victims}")
    for n in info["nodes"]:
        if n["id"] not in victims and n["id"] != 0:
            check.expect(n["state"] == "connected", f"node {n['id']} is {n['state']}: only "
                         f"nodes {victims} were to leave")
    return info


def affinity(args, nodes, qmp, check, report):
    # Let the bad placement show in the guest's first windows.
    time.sleep(args.sched_delay)
    t0 = time.monotonic()
    log("x-aggvm-scheduler-set goals=affinity interval-ms=500")
    qmp.execute("x-aggvm-scheduler-set", goals="affinity", **{"interval-ms": 500})
    report["sched_enabled_s"] = t0 - report["t0"]

    def converged(actions):
        return any(a["status"] == "done" for a in actions)
    actions = wait_actions(qmp, converged, 30)
    done = [a for a in actions if a["status"] == "done"]
    if not check.expect(done, "the scheduler moved nothing within 30 s"):
        return
    first = done[0]
    report["converge_ms"] = round((time.monotonic() - t0) * 1000)
    check.expect((first["kind"] == "move-vcpu" and first["vcpu"] == 1 and first["to"] == 0)
                 or (first["kind"] == "move-home" and first["to"] == 1),
                 f"the first move neither brings vCPU 1 to node 0 nor its memory to node 1: "
                 f"{describe(first)}")
    sched = qmp.execute("x-query-aggvm")["scheduler"]
    log(f"scheduler: goals {sched['goals']}, {sched['plans']} plans, {sched['actions-done']} "
        f"actions, cost {sched.get('cost-us', 0):.0f} -> {sched.get('cost-after-us', 0):.0f} us")
    check.expect(sched["actions-done"] >= 1 and sched["goals"] == "affinity=1",
                 f"x-query-aggvm's scheduler: {sched}")


def consolidate(args, nodes, qmp, check, report):
    victims = list(range(1, args.hosts))
    for v in victims:
        qmp.execute("x-aggvm-node-set", node=v, releasable=True)
    log(f"nodes {victims} releasable; x-aggvm-scheduler-set goals=consolidate interval-ms=500")
    qmp.execute("x-aggvm-scheduler-set", goals="consolidate", **{"interval-ms": 500})
    took = wait_left(qmp, nodes, victims, args.deadline)
    if not check.expect(took is not None, f"nodes {victims} were not released within "
                        f"{args.deadline:.0f} s"):
        return
    log(f"nodes {victims} released {took:.1f} s after consolidate began")
    report["released_s"] = round(took, 2)
    info = check_released(qmp, nodes, victims, check)
    check.expect(all(c["node"] == 0 for c in info["vcpus"]), "vCPUs are not all on node 0")


def expect_emptied(args, nodes, qmp, check, report, victim, since):
    """@victim, asked to go @since, must be empty and gone within the deadline."""
    took = wait_left(qmp, nodes, [victim], args.deadline)
    if check.expect(took is not None, f"node {victim} was not emptied within the deadline "
                    f"of {args.deadline:.0f} s after {since}"):
        log(f"node {victim} empty and gone {took:.1f} s after {since}")
        report["emptied_s"] = round(took, 2)
        check_released(qmp, nodes, [victim], check)


def make_room(args, nodes, qmp, check, report):
    victim = args.hosts - 1
    log(f"x-aggvm-node-set node={victim} draining=true (deadline {args.deadline:.0f} s)")
    qmp.execute("x-aggvm-node-set", node=victim, draining=True)
    expect_emptied(args, nodes, qmp, check, report, victim, "it was asked for")


def health(args, nodes, qmp, check, report):
    victim = args.hosts - 1
    flag = args.health_dir / f"node{victim}.failing"
    log(f"node {victim}'s health file {flag} appears")
    flag.write_text("fan failure\n")
    expect_emptied(args, nodes, qmp, check, report, victim, "its health file appeared")


def bad_input(args, nodes, qmp, check, report):
    expect_refused(qmp, check, "x-aggvm-scheduler-set", [
        ({"goals": "affinity,speed"}, "unknown goal 'speed'"),
        ({"goals": "affinity=500"}, "outside 0..100"),
        ({"interval-ms": 0}, "interval-ms must be 100 to 3600000, not 0"),
        ({"interval-ms": 3000000000}, "interval-ms must be 100 to 3600000"),
        ({"fill": 2.0}, "fill"),
        ({"budget": 1000}, "budget must be at most 64"),
    ])
    expect_refused(qmp, check, "x-aggvm-node-set", [
        ({"node": 0, "releasable": True}, "holds the devices"),
        ({"node": 0, "draining": True}, "holds the devices"),
        ({"node": 0, "failing": True}, "holds the devices"),
        ({"node": 9, "failing": True}, "There is no node 9"),
    ])
    info = qmp.execute("x-query-aggvm")
    check.expect("scheduler" not in info, "a refused request started the scheduler")
    # A dry run: the plan is made and shown, nothing moves.
    qmp.execute("x-aggvm-scheduler-set", goals="affinity", **{"interval-ms": 300,
                                                               "dry-run": True})
    deadline = time.monotonic() + 15
    sched = {}
    while time.monotonic() < deadline:
        sched = qmp.execute("x-query-aggvm")["scheduler"]
        if sched.get("last-plan"):
            break
        time.sleep(0.2)
    plan = sched.get("last-plan", [])
    for a in plan:
        log(f"dry run: {describe(a)}")
    check.expect(plan and all(a["status"] == "planned" for a in plan),
                 f"the dry run planned nothing, or carried something out: {sched}")
    check.expect(sched.get("actions-done") == 0 and sched.get("dry-run"),
                 f"the dry run carried out {sched.get('actions-done')} actions")
    placed = {v["vcpu"]: v["node"] for v in qmp.execute("x-query-aggvm")["vcpus"]}
    check.expect(placed == {v: v // args.vcpus_per_host for v in range(args.vcpus)},
                 f"a dry run moved vCPUs: {placed}")
    report["dry_run_plan"] = plan
    # Goals and parameters changed while it runs: shown at once, applied
    # before the next plan; a refused change leaves them as they were.
    qmp.execute("x-aggvm-scheduler-set", goals="balance=0.5,affinity", budget=3)
    expect_refused(qmp, check, "x-aggvm-scheduler-set", [
        ({"goals": "consolidate", "fill": 0}, "fill")])
    sched = qmp.execute("x-query-aggvm")["scheduler"]
    check.expect(sched["goals"] == "affinity=1,balance=0.5" and sched["budget"] == 3,
                 f"the scheduler shows goals {sched['goals']} budget {sched['budget']}, "
                 "expected affinity=1,balance=0.5 and 3")
    plans = sched["plans"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sched["plans"] < plans + 2:
        time.sleep(0.2)
        sched = qmp.execute("x-query-aggvm")["scheduler"]
    check.expect(sched["plans"] >= plans + 2 and "last-error" not in sched,
                 f"no plan after the change, or an error: {sched}")


RUN = {"sched-affinity": affinity, "sched-consolidate": consolidate,
       "sched-makeroom": make_room, "sched-health": health, "sched-bad": bad_input}


def run(args, nodes, qmp, check, report):
    RUN[args.scenario](args, nodes, qmp, check, report)


def judge(args, results, report, check):
    """The guest's own figures: the slow-write rate before and after."""
    windows = results.get("share_windows", [])
    report["share_windows"] = windows
    if args.scenario != "sched-affinity" or not check.expect(
            len(windows) >= 12, f"the guest printed {len(windows)} share windows, expected 12+"):
        return
    enabled_ms = 1000 * report.get("sched_enabled_s", 0)
    before = windows[:4]     # the scheduler starts --sched-delay (1.5 s) in
    after = windows[-6:]

    def mean(ws, key):
        return sum(w[key] for w in ws) / len(ws)
    slow_before, slow_after = mean(before, "slow"), mean(after, "slow")
    ops_before, ops_after = mean(before, "ops"), mean(after, "ops")
    # The remote-fault rate: the share of writes that waited on the fabric.
    rate_before = slow_before / max(ops_before, 1)
    rate_after = slow_after / max(ops_after, 1)
    drop = rate_before / max(rate_after, 1e-9)
    log(f"guest: {100 * rate_before:.3f}% of writes slow (over 50 us) before the scheduler, "
        f"{100 * rate_after:.5f}% after: {drop:.0f}x fewer; per 250 ms {slow_before:.0f} -> "
        f"{slow_after:.0f} slow writes, {ops_before:.0f} -> {ops_after:.0f} writes "
        f"(scheduler on {enabled_ms:.0f} ms after the script started)")
    report.update(slow_before=slow_before, slow_after=slow_after, ops_before=ops_before,
                  ops_after=ops_after, remote_fault_rate_drop=round(drop, 1),
                  throughput_gain=round(ops_after / max(ops_before, 1), 1))
    check.expect(slow_before >= 500, f"only {slow_before:.0f} slow writes per 250 ms before: "
                 "the placement was not bad, the test shows nothing")
    check.expect(drop >= 10, f"the remote-fault rate dropped {drop:.1f}x, expected 10x or more")
