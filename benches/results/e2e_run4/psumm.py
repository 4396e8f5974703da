import csv,glob,sys,statistics as st,re,collections
d=sys.argv[1]
data=collections.defaultdict(lambda: collections.defaultdict(list))
for f in sorted(glob.glob(d+'/*.perf')):
    n,c,i,_=f.split('/')[-1].split('.')
    row=list(csv.DictReader(open(f.replace('.perf','.csv'))))[0]
    w=float(row['writes'])
    ev={}
    for line in open(f):
        p=line.strip().split(',')
        if len(p)>3 and p[0] and p[0][0].isdigit(): ev[p[2]]=float(p[0])
    data[(int(c),n)]['writes/s'].append(float(row['writes_per_s']))
    data[(int(c),n)]['p50us'].append(float(row['latency_us_p50']))
    data[(int(c),n)]['cpu_us/w(bench)'].append(float(row['cpu_us_per_write']))
    for k,v in ev.items():
        short=k.replace('syscalls:sys_enter_','')
        data[(int(c),n)][short+'/w' if short!='task-clock' else 'taskclock_us/w'].append(v/w*(1000 if short=='task-clock' else 1))
for (c,n),m in sorted(data.items()):
    print(f"clients {c} {n}: "+"  ".join(f"{k} {st.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]" for k,v in m.items()))
