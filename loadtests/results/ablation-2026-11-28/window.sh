#!/usr/bin/env bash
# One A/B window for the 2026-11-28 ablation (loadtests/results/2026-11-28T2100-events.md): an
# "off" node and an "on" node (events to Redis, or VARIANT's stand-in) pinned to CPU 1, each
# loaded with new arrivals by its own wrk on CPU 0 for DUR seconds; prints the events thread's
# CPU per event, arrivals on/off and the worker's CPU per request, all over one window.
# VARIANT: redis (default), file, nosend, discard, redis-noreply (the last three need a build
# with ablation.patch applied); EXTRA: lines for the "on" node's [events]; ORDER: start order;
# HALVES=1: the window cut in two, each half reported.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
FG=target/release/flashgate
source loadtests/lib.sh
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
ORIGIN=$(port)
taskset -c 0 $FG shop --listen 127.0.0.1:$ORIGIN >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:$ORIGIN/healthz
REDIS=$(port)
chrt --idle 0 taskset -c 0 redis-server --port $REDIS --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 200); do redis-cli -p "$REDIS" ping >/dev/null 2>&1 && break; sleep 0.05; done
case "${VARIANT:-redis}" in
  redis-noreply) export FG_DISCARD=127.0.0.1:$REDIS ;;
  nosend) export FG_NOSEND=1 ;;
  discard) D=$(port); chrt --idle 0 python3 $here/discard.py $D & pids+=($!); sleep 0.3; export FG_DISCARD=127.0.0.1:$D ;;
esac
[ "${VARIANT:-redis}" = file ] && SINK=file
declare -A P A AD
for w in ${ORDER:-off on}; do
  p=$(port); a=$(port); ev=""
  if [ $w = on ]; then
    if [ "${SINK:-redis}" = file ]; then ev="[events]
sink = \"file\"
path = \"$work/ev.jsonl\""
    else ev="[events]
sink = \"redis\"
url = \"redis://127.0.0.1:$REDIS\"
maxlen = 100000
${EXTRA:-}"; fi
  fi
  events_node_toml $p $a $ORIGIN "$ev" > $work/$w.toml
  RUST_LOG=warn setsid taskset -c 1 $FG run -c $work/$w.toml >$work/$w.log 2>&1 & pids+=($!); P[$w]=$!
  wait_http http://127.0.0.1:$a/healthz
  curl -s -o /dev/null -X PATCH -d '{"paused": true}' http://127.0.0.1:$a/api/rooms/join
  A[$w]=$p; AD[$w]=$a
done
ADMIN_ON=${AD[on]}
evs() { curl -s http://127.0.0.1:$ADMIN_ON/metrics | awk 'index($0,"flashgate_events_sent_total")==1{n+=$NF} END{print n+0}'; }
reqs() { curl -s http://127.0.0.1:$1/metrics | awk 'index($0,"flashgate_requests_total")==1{n+=$NF} END{print n+0}'; }
snap() { for w in off on; do for t in /proc/${P[$w]}/task/*; do echo "$w $(basename $t) $(cat $t/comm | tr ' ' _) $(awk '{print $1}' $t/schedstat)"; done; done; for t in /proc/${P[on]}/task/*; do [ "$(cat $t/comm)" = "BG events" ] && awk '/ctxt/{printf "%s ", $2}' $t/status >> $work/ctx; done; echo >> $work/ctx; }
taskset -c 0 wrk -t1 -c32 -d${DUR:-8}s http://127.0.0.1:${A[off]}/products > $work/woff &
o1=$!
taskset -c 0 wrk -t1 -c32 -d${DUR:-8}s http://127.0.0.1:${A[on]}/products > $work/won &
o2=$!
sleep 1; e1=$(evs); ron1=$(reqs ${AD[on]}); roff1=$(reqs ${AD[off]}); snap > $work/s1
if [ -n "${PERF:-}" ]; then
  tid=$(for t in /proc/${P[on]}/task/*; do [ "$(cat $t/comm)" = "$PERF" ] && basename $t; done | head -1 || true)
  perf record -e cpu-clock -F 4999 -g -t $tid -o "${PERF_DATA:-/tmp/flashgate-events.perf.data}" -- sleep $(( ${DUR:-8} - 2 )) 2>/dev/null
elif [ -n "${HALVES:-}" ]; then
  sleep $(( (${DUR:-8} - 2) / 2 )); snap > $work/sm; em=$(evs); ronm=$(reqs ${AD[on]}); roffm=$(reqs ${AD[off]}); sleep $(( (${DUR:-8} - 2) / 2 ))
else sleep $(( ${DUR:-8} - 2 )); fi
snap > $work/s2; e2=$(evs); ron2=$(reqs ${AD[on]}); roff2=$(reqs ${AD[off]})
wait $o1 $o2
join <(awk '{print $1"/"$2"/"$3, $4}' $work/s1 | sort) <(awk '{print $1"/"$2"/"$3, $4}' $work/s2 | sort) | awk '{d=($3-$2)/1e6; if (d>0.5) printf "%-40s %8.1f ms\n", $1, d}'
if [ -n "${HALVES:-}" ]; then
  echo "first half:  $(python3 $here/sum.py $work/s1 $work/sm $((em-e1)) $((ronm-ron1)) $((roffm-roff1)))"
  echo "second half: $(python3 $here/sum.py $work/sm $work/s2 $((e2-em)) $((ron2-ronm)) $((roff2-roffm)))"
else
  cat $work/ctx; python3 $here/sum.py $work/s1 $work/s2 $((e2-e1)) $((ron2-ron1)) $((roff2-roff1))
fi
