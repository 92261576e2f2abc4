#!/usr/bin/env bash
# One benchmark run, one machine, interleaved: the origin direct, nginx proxy_pass (keepalive
# upstream), a bare Pingora pass-through, Flashgate with a valid pass, and Flashgate answering a
# waiting-room status poll. Prints req/s, p50/p99 latency and ratios, and writes
# loadtests/results/<date>.md.
#
#   loadtests/bench.sh [DURATION_SECONDS] [ROUNDS]       (default 10 s, 3 rounds)
#
# Everything listens on 127.0.0.1 only; every proxy gets one worker thread; wrk uses one thread
# and 32 connections. On a 2-core machine the load generator, the proxy and the origin share the
# cores, so compare the ratios measured in the same run, not absolute numbers across machines.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"
ROUNDS="${2:-3}"
CONNS=32

scripts/setup.sh bench
cargo build --release -q -p flashgate -p loadtests
BIN=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "bench: $1 did not come up" >&2; exit 1; }

ORIGIN=$(port); NGINX=$(port); BARE=$(port); FG=$(port); ADMIN=$(port)

$BIN/flashgate shop --listen 127.0.0.1:$ORIGIN >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:$ORIGIN/healthz

cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)
wait_http http://127.0.0.1:$NGINX/healthz

$BIN/bare-pingora --listen 127.0.0.1:$BARE --upstream 127.0.0.1:$ORIGIN --threads 1 >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:$BARE/healthz

cat > "$work/flashgate.toml" <<TOML
[server]
listen = ["127.0.0.1:$FG"]
admin_listen = "127.0.0.1:$ADMIN"
threads = 1
[keys]
active = 1
[[keys.key]]
id = 1
secret = "benchmark-secret-benchmark-secret-0123456789"
[upstreams.shop]
servers = ["127.0.0.1:$ORIGIN"]
[[rooms]]
id = "bench"
paths = ["/"]
new_users_per_minute = 600
total_active_users = 100000
session_duration = "1h"
TOML
RUST_LOG=warn $BIN/flashgate run -c "$work/flashgate.toml" >/dev/null 2>"$work/flashgate.log" & pids+=($!)
wait_http http://127.0.0.1:$ADMIN/healthz
wait_http http://127.0.0.1:$FG/.flashgate/assets/waiting.css

# A pass: the room is idle, so the first request is admitted and gets one.
for _ in $(seq 1 100); do
  PASS=$(curl -s -o /dev/null -D - http://127.0.0.1:$FG/healthz | sed -n 's/^set-cookie: \(fg_p_bench=[^;]*\).*/\1/ip' | head -1)
  [ -n "$PASS" ] && break; sleep 0.05
done
[ -n "$PASS" ] || { echo "bench: could not obtain a pass" >&2; exit 1; }
# A waiting ticket for the status poll: pause the room, join, keep the ticket.
curl -s -o /dev/null -X PATCH -d '{"paused": true}' http://127.0.0.1:$ADMIN/api/rooms/bench
TICKET=$(curl -s -o /dev/null -D - -H 'Accept: application/json' http://127.0.0.1:$FG/healthz | sed -n 's/^set-cookie: \(fg_t_bench=[^;]*\).*/\1/ip' | head -1)
[ -n "$TICKET" ] || { echo "bench: could not obtain a ticket" >&2; exit 1; }

names=(origin nginx bare_pingora flashgate_pass flashgate_status)
declare -A url hdr rps p50 p99
url[origin]=http://127.0.0.1:$ORIGIN/healthz;            hdr[origin]=""
url[nginx]=http://127.0.0.1:$NGINX/healthz;              hdr[nginx]=""
url[bare_pingora]=http://127.0.0.1:$BARE/healthz;        hdr[bare_pingora]=""
url[flashgate_pass]=http://127.0.0.1:$FG/healthz;        hdr[flashgate_pass]="Cookie: $PASS"
url[flashgate_status]="http://127.0.0.1:$FG/.flashgate/status?room=bench"; hdr[flashgate_status]="Cookie: $TICKET"

# Converts wrk's latency ("812.00us", "1.20ms", "2.1s") to microseconds.
to_us() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us/,"",v); print v+0} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000000} else print v }'; }

for r in $(seq 1 "$ROUNDS"); do
  for n in "${names[@]}"; do
    args=(-t1 -c$CONNS -d${DUR}s --latency)
    [ -n "${hdr[$n]}" ] && args+=(-H "${hdr[$n]}")
    out=$(wrk "${args[@]}" "${url[$n]}")
    if echo "$out" | grep -q "Non-2xx"; then echo "bench: $n answered non-2xx:"; echo "$out"; exit 1; fi
    rps[$n]+="$(echo "$out" | awk '/Requests\/sec/{print $2}') "
    p50[$n]+="$(to_us "$(echo "$out" | awk '$1=="50%"{print $2}')") "
    p99[$n]+="$(to_us "$(echo "$out" | awk '$1=="99%"{print $2}')") "
    echo "round $r  $n: $(echo "$out" | awk '/Requests\/sec/{print $2}') req/s"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
declare -A m50 m99 mr
for n in "${names[@]}"; do
  mr[$n]=$(echo "${rps[$n]}" | median); m50[$n]=$(echo "${p50[$n]}" | median); m99[$n]=$(echo "${p99[$n]}" | median)
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }

date=$(date -u +%Y-%m-%d)
report=loadtests/results/$date.md
{
  echo "# Benchmark $date"
  echo
  echo "\`loadtests/bench.sh $DUR $ROUNDS\` on $(nproc) cores ($(uname -m)); wrk -t1 -c$CONNS, ${DUR}s per run,"
  echo "$ROUNDS interleaved rounds, medians shown. Every proxy has one worker thread."
  echo
  echo "| target | req/s | p50 µs | p99 µs |"
  echo "|---|---:|---:|---:|"
  for n in "${names[@]}"; do echo "| $n | ${mr[$n]} | ${m50[$n]} | ${m99[$n]} |"; done
  echo
  echo "| ratio | value | target |"
  echo "|---|---:|---|"
  echo "| flashgate_pass / bare_pingora | $(ratio "${mr[flashgate_pass]}" "${mr[bare_pingora]}") | ≥ 0.95 |"
  echo "| flashgate_pass / nginx | $(ratio "${mr[flashgate_pass]}" "${mr[nginx]}") | ≥ 1.0 (moonshot) |"
  echo "| flashgate_status / flashgate_pass | $(ratio "${mr[flashgate_status]}" "${mr[flashgate_pass]}") | ≥ 2 |"
} > "$report"
cat "$report"
