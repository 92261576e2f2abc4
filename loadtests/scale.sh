#!/usr/bin/env bash
# Scale figures: what a big line costs.
#   - RSS of a Flashgate node (memory store, and Redis store) and Redis used_memory after
#     issuing TICKETS tickets through the HTTP path (a paused room: every request without a
#     cookie gets a ticket), then while a sample of them polls;
#   - Redis script calls per arrival (at saturation, where batching works, and at a gentle
#     pace) and per status poll, from `INFO commandstats` deltas minus the background rate;
#   - status polls per second on one Flashgate thread, and so how many waiting shoppers one
#     core serves at the room's poll interval.
# Writes loadtests/results/scale-<date>.md.
#
#   loadtests/scale.sh [TICKETS] [SAMPLE]     (default 1,000,000 tickets, 1,000 polling)
#
# Loopback only; every run of the load generator is bounded in requests and time. With the
# defaults it takes about 6 minutes after the build on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
TICKETS="${1:-1000000}"
SAMPLE="${2:-1000}"
POLL_RATE="${POLL_RATE:-2000}"
DUR=10
POLL_INTERVAL=5

scripts/setup.sh bench
cargo build --release -q -p flashgate -p loadtests
BIN=target/release
source loadtests/lib.sh

rss_mib() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
redis_mem() { redis-cli -p "$REDIS" info memory | tr -d '\r' | awk -F: '$1=="used_memory"{print $2}'; }
mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}'; }
scripts() { redis-cli -p "$REDIS" info commandstats | awk -F'[:,=]' '/^cmdstat_(evalsha|eval|script)/ {n += $3} END {print n+0}'; }
kv() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
div() { awk -v a="$1" -v b="$2" -v p="${3:-4}" 'BEGIN{ if (b == 0) print "–"; else printf "%.*f", p, a/b }'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(load)

ORIGIN=$(port); FG=$(port); ADMIN=$(port); FGR=$(port); ADMINR=$(port); REDIS=$(port)
$BIN/flashgate shop --listen 127.0.0.1:$ORIGIN >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:$ORIGIN/healthz
redis-server --port $REDIS --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 100); do redis-cli -p $REDIS ping >/dev/null 2>&1 && break; sleep 0.05; done

fg_config() { # listen admin store-body
  cat <<TOML
[server]
listen = ["127.0.0.1:$1"]
admin_listen = "127.0.0.1:$2"
threads = 1
[keys]
active = 1
[[keys.key]]
id = 1
secret = "scale-secret-scale-secret-scale-secret-0123"
[store]
$3
[upstreams.shop]
servers = ["127.0.0.1:$ORIGIN"]
[[routes]]
path = "/"
upstream = "shop"
[[rooms]]
id = "scale"
paths = ["/"]
new_users_per_minute = 60
total_active_users = 1000
poll_interval = "${POLL_INTERVAL}s"
# Long enough that the sample's tickets are still valid when they poll, minutes later.
abandon_after = "1h"
TOML
}
fg_config $FG $ADMIN 'kind = "memory"' > "$work/memory.toml"
fg_config $FGR $ADMINR "kind = \"redis\"
url = \"redis://127.0.0.1:$REDIS\"" > "$work/redis.toml"
RUST_LOG=warn $BIN/flashgate run -c "$work/memory.toml" >/dev/null 2>"$work/memory.log" & FGPID=$!; pids+=($FGPID)
RUST_LOG=warn $BIN/flashgate run -c "$work/redis.toml" >/dev/null 2>"$work/redis.log" & FGRPID=$!; pids+=($FGRPID)
for a in $ADMIN $ADMINR; do wait_http http://127.0.0.1:$a/healthz; done
for p in $FG $FGR; do wait_http http://127.0.0.1:$p/.flashgate/assets/waiting.css; done
for a in $ADMIN $ADMINR; do curl -s -o /dev/null -X PATCH -d '{"paused": true}' http://127.0.0.1:$a/api/rooms/scale; done

