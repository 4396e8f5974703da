#!/bin/bash
# usage: pstat.sh OUT ROUNDS SECONDS CLIENTS name=bin ...
out=$1; rounds=$2; secs=$3; clients=$4; shift 4
mkdir -p $out
for i in $(seq 1 $rounds); do
  for nb in "$@"; do
    n=${nb%%=*}; b=${nb#*=}
    perf stat -x, -e 'syscalls:sys_enter_sched_yield,syscalls:sys_enter_futex,context-switches,task-clock,syscalls:sys_enter_fdatasync' -o $out/$n.$clients.$i.perf -- $b bench --dir /work/bench-e2e/dir --clients $clients --seconds $secs --csv $out/$n.$clients.$i.csv > $out/$n.$clients.$i.log 2>&1
  done
done
rm -rf /work/bench-e2e/dir
