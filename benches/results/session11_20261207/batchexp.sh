#!/bin/bash
# usage: batchexp.sh <label> <mode: none|clients|all> [bench args]
label=$1; mode=$2; shift 2
rm -rf /work/e2e/d
/work/main/target/release/tandem bench --dir /work/e2e/d --clients 64 --seconds 6 "$@" > /tmp/bx_$label.log 2>&1 &
BPID=$!
sleep 0.5
PID=$(pgrep -f "tandem bench --dir /work/e2e/d" | head -1)
if [ "$mode" != none ]; then
  for i in $(seq 1 15); do
  for t in /proc/$PID/task/*; do
    tid=$(basename $t); comm=$(cat $t/comm 2>/dev/null)
    if [ "$mode" = all ] || [ "$comm" = tandem ]; then chrt -b -p 0 $tid 2>/dev/null; fi
  done
  sleep 0.2
  done
fi
wait $BPID
echo "$label $mode: $(grep -E '^ +64 ' /tmp/bx_$label.log)"