# Background Redis traffic (snapshot refresh, controller), to subtract from the deltas below.
rss_m0=$(rss_mib $FGPID); rss_r0=$(rss_mib $FGRPID); mem0=$(redis_mem)
s0=$(scripts); sleep $DUR; s1=$(scripts)
bg=$(div $((s1 - s0)) $DUR 2)
echo "scale: background Redis script calls: $bg/s"

issue() { # port name -> prints the rate summary line
  $BIN/rate "http://127.0.0.1:$1/" --max --requests "$TICKETS" -c 64 --warmup 0s --duration 590s \
    -H 'Accept: application/json' --save-cookie fg_t_scale --save-count "$SAMPLE" \
    --save-to "$work/tickets-$2.txt" --label "issue-$2"
}
echo "scale: issuing $TICKETS tickets on the memory node"
out_m=$(issue $FG memory); echo "$out_m"
echo "scale: issuing $TICKETS tickets on the Redis node"
s0=$(scripts)
out_r=$(issue $FGR redis); echo "$out_r"
s1=$(scripts)
secs_r=$(kv "$out_r" seconds); n_r=$(kv "$out_r" requests)
calls_issue=$((s1 - s0))
net_issue=$(awk -v c="$calls_issue" -v b="$bg" -v s="$secs_r" 'BEGIN{v=c-b*s; print (v<0)?0:v}')
# A gentle pace: arrivals one at a time, batching has nothing to group.
s0=$(scripts)
out_slow=$($BIN/rate "http://127.0.0.1:$FGR/" --rate 200 --duration ${DUR}s --warmup 0s -c 8 -H 'Accept: application/json' --label issue-slow)
s1=$(scripts)
calls_slow=$((s1 - s0)); n_slow=$(kv "$out_slow" requests)
net_slow=$(awk -v c="$calls_slow" -v b="$bg" -v s="$DUR" 'BEGIN{v=c-b*s; print (v<0)?0:v}')

