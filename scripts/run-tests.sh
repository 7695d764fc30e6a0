#!/usr/bin/env bash
# Runs meson's tests (one suite, or all of them) and closes with the plain
# line "N passed, N failed, N skipped" that CI reads.
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
import json, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
for line in open(sys.argv[1]):
    result = json.loads(line)["result"]
    if result in ("OK", "EXPECTEDFAIL"):
        counts["passed"] += 1
    elif result == "SKIP":
        counts["skipped"] += 1
    else:
        counts["failed"] += 1
print(f'tests: {counts["passed"]} passed, {counts["failed"]} failed, {counts["skipped"]} skipped')
PY
fi
exit $rc
