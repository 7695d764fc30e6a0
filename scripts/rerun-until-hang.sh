#!/usr/bin/env bash
# Reruns one aggregated failure scenario until node 0 stops answering QMP,
# then saves node 0's threads (gdb): once node 0 has reported a failed node
# but, 8 s later, has not answered query-status.  For chasing
# a rare hang of the failure path, e.g. aggregated-worker-killed:
#
#   scripts/rerun-until-hang.sh 20 --hosts 3 --vcpus-per-host 1 --scenario kill \
#       --peer-timeout-ms 3000
#
# Arguments after the count go to tests/aggregation/aggvm_guest.py (testos
# under TCG).  Output: /tmp/rerun-N.log, and /tmp/rerun-hang-gdb.txt on a hang.
set -u
cd "$(dirname "$0")/.."
runs=${1:?usage: $0 RUNS [aggvm_guest.py arguments...]}
shift
build=${BUILD:-build}
rm -f /tmp/rerun-hang-gdb.txt
for i in $(seq 1 "$runs"); do
  log=/tmp/rerun-$i.log
  AGGVM_QEMU=$build/qemu-patches/qemu-system-x86_64 AGGVM_HARNESS=$build/tests/harness/aggvm-harness \
    timeout 200 python3 tests/aggregation/aggvm_guest.py --guest testos --accel tcg \
      --kernel "$build/tests/guest/testos/testos" --timeout 120 "$@" > "$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    # The driver prints node 0's status soon after the event when node 0
    # answers; its FAIL lines come only once it has killed every node.
    if grep -q "event AGGVM_NODE_FAILED" "$log" && sleep 8 && ! grep -q "node 0 status:" "$log" \
        && kill -0 "$pid" 2>/dev/null; then
      q=$(pgrep -f "qemu-system-x86_64.*aggvm-cluster.*node=0" | head -1)
      echo "run $i: node 0 (pid ${q:-?}) stopped answering QMP; threads in /tmp/rerun-hang-gdb.txt"
      [ -n "$q" ] && gdb -p "$q" -batch -ex "thread apply all bt 30" > /tmp/rerun-hang-gdb.txt 2>&1
      break
    fi
  done
  wait "$pid"
  rc=$?
  echo "run $i: exit $rc ($log)"
  if [ -s /tmp/rerun-hang-gdb.txt ]; then exit 1; fi
done
