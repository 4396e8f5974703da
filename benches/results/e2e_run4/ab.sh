#!/bin/bash
# usage: ab.sh OUTDIR PAIRS binA binB  — alternate runs of tandem bench
out=$1; pairs=$2; A=$3; B=$4
mkdir -p $out
for i in $(seq 1 $pairs); do
  for v in A B; do
    bin=$A; [ $v = B ] && bin=$B
    $bin bench --dir /work/bench-e2e/dir --clients 1,4,16,64 --seconds 5 --csv $out/$v$i.csv > $out/$v$i.log 2>&1
  done
done
rm -rf /work/bench-e2e/dir
echo done
