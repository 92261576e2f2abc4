#!/usr/bin/env bash
# What an idle server-sent-events waiter costs a node: N shoppers wait in a paused room, each
# watching its place over `/.flashgate/events` (the waiting page's default), for HOLD seconds.
# Reports the node's RSS per waiter (RSS with the streams open minus RSS before: the peak, and
# when all are open and at the end) and the node's CPU per waiter-second (user + system time over
# the hold, from /proc), also less the idle node's own CPU (measured for IDLE=30 s before). Streams the node ends
# are reopened at once with their renewed ticket, as a browser does, so the figure includes
# reconnections (with the last event id, as a browser sends it): hold longer than a stream's
# lifetime (15 minutes less up to an eighth) to see them.
#
#   loadtests/sse-bench.sh [WAITERS] [HOLD_SECONDS] [ROUNDS]   (default 9000, 120, 1)
#
# FLASHGATE_BIN_BASE=path/to/flashgate runs the same with that build too, alternating with this
# one round by round (compare two builds on the same machine in one run).
# One node, one worker thread, memory store, pinned to CPU 1; the waiters' client on CPU 0.
# Loopback only; bounded by WAITERS and HOLD. A process may hold ~20,000 open files here:
# each side holds one per waiter, so WAITERS ≤ ~19,000.
# Writes loadtests/results/<date>-sse.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WAITERS="${1:-9000}"
HOLD="${2:-120}"
ROUNDS="${3:-1}"
IDLE="${IDLE:-30}"   # seconds the idle node is measured before the waiters come (CPU time is read in 10 ms ticks)
# JOIN_EXTRA='abandon_after = "15s"' adds settings to the waiters' room (e.g. short-lived streams,
# to profile reconnections).

scripts/setup.sh bench
cargo build --release -q -p flashgate -p loadtests
BIN=target/release
source loadtests/lib.sh
ulimit -n "$(ulimit -Hn)"

if [ "$(nproc)" -ge 2 ]; then on_load=(taskset -c 0); on_proxy=(taskset -c 1); else on_load=(); on_proxy=(); fi
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }

ORIGIN=$(port)
"${on_load[@]}" $BIN/flashgate shop --listen 127.0.0.1:$ORIGIN >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:$ORIGIN/healthz

# run BIN LABEL: one round with that build; prints "LABEL rss_kib_per_waiter us_per_waiter_s counts".
run() {
  local bin=$1 label=$2 fg admin node client
  fg=$(port); admin=$(port)
  { events_node_toml "$fg" "$admin" "$ORIGIN"; printf '%b\n' "${JOIN_EXTRA:-}"; } > "$work/node-$label.toml"
  RUST_LOG=warn "${on_proxy[@]}" "$bin" run -c "$work/node-$label.toml" >/dev/null 2>"$work/node-$label.log" &
  node=$!; pids+=($node)
  wait_http http://127.0.0.1:$admin/healthz
  wait_http http://127.0.0.1:$fg/.flashgate/assets/waiting.css
  curl -s -o /dev/null -X PATCH -d '{"paused": true}' http://127.0.0.1:$admin/api/rooms/join
  # Warm the node's paths once, so the baseline is a node that has served requests.
  curl -s -o /dev/null -H 'Accept: application/json' http://127.0.0.1:$fg/products
  local rss0; rss0=$(rss_kib $node)
  # The idle node's own CPU (timer thread, room sync), to tell it apart from the waiters'.
  local i0 i1; i0=$(cpu_ticks $node); sleep "$IDLE"; i1=$(cpu_ticks $node)
  "${on_load[@]}" $BIN/sse-hold --target 127.0.0.1:$fg --room join --path /products \
    --waiters "$WAITERS" --hold "$HOLD" > "$work/hold-$label.out" 2>"$work/hold-$label.err" &
  client=$!; pids+=($client)
  until grep -q '^READY' "$work/hold-$label.out" 2>/dev/null; do
    kill -0 $client 2>/dev/null || { echo "sse-bench: the client failed:" >&2; cat "$work/hold-$label.err" >&2; exit 1; }
    sleep 0.2
  done
  local rss1 t0 t1 start end
  rss1=$(rss_kib $node); t0=$(cpu_ticks $node); start=$(date +%s.%N)
  wait $client
  t1=$(cpu_ticks $node); end=$(date +%s.%N)
  local rss2; rss2=$(rss_kib $node)
  kill $node; wait $node 2>/dev/null || true
  local open; open=$(sed -n 's/^READY //p' "$work/hold-$label.out")
  awk -v l="$label" -v r0="$rss0" -v r1="$rss1" -v r2="$rss2" -v c0="$t0" -v c1="$t1" -v hz="$ticks" \
      -v i0="$i0" -v i1="$i1" -v idle="$IDLE" \
      -v s="$start" -v e="$end" -v n="$open" -v counts="$(tail -1 "$work/hold-$label.out")" 'BEGIN{
    secs = e - s; cpu = (c1 - c0) / hz; held = (r1 > r2 ? r1 : r2); idle_rate = (i1 - i0) / hz / idle
    printf "%s %.2f %.2f %.2f %.3f %.3f %.1f %.2f %s\n", l, (held - r0) / n, (r1 - r0) / n, (r2 - r0) / n,
      cpu / secs / n * 1e6, (cpu / secs - idle_rate) / n * 1e6, secs, cpu, counts
  }'
}

results=()
for r in $(seq 1 "$ROUNDS"); do
  if [ -n "${FLASHGATE_BIN_BASE:-}" ]; then
    results+=("$(run "$FLASHGATE_BIN_BASE" base)")
    echo "round $r: ${results[-1]}"
  fi
  results+=("$(run "$BIN/flashgate" this)")
  echo "round $r: ${results[-1]}"
done

stamp=$(date -u +%Y-%m-%dT%H%M)
out=loadtests/results/$stamp-sse.md
{
  echo "# Idle server-sent-events waiters, $stamp"
  echo
  echo "\`loadtests/sse-bench.sh $WAITERS $HOLD $ROUNDS\`${FLASHGATE_BIN_BASE:+ with FLASHGATE_BIN_BASE=$FLASHGATE_BIN_BASE}${JOIN_EXTRA:+ with JOIN_EXTRA='$JOIN_EXTRA'}"
  echo "on $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); node pinned to CPU 1, one worker thread, memory store."
  echo
  echo "| build | RSS per waiter, peak (KiB) | at start | at end | node CPU per waiter-second (µs) | less the idle node's | hold (s) | node CPU (s) | client counts |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
  for line in "${results[@]}"; do
    read -r label rss rss1 rss2 cpu net secs total counts <<<"$line"
    echo "| $label | $rss | $rss1 | $rss2 | $cpu | $net | $secs | $total | $counts |"
  done
} > "$out"
cat "$out"