issued_m=$(curl -s http://127.0.0.1:$ADMIN/api/rooms/scale | python3 -c 'import json,sys; print(json.load(sys.stdin)["tickets_issued"])')
issued_r=$(curl -s http://127.0.0.1:$ADMINR/api/rooms/scale | python3 -c 'import json,sys; print(json.load(sys.stdin)["tickets_issued"])')
rss_m1=$(rss_mib $FGPID); rss_r1=$(rss_mib $FGRPID); mem1=$(redis_mem)

# The sample polls (the room resumes so the status carries a real ETA; at 60/min few of the
# sample get in during the test).
for a in $ADMIN $ADMINR; do curl -s -o /dev/null -X PATCH -d '{"paused": false}' http://127.0.0.1:$a/api/rooms/scale; done
poll() { # port name
  $BIN/rate "http://127.0.0.1:$1/.flashgate/status?room=scale" --rate "$POLL_RATE" --duration ${DUR}s \
    --warmup 1s -c 32 --tokens "$work/tickets-$2.txt" --label "poll-$2"
}
out_pm=$(poll $FG memory); echo "$out_pm"
s0=$(scripts)
out_pr=$(poll $FGR redis); echo "$out_pr"
s1=$(scripts)
calls_poll=$((s1 - s0)); n_poll=$(kv "$out_pr" requests)
net_poll=$(awk -v c="$calls_poll" -v b="$bg" -v s="$((DUR + 1))" 'BEGIN{v=c-b*s; print (v<0)?0:v}')
rss_m2=$(rss_mib $FGPID); rss_r2=$(rss_mib $FGRPID); mem2=$(redis_mem)

# One thread at saturation (the load generator has the other core).
out_max=$($BIN/rate "http://127.0.0.1:$FG/.flashgate/status?room=scale" --max --duration ${DUR}s \
  --warmup 1s -c 32 --tokens "$work/tickets-memory.txt" --label poll-max)
echo "$out_max"
pps=$(kv "$out_max" achieved_rps)
load_end=$(load)

date=$(date -u +%Y-%m-%d)
report=loadtests/results/scale-$date.md
n=2; while [ -e "$report" ]; do report=loadtests/results/scale-$date-$n.md; n=$((n + 1)); done
mkdir -p loadtests/results
{
  echo "# Scale figures $date"
  echo
  echo "\`loadtests/scale.sh $TICKETS $SAMPLE\` (POLL_RATE=$POLL_RATE) on $(nproc) cores ($(uname -m)). One"
  echo "Flashgate thread per node; the load generator (\`rate\`, one thread), both nodes, Redis and"
  echo "the shop share the machine. Load average $load_start at the start, $load_end at the end."
  echo
  echo "## Memory with a long line"
  echo
  echo "| | memory-store node RSS MiB | Redis-store node RSS MiB | Redis used_memory MiB |"
  echo "|---|---:|---:|---:|"
  echo "| idle, room paused | $rss_m0 | $rss_r0 | $(mib "$mem0") |"
  echo "| after $TICKETS tickets (issued: $issued_m / $issued_r) | $rss_m1 | $rss_r1 | $(mib "$mem1") |"
  echo "| after $SAMPLE of them polled at $POLL_RATE/s for ${DUR} s | $rss_m2 | $rss_r2 | $(mib "$mem2") |"
  echo
  echo "Tickets are signed cookies: the nodes keep no per-shopper state, so RSS does not grow"
  echo "with the line; Redis keeps counters and two bitmaps per room (bits are set on entry and"
  echo "on leave, not on issue)."
  echo
  echo "## Issuing tickets through HTTP (closed loop, 64 connections, JSON answer)"
  echo
  echo "| store | tickets | seconds | arrivals/s | p50 µs | p99 µs |"
  echo "|---|---:|---:|---:|---:|---:|"
  echo "| memory | $(kv "$out_m" requests) | $(kv "$out_m" seconds) | $(kv "$out_m" achieved_rps) | $(kv "$out_m" p50_us) | $(kv "$out_m" p99_us) |"
  echo "| Redis | $n_r | $secs_r | $(kv "$out_r" achieved_rps) | $(kv "$out_r" p50_us) | $(kv "$out_r" p99_us) |"
  echo
  echo "## Redis calls"
  echo
  echo "Script calls (one round trip each) from \`INFO commandstats\`; background refresh and"
  echo "controller traffic measured idle first ($bg calls/s) and subtracted."
  echo
  echo "| what | calls | per item |"
  echo "|---|---:|---:|"
  echo "| arrivals at saturation (64 in flight, batched) | $calls_issue raw, $net_issue net / $n_r arrivals | $(div "$net_issue" "$n_r") |"
  echo "| arrivals at 200/s (one at a time) | $calls_slow raw, $net_slow net / $n_slow arrivals | $(div "$net_slow" "$n_slow") |"
  echo "| status polls at $POLL_RATE/s | $calls_poll raw, $net_poll net / $n_poll polls | $(div "$net_poll" "$n_poll") |"
  echo
  echo "## Status polls"
  echo
  echo "| | polls/s | p50 µs | p99 µs | p99.9 µs |"
  echo "|---|---:|---:|---:|---:|"
  echo "| memory node, fixed $POLL_RATE/s | $(kv "$out_pm" achieved_rps) | $(kv "$out_pm" p50_us) | $(kv "$out_pm" p99_us) | $(kv "$out_pm" p999_us) |"
  echo "| Redis node, fixed $POLL_RATE/s | $(kv "$out_pr" achieved_rps) | $(kv "$out_pr" p50_us) | $(kv "$out_pr" p99_us) | $(kv "$out_pr" p999_us) |"
  echo "| memory node, one thread at saturation | $pps | $(kv "$out_max" p50_us) | $(kv "$out_max" p99_us) | $(kv "$out_max" p999_us) |"
  echo
  echo "Waiting shoppers one core serves: polls/s × seconds between polls. At the room's"
  echo "\`poll_interval\` (${POLL_INTERVAL} s) that is **$(awk -v p="$pps" -v i=$POLL_INTERVAL 'BEGIN{printf "%.0f", p*i}')**; far back in a long line"
  echo "the server asks for a poll every 4 × ${POLL_INTERVAL} s, which would make it $(awk -v p="$pps" -v i=$POLL_INTERVAL 'BEGIN{printf "%.0f", p*i*4}')."
} > "$report"
cat "$report"
