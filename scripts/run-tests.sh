#!/usr/bin/env bash
# Runs meson's tests (one suite, or all of them) and closes with the plain
# line "N passed, N failed, N skipped" that CI reads.  Every skipped test is
# listed with the reason it printed; a skip that gives none counts as a
# failure.  With CI=true every skip is a failure (a missing prerequisite,
# such as /dev/kvm or network namespaces, must not let CI pass untested),
# and the tests themselves fail instead of skipping where they can tell.
set -uo pipefail
build=$1 suite=$2
shift 2

args=(-C "$build" --print-errorlogs --no-rebuild)
[ -n "$suite" ] && args+=(--suite "$suite")
meson test "${args[@]}" "$@"
rc=$?

log="$build/meson-logs/testlog.json"
if [ -f "$log" ]; then
    python3 - "$log" <<'PY'
import json, os, re, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
ci = os.environ.get("CI") == "true"
# Lines in which the tests state why they skip: "SKIP: ...", "skip: ...",
# GoogleTest's "...: Skipped" followed by the message.
reason_re = re.compile(r"\bskip(?:ped)?\b\s*:?\s*(.*)", re.I)
problems = []
failures = []
for line in open(sys.argv[1]):
    test = json.loads(line)
    result = test["result"]
    if result in ("OK", "EXPECTEDFAIL"):
        counts["passed"] += 1
        continue
    if result != "SKIP":
        counts["failed"] += 1
        failures.append(test)
        continue
    counts["skipped"] += 1
    out = (test.get("stdout") or "") + (test.get("stderr") or "")
    lines = out.splitlines()
    reason = ""
    for i, text in enumerate(lines):
        if text.lstrip().startswith("[  SKIPPED ]"):
            continue
        m = reason_re.search(text)
        if m:
            reason = m.group(1).strip()
            if not reason and i + 1 < len(lines):  # GoogleTest: message on the next line
                reason = lines[i + 1].strip()
            if reason:
                break
    print(f"skipped: {test['name']}: {reason or '(no reason given)'}")
    if not reason:
        problems.append(f"{test['name']} skipped without saying why")
    elif ci:
        problems.append(f"{test['name']} skipped under CI=true: {reason}")
    else:
        continue
    counts["skipped"] -= 1  # counted as failed instead
    counts["failed"] += 1
# CI keeps only the end of what it printed: repeat the end of each failed
# test's output here, next to the summary, so that the reason survives.
for test in failures:
    out = ((test.get("stdout") or "") + (test.get("stderr") or "")).splitlines()
    print(f"--- {test['name']} ({test['result']}): the last {min(len(out), 30)} lines of its output")
    for text in out[-30:]:
        print(f"    {text}")
for test in failures:
    print(f"failed: {test['name']} ({test['result']})")
for p in problems:
    print(f"error: {p}")
print(f'tests: {counts["passed"]} passed, {counts["failed"]} failed, {counts["skipped"]} skipped')
sys.exit(1 if problems else 0)
PY
    summary=$?
    [ "$rc" -eq 0 ] && rc=$summary
fi
exit $rc
