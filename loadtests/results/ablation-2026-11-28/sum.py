import sys
def rd(f):
    d={}
    for l in open(f):
        w,tid,comm,ns=l.split(); d[(w,tid,comm)]=int(ns)
    return d
a,b=rd(sys.argv[1]),rd(sys.argv[2])
E,RON,ROFF=map(int,sys.argv[3:6])
d={k:b[k]-a.get(k,0) for k in b}
ev=sum(v for k,v in d.items() if k[0]=='on' and k[2]=='BG_events')
won=sum(v for k,v in d.items() if k[0]=='on' and k[2]=='flashgate')
woff=sum(v for k,v in d.items() if k[0]=='off' and k[2]=='flashgate')
ton=sum(v for k,v in d.items() if k[0]=='on'); toff=sum(v for k,v in d.items() if k[0]=='off')
print(f"events {E}, events thread {ev/E:.0f} ns/event ({ev/ton*100:.2f}% of node); arrivals on/off {RON/ROFF:.4f}; worker ns/req on {won/RON:.0f} off {woff/ROFF:.0f} ({won/RON/(woff/ROFF):.4f}); node CPU on/off {ton/toff:.4f}")
