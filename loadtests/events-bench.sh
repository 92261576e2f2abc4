#!/usr/bin/env bash
# Events on vs off, one interleaved run: the same Flashgate config twice, once with
# `[events] sink = "file"` and once without, measured with wrk on a pass-through request and on
# a new arrival (a ticket is issued: an event per request when events are on).
#
#   loadtests/events-bench.sh [DURATION_SECONDS] [ROUNDS]      (default 5 s, 3 rounds)
#
# Loopback only; every node has one worker thread; wrk -t1 -c32.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-5}"
ROUNDS="${2:-3}"
scripts/setup.sh bench
cargo build --release -q -p flashgate
BIN=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "events-bench: $1 did not come up" >&2; exit 1; }

ORIGIN=$(port)
$BIN/flashgate shop --listen 127.0.0.1:$ORIGIN >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:$ORIGIN/healthz

node() { # name events-table
  local p a; p=$(port); a=$(port)
  cat > "$work/$1.toml" <<TOML
[server]
listen = ["127.0.0.1:$p"]
admin_listen = "127.0.0.1:$a"
threads = 1
access_log = false
[keys]
active = 1
[[keys.key]]
id = 1
secret = "benchmark-secret-benchmark-secret-0123456789"
[upstreams.shop]
servers = ["127.0.0.1:$ORIGIN"]
$2
[[rooms]]
id = "bench"
paths = ["/healthz"]
new_users_per_minute = 600
total_active_users = 1000000
session_duration = "1h"
[[rooms]]
id = "join"
paths = ["/products"]
new_users_per_minute = 600
total_active_users = 1000
TOML
  RUST_LOG=warn $BIN/flashgate run -c "$work/$1.toml" >/dev/null 2>&1 & pids+=($!)
  wait_http http://127.0.0.1:$a/healthz
  wait_http http://127.0.0.1:$p/.flashgate/assets/waiting.css
  curl -s -o /dev/null -X PATCH -d '{"paused": true}' http://127.0.0.1:$a/api/rooms/join
  echo "$p"
}
OFF=$(node off "")
ON=$(node on "[events]
sink = \"file\"
path = \"$work/events.jsonl\"
max_bytes = 67108864
keep_files = 1")

pass_for() { for _ in $(seq 1 100); do
  local c; c=$(curl -s -o /dev/null -D - "http://127.0.0.1:$1/healthz" | sed -n 's/^set-cookie: \(fg_p_bench=[^;]*\).*/\1/ip' | head -1)
  [ -n "$c" ] && { echo "$c"; return; }; sleep 0.05; done; echo "events-bench: no pass" >&2; exit 1; }
PASS_OFF=$(pass_for "$OFF"); PASS_ON=$(pass_for "$ON")

declare -A rps
run() { # label port path header
  local args=(-t1 -c32 -d${DUR}s); [ -n "$4" ] && args+=(-H "$4")
  local r; r=$(wrk "${args[@]}" "http://127.0.0.1:$2$3" | awk '/Requests\/sec/{print $2}')
  rps[$1]+="$r "; echo "  $1: $r req/s"
}
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  run pass_off "$OFF" /healthz "Cookie: $PASS_OFF"
  run pass_on "$ON" /healthz "Cookie: $PASS_ON"
  run arrival_off "$OFF" /products ""
  run arrival_on "$ON" /products ""
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
m() { echo "${rps[$1]}" | median; }
lines=$(wc -l < "$work/events.jsonl" 2>/dev/null || echo 0)
echo
echo "| request | events off req/s | events on req/s | on / off |"
echo "|---|---:|---:|---:|"
for k in pass arrival; do
  off=$(m ${k}_off); on=$(m ${k}_on)
  echo "| $k | $off | $on | $(awk -v a="$on" -v b="$off" 'BEGIN{printf "%.3f", a/b}') |"
done
echo
echo "events written by the 'on' node: $lines (medians of $ROUNDS interleaved rounds of ${DUR}s)"
