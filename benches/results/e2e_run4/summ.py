import csv,glob,sys,statistics as st,re
d=sys.argv[1]; names=sys.argv[2:]
ref=int(__import__("os").environ.get("REF","1"))
rows={}
for f in glob.glob(d+'/v*_*.csv'):
    m=re.search(r'v(\d+)_(\d+)\.csv',f); v=int(m.group(1)); i=int(m.group(2))
    for r in csv.DictReader(open(f)):
        rows.setdefault((int(r['clients']),v),{})[i]=r
for c in sorted({k[0] for k in rows}):
    print(f"clients {c}")
    base=rows.get((c,ref),{})
    for v in sorted({k[1] for k in rows if k[0]==c}):
        rs=rows[(c,v)]
        for key in ['writes_per_s','latency_us_p50','cpu_us_per_write']:
            vals=[float(rs[i][key]) for i in sorted(rs)]
            line=f"  {names[v-1]:>8} {key:>18}: med {st.median(vals):9.1f}  range {min(vals):9.1f}-{max(vals):9.1f}"
            if v!=ref:
                ratios=[float(rs[i][key])/float(base[i][key]) for i in sorted(rs) if i in base]
                line+=f"  ratio vs {names[ref-1]} (paired) med {st.median(ratios):.3f} range {min(ratios):.3f}-{max(ratios):.3f}"
            print(line)
