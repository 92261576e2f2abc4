#!/usr/bin/env bash
# What events cost a new arrival, counted in instructions rather than timed: the same Flashgate
# config with and without `[events] sink = "file"`, each run under valgrind's callgrind while
# loadtests `rate` sends N arrivals (a paused room: one ticket and one `ticket_issued` event
# each). Instruction counts do not move with the machine's load, unlike req/s on a shared
# 2-core box; the ratio includes every thread (the gate's emit and the events service's
# encoding, batching and writing).
#
#   loadtests/events-callgrind.sh [ARRIVALS] [RATE]     (default 6000 at 300/s)
#
# Needs valgrind (apt-get install valgrind). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtests/lib.sh
callgrind_setup "$@"

declare -A total
for mode in off on; do
  p=$(port); a=$(port)
  events=""
  [ $mode = on ] && events="[events]
sink = \"file\"
path = \"$work/events.jsonl\""
  events_node_toml "$p" "$a" "$ORIGIN" "$events" > "$work/$mode.toml"
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/cg-$mode.out" \
    $BIN/flashgate run -c "$work/$mode.toml" >"$work/$mode.log" 2>&1 & vp=$!; pids+=($vp)
  wait_http http://127.0.0.1:$a/healthz 800
  curl -s -o /dev/null -X PATCH -d '{"paused": true}' http://127.0.0.1:$a/api/rooms/join
  # Warm up (connections, allocator, first events file), then count from zero.
  $BIN/rate http://127.0.0.1:$p/products --rate "$RATE" --duration 3s --warmup 0s -c 8 >/dev/null
  callgrind_control -z $vp >/dev/null
  secs=$(awk -v n="$N" -v r="$RATE" 'BEGIN{printf "%d", n / r}')
  got=$($BIN/rate http://127.0.0.1:$p/products --rate "$RATE" --duration ${secs}s --warmup 0s -c 8 | sed -n 's/.* ok=\([0-9]*\).*/\1/p')
  sleep 0.5 # the events service delivers within its linger time
  callgrind_control -d $vp >/dev/null
  kill $vp; wait $vp 2>/dev/null || true
  # The dump taken right after the arrivals (not the process's start-up or shutdown).
  sum=$(awk '/^summary:|^totals:/{print $2; exit}' "$work/cg-$mode.out.1")
  total[$mode]=$sum
  echo "$mode: $got arrivals, $sum instructions, $(awk -v s="$sum" -v n="$got" 'BEGIN{printf "%.0f", s / n}') per arrival"
done
echo
echo "instructions with events on / off: $(awk -v a="${total[on]}" -v b="${total[off]}" 'BEGIN{printf "%.4f", a / b}') (callgrind, $N arrivals at $RATE/s)"
