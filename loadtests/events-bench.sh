#!/usr/bin/env bash
# Events on vs off, one interleaved run: the same Flashgate config twice, once with
# `[events] sink = "file"` and once without, measured with wrk on a pass-through request and on
# a new arrival (a ticket is issued: an event per request when events are on).
#
#   loadtests/events-bench.sh [DURATION_SECONDS] [ROUNDS]      (default 5 s, 6 rounds)
#
# Loopback only; every node has one worker thread. The nodes are pinned to CPU 1, wrk and the
# origin to CPU 0, so the events service's threads compete with the proxy they belong to.
# Every round starts both nodes afresh (alternating which starts first): two processes of the
# same binary and config differ by a few per cent in throughput (address-space layout, hash
# seeds), and a fresh pair per round keeps that out of the medians.
# Besides req/s it reports each node's CPU time per request (user + system, all threads, from
# /proc/PID/stat) and the share of that CPU the events service's own threads used.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-5}"
ROUNDS="${2:-6}"
scripts/setup.sh bench
cargo build --release -q -p flashgate
BIN=target/release
source loadtests/lib.sh
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$work"/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$work"
}

ORIGIN=$(port)
taskset -c 0 $BIN/flashgate shop --listen 127.0.0.1:$ORIGIN >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:$ORIGIN/healthz

node() { # name events-table
  local p a; p=$(port); a=$(port)
  events_node_toml "$p" "$a" "$ORIGIN" "$2" > "$work/$1.toml"
  RUST_LOG=warn taskset -c 1 $BIN/flashgate run -c "$work/$1.toml" >/dev/null 2>&1 & pids+=($!)
  echo $! > "$work/$1.pid"
  echo "$a" > "$work/$1.admin"
  wait_http http://127.0.0.1:$a/healthz
  wait_http http://127.0.0.1:$p/.flashgate/assets/waiting.css
  curl -s -o /dev/null -X PATCH -d '{"paused": true}' http://127.0.0.1:$a/api/rooms/join
  echo "$p"
}
EVENTS="[events]
sink = \"file\"
path = \"$work/events.jsonl\"
max_bytes = 67108864
keep_files = 1"

pass_for() { for _ in $(seq 1 100); do
  local c; c=$(curl -s -o /dev/null -D - "http://127.0.0.1:$1/healthz" | sed -n 's/^set-cookie: \(fg_p_bench=[^;]*\).*/\1/ip' | head -1)
  [ -n "$c" ] && { echo "$c"; return; }; sleep 0.05; done; echo "events-bench: no pass" >&2; exit 1; }
stop_node() { kill -9 "$(cat "$work/$1.pid")" 2>/dev/null || true; rm -f "$work/$1.pid"; }
# Sum of a counter family on a node's /metrics.
metric() { curl -s "http://127.0.0.1:$(cat "$work/$1.admin")/metrics" | awk -v m="$2" 'index($0, m) == 1 {n += $NF} END {print n + 0}'; }
pid_of() { cat "$work/$1.pid"; }
# CPU time (user + system, all threads) the process has used, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The same for the threads of the events service ("BG events": its runtime and blocking pool).
event_ticks() {
  local n=0 t
  for t in /proc/$1/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = "BG events" ] && n=$((n + $(awk '{print $14 + $15}' "$t/stat" 2>/dev/null || echo 0)))
  done
  echo $n
}
HZ=$(getconf CLK_TCK)

declare -A rps cpu share
run() { # label port path header node
  local args=(-t1 -c32 -d${DUR}s); [ -n "$4" ] && args+=(-H "$4")
  local pid t0 e0 out r n c; pid=$(pid_of "$5"); t0=$(ticks "$pid"); e0=$(event_ticks "$pid")
  out=$(taskset -c 0 wrk "${args[@]}" "http://127.0.0.1:$2$3")
  r=$(echo "$out" | awk '/Requests\/sec/{print $2}'); n=$(echo "$out" | awk '/requests in/{print $1}')
  # Microseconds of the node's CPU per request: what the request cost, whatever else the
  # machine was doing (throughput on a shared 2-core machine moves ±10 % between runs).
  local d=$(( $(ticks "$pid") - t0 )) de=$(( $(event_ticks "$pid") - e0 ))
  c=$(awk -v d="$d" -v hz="$HZ" -v n="$n" 'BEGIN{printf "%.2f", d / hz * 1e6 / n}')
  rps[$1]+="$r "; cpu[$1]+="$c "; share[$1]+="$(awk -v a="$de" -v b="$d" 'BEGIN{printf "%.4f", b ? a / b : 0}') "
  echo "  $1: $r req/s, $c µs CPU/request, events threads $de of $d ticks"
}
sent=0; dropped=0
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  if [ $((r % 2)) = 1 ]; then OFF=$(node off ""); ON=$(node on "$EVENTS"); order="off on"
  else ON=$(node on "$EVENTS"); OFF=$(node off ""); order="on off"; fi
  PASS_OFF=$(pass_for "$OFF"); PASS_ON=$(pass_for "$ON")
  for k in pass arrival; do
    path=/healthz; [ $k = arrival ] && path=/products
    for w in $order; do
      port=$OFF; cookie="Cookie: $PASS_OFF"
      [ $w = on ] && { port=$ON; cookie="Cookie: $PASS_ON"; }
      [ $k = arrival ] && cookie=""
      run ${k}_$w "$port" "$path" "$cookie" $w
    done
  done
  # Delivery lags by at most the linger time; give it a moment, then read the counters.
  sleep 0.5
  sent=$((sent + $(metric on flashgate_events_sent_total)))
  dropped=$((dropped + $(metric on flashgate_events_dropped_total)))
  stop_node on; stop_node off
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
m() { echo "${rps[$1]}" | median; }
mc() { echo "${cpu[$1]}" | median; }
ms() { echo "${share[$1]}" | median; }
echo
echo "| request | off req/s | on req/s | on / off | off µs CPU/req | on µs CPU/req | on / off |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for k in pass arrival; do
  off=$(m ${k}_off); on=$(m ${k}_on); coff=$(mc ${k}_off); con=$(mc ${k}_on)
  echo "| $k | $off | $on | $(awk -v a="$on" -v b="$off" 'BEGIN{printf "%.3f", a/b}') | $coff | $con | $(awk -v a="$con" -v b="$coff" 'BEGIN{printf "%.3f", a/b}') |"
done
echo
echo "events delivered by the 'on' nodes: $sent, dropped: $dropped (medians of $ROUNDS rounds of ${DUR}s a run)"
echo "share of the 'on' node's CPU used by the events service's threads during arrivals: $(awk -v s="$(ms arrival_on)" 'BEGIN{printf "%.1f %%", s * 100}')"
