#!/bin/bash
# usage: perthread.sh <label> <extra bench args...>
label=$1; shift
rm -rf /work/e2e/d
/work/main/target/release/tandem bench --dir /work/e2e/d --clients 64 --seconds 9 "$@" > /tmp/pt_$label.bench 2>&1 &
sleep 4
PID=$(pgrep -f "tandem bench --dir /work/e2e/d" | head -1)
perf stat --per-thread -e task-clock,context-switches -p $PID -- sleep 3 2> /tmp/pt_$label.perf
wait
python3 - "$label" <<'PY'
import re,collections,sys
label=sys.argv[1]
cpu=collections.defaultdict(float); cs=collections.defaultdict(int); n=collections.Counter()
for line in open(f'/tmp/pt_{label}.perf'):
    m=re.match(r'\s*(\S+)-(\d+)\s+([\d.,]+)\s+msec\s+task-clock',line)
    if m:
        name=re.sub(r'\d+$','#',m.group(1)); cpu[name]+=float(m.group(3).replace(',','')); n[name]+=1; continue
    m=re.match(r'\s*(\S+)-(\d+)\s+([\d,]+)\s+context-switches',line)
    if m:
        name=re.sub(r'\d+$','#',m.group(1)); cs[name]+=int(m.group(3).replace(',',''))
b=open(f'/tmp/pt_{label}.bench').read()
m=re.search(r'^\s+64\s+(\d+)\s',b,re.M); wps=int(m.group(1)); writes=wps*3
tot=sum(cpu.values())
print(f"== {label}: {wps} writes/s over the run; per-thread CPU over 3 s inside it (~{writes} writes)")
for k,v in sorted(cpu.items(), key=lambda x:-x[1]):
    print(f"{k:20} threads {n[k]:3}  cpu {v:7.0f} ms {100*v/tot:5.1f}%  {1000*v/writes:5.1f} us/write  cs/write {cs[k]/writes:5.2f}")
print(f"total {tot:.0f} ms = {1000*tot/writes:.1f} us/write")
PY
