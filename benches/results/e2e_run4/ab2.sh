#!/bin/bash
# usage: ab2.sh OUTDIR PAIRS SECONDS CLIENTS bin... — alternate runs of tandem bench over several binaries
out=$1; pairs=$2; secs=$3; clients=$4; shift 4
mkdir -p $out
for i in $(seq 1 $pairs); do
  k=0
  for bin in "$@"; do
    k=$((k+1))
    $bin bench --dir /work/bench-e2e/dir --clients $clients --seconds $secs --csv $out/v${k}_$i.csv > $out/v${k}_$i.log 2>&1
  done
done
rm -rf /work/bench-e2e/dir
echo done
