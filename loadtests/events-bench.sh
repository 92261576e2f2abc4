#!/usr/bin/env bash
# Events on vs off in one run: the same Flashgate config twice, once with
# `[events] sink = "file"` and once without, loaded at the same time with wrk on a
# pass-through request and on a new arrival (a ticket is issued: an event per request when
# events are on).
#
#   loadtests/events-bench.sh [DURATION_SECONDS] [ROUNDS] [SINK]  (default 10 s, 6 rounds, file)
#
# Each load runs DURATION_SECONDS and is measured over all of it but the first and last second.
# 10 s (8 s windows) is the default: with 6 s loads the Redis sink read about a point lower,
# not from a start-up transient (loadtests/results/2026-11-28T2100-events.md).
#
# EVENTS_EXTRA adds lines to the "on" node's [events] table (e.g. EVENTS_EXTRA='batch = 256').
# REDIS_URL (with SINK redis) uses a Redis you run instead of starting one, e.g. on another
# host, which keeps Redis's own work off this machine's cores. REDIS_CPU (default 0) pins the
# Redis the script starts to another CPU (1: with the nodes, sharing their core between them).
# FLASHGATE_BIN runs a given binary instead of building this checkout's (two builds compared in
# alternate runs).
#
# SINK is `file` (a JSON-lines file in a scratch directory), `redis` (a redis-server the
# script starts on a free port, on CPU 0 with the load generator: the node pays for building
# and sending the batches, not for Redis's own work; on loopback it also pays for the TCP
# receive path, which a network card and the Redis host would take on) or `redis-unix` (the
# same server reached through a unix socket: no TCP at all).
#
# redis-server runs at idle priority (SCHED_IDLE: only in CPU 0's spare time) because it stands
# for a Redis on another host. At normal priority it took CPU 0 from the load generator in
# bursts (≈ 5 µs of Redis per event: ~1 ms per 256-event batch) right after the "on" node
# delivered, so that node's wrk fell behind and the node sat idle with work to do: its worker
# slept in epoll_wait ~270 times per 4 s against ~55 at idle priority (and the off node's ~70),
# and the ratio measured the shared load generator, not the node (the "off" worker slept ~145
# times). Whether Redis kept up is reported: events dropped, and the share of a window's
# arrivals whose event was still undelivered when it closed (that delivery's CPU would fall
# outside the window). REDIS_SCHED=normal runs it as before. Redis's own CPU per event is
# reported too (what a fleet's Redis must budget).
#
# Loopback only; every node has one worker thread. Both nodes are pinned to CPU 1 and loaded
# at once (one wrk each, on CPU 0 with the origin), so they share one core at the same moments:
# this VM's speed drifts by ±20 % between runs a few seconds apart, and measuring the two
# nodes side by side keeps that drift out of the ratio (sequential runs needed dozens of rounds
# to resolve a few per cent). Each node is started in a session of its own (`setsid`): with
# the kernel's autogroup scheduling (on by default; the script says if it is off) the core is
# split evenly between the two processes, not between their threads, so the events service's
# thread does not earn the "on" node extra CPU.
# Every round starts both nodes afresh (alternating which starts first): two processes of the
# same binary and config differ by a few per cent (address-space layout, hash seeds), and a
# fresh pair per round keeps that out of the medians.
# Measured over one window for both nodes: from 1 s after their load generators started to 1 s
# before they stop, the nodes' own request counters (/metrics) and CPU time (all threads, exact:
# /proc/PID/task/*/schedstat) read at the same two moments. (wrk's own req/s, also printed, is
# each over its own run: the two runs start and stop a little apart, and wrk ends a run on a
# 100 ms-ish tick, which alone moved the on/off ratio by ±2 % a round.) The ratios are taken
# per round (both nodes measured together), then the median.
# Split for arrivals: the events thread's share of the "on" node's CPU, and the worker
# thread's own CPU per request on / off (the request path's part).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"
ROUNDS="${2:-6}"
SINK="${3:-file}"
[ "$DUR" -ge 3 ] 2>/dev/null || { echo "events-bench: DURATION_SECONDS must be at least 3 (the window leaves out 1 s at each end)" >&2; exit 2; }
scripts/setup.sh bench
if [ -n "${FLASHGATE_BIN:-}" ]; then
  FG="$FLASHGATE_BIN"
else
  cargo build --release -q -p flashgate
  FG=target/release/flashgate
fi
source loadtests/lib.sh
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # A node ignores SIGTERM for its shutdown grace period: stop it outright.
  for f in "$work"/*.pid; do [ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$work"
}

ORIGIN=$(port)
taskset -c 0 $FG shop --listen 127.0.0.1:$ORIGIN >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:$ORIGIN/healthz

node() { # name events-table
  local p a; p=$(port); a=$(port)
  events_node_toml "$p" "$a" "$ORIGIN" "$2" > "$work/$1.toml"
  RUST_LOG=warn setsid taskset -c 1 $FG run -c "$work/$1.toml" >/dev/null 2>&1 & pids+=($!)
  echo $! > "$work/$1.pid"
  echo "$a" > "$work/$1.admin"
  wait_http http://127.0.0.1:$a/healthz
  wait_http http://127.0.0.1:$p/.flashgate/assets/waiting.css
  curl -s -o /dev/null -X PATCH -d '{"paused": true}' http://127.0.0.1:$a/api/rooms/join
  echo "$p"
}
case "$SINK" in
  file) EVENTS="[events]
sink = \"file\"
path = \"$work/events.jsonl\"
max_bytes = 67108864
keep_files = 1
${EVENTS_EXTRA:-}" ;;
  redis | redis-unix)
    if [ -n "${REDIS_URL:-}" ]; then
      # A Redis you run (on another host, say): nothing started here, no Redis CPU reported.
      url=$REDIS_URL
    else
    REDIS=$(port)
    sched=(chrt --idle 0); [ "${REDIS_SCHED:-idle}" = normal ] && sched=()
    # Not in a session of its own: with autogroup scheduling a session is a group, and
    # SCHED_IDLE ranks a task only within its group, so Redis would compete with the load
    # generators (this script's group) as an equal (measured: the "on" node's worker then went
    # idle 2.3 times per 1000 arrivals against the "off" node's 1.3–1.5, arrivals 0.950–0.953).
    "${sched[@]}" taskset -c "${REDIS_CPU:-0}" redis-server --port "$REDIS" --bind 127.0.0.1 --unixsocket "$work/redis.sock" \
      --save "" --appendonly no >/dev/null 2>&1 & pids+=($!)
    for _ in $(seq 1 200); do redis-cli -p "$REDIS" ping >/dev/null 2>&1 && break; sleep 0.05; done
    url="redis://127.0.0.1:$REDIS"; [ "$SINK" = redis-unix ] && url="unix://$work/redis.sock"
    fi
    EVENTS="[events]
sink = \"redis\"
url = \"$url\"
maxlen = 100000
${EVENTS_EXTRA:-}" ;;
  *) echo "events-bench: SINK is file, redis or redis-unix" >&2; exit 2 ;;
esac

pass_for() { for _ in $(seq 1 100); do
  local c; c=$(curl -s -o /dev/null -D - "http://127.0.0.1:$1/healthz" | sed -n 's/^set-cookie: \(fg_p_bench=[^;]*\).*/\1/ip' | head -1)
  [ -n "$c" ] && { echo "$c"; return; }; sleep 0.05; done; echo "events-bench: no pass" >&2; exit 1; }
stop_node() { kill -9 "$(cat "$work/$1.pid")" 2>/dev/null || true; rm -f "$work/$1.pid"; }
# Sum of a counter family on a node's /metrics.
metric() { curl -s "http://127.0.0.1:$(cat "$work/$1.admin")/metrics" | awk -v m="$2" 'index($0, m) == 1 {n += $NF} END {print n + 0}'; }
pid_of() { cat "$work/$1.pid"; }
# Nanoseconds of CPU the process's threads have run (the scheduler's own account, exact; the
# ticks in /proc/PID/stat are sampled and miss short bursts such as a delivery batch). With a
# name, only the threads of that name ("BG events": the events service's runtime).
cpu_ns() {
  local t n=0
  for t in /proc/$1/task/*; do
    if [ -z "${2:-}" ] || [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ]; then
      n=$((n + $(awk '{print $1}' "$t/schedstat" 2>/dev/null || echo 0)))
    fi
  done
  echo $n
}

# Times the named threads of process $1 went to sleep of their own accord (for a worker: waiting
# in epoll for more requests, i.e. its load generator fell behind).
sleeps() {
  local t n=0
  for t in /proc/$1/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ] || continue
    n=$((n + $(awk '/^voluntary_ctxt_switches/{print $2}' "$t/status" 2>/dev/null || echo 0)))
  done
  echo $n
}
# CPU 0's idle and total jiffies (the load generator's core; Redis runs there at idle priority).
cpu0() { awk '$1 == "cpu0" {t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t}' /proc/stat; }

declare -A rps cpu ratio_rps ratio_cpu
shares=""; busy=""; workers=""; lags=""; wrk_ratios=""; sleeps_on=""; sleeps_off=""; idle0=""
declare -A S
# snap TAG: both nodes' request counters, CPU (all threads, the events thread, the worker)
# and the "on" node's events delivered, at one moment.
snap() {
  local w pid
  S[$1_t]=$(date +%s%N)
  for w in off on; do
    S[$1_req_$w]=$(metric $w flashgate_requests_total)
  done
  S[$1_sent]=$(metric on flashgate_events_sent_total)
  for w in off on; do
    pid=$(pid_of $w); S[$1_cpu_$w]=$(cpu_ns "$pid"); S[$1_ev_$w]=$(cpu_ns "$pid" "BG events")
    S[$1_wk_$w]=$(cpu_ns "$pid" flashgate); S[$1_sl_$w]=$(sleeps "$pid" flashgate)
  done
  read -r S[$1_idle0] S[$1_all0] < <(cpu0)
}
pair() { # kind path
  local w port cookie args out
  declare -A o
  for w in off on; do
    port=$OFF; cookie="Cookie: $PASS_OFF"
    [ $w = on ] && { port=$ON; cookie="Cookie: $PASS_ON"; }
    args=(-t1 -c32 -d${DUR}s); [ "$1" = pass ] && args+=(-H "$cookie")
    taskset -c 0 wrk "${args[@]}" "http://127.0.0.1:$port$2" > "$work/wrk-$w.out" &
    o[$w]=$!
  done
  # The window: from 1 s after both load generators started to 1 s before they stop, so both
  # nodes are loaded throughout it; each node's own counters at the same two moments.
  sleep 1; snap a; sleep $((DUR - 2)); snap b
  wait "${o[off]}" "${o[on]}"
  local d n secs total=0
  declare -A R C W N
  secs=$(awk -v a="${S[a_t]}" -v b="${S[b_t]}" 'BEGIN{print (b - a) / 1e9}')
  for w in off on; do
    n=$(( ${S[b_req_$w]} - ${S[a_req_$w]} )); N[$w]=$n
    d=$(( ${S[b_cpu_$w]} - ${S[a_cpu_$w]} )); total=$((total + d))
    R[$w]=$(awk -v n="$n" -v s="$secs" 'BEGIN{printf "%.1f", n / s}')
    C[$w]=$(awk -v d="$d" -v n="$n" 'BEGIN{printf "%.3f", d / 1000 / n}')
    W[$w]=$(awk -v d="$(( ${S[b_wk_$w]} - ${S[a_wk_$w]} ))" -v n="$n" 'BEGIN{printf "%.3f", d / 1000 / n}')
    rps[$1_$w]+="${R[$w]} "; cpu[$1_$w]+="${C[$w]} "
  done
  if [ "$1" = arrival ]; then
    shares+="$(awk -v a="$(( ${S[b_ev_on]} - ${S[a_ev_on]} ))" -v b="$(( ${S[b_cpu_on]} - ${S[a_cpu_on]} ))" 'BEGIN{printf "%.4f", b ? a / b : 0}') "
    # The window's arrivals less the events delivered in it: the backlog the window left
    # (its delivery's CPU is not in the window's account; a Redis that fell behind would
    # flatter the "on" node).
    lags+="$(awk -v n="${N[on]}" -v d="$(( ${S[b_sent]} - ${S[a_sent]} ))" 'BEGIN{printf "%.4f", n ? (n - d) / n : 0}') "
    workers+="$(awk -v a="${W[on]}" -v b="${W[off]}" 'BEGIN{printf "%.4f", a / b}') "
    for w in off on; do
      local sl; sl=$(awk -v s="$(( ${S[b_sl_$w]} - ${S[a_sl_$w]} ))" -v n="${N[$w]}" 'BEGIN{printf "%.2f", n ? s * 1000 / n : 0}')
      if [ $w = on ]; then sleeps_on+="$sl "; else sleeps_off+="$sl "; fi
    done
    idle0+="$(awk -v i="$(( ${S[b_idle0]} - ${S[a_idle0]} ))" -v t="$(( ${S[b_all0]} - ${S[a_all0]} ))" 'BEGIN{printf "%.3f", t ? i / t : 0}') "
  fi
  # Both nodes together should keep CPU 1 busy; if not, the load generator was the limit.
  busy+="$(awk -v t="$total" -v s="$secs" 'BEGIN{printf "%.3f", t / 1e9 / s}') "
  ratio_rps[$1]+="$(awk -v a="${R[on]}" -v b="${R[off]}" 'BEGIN{printf "%.4f", a / b}') "
  ratio_cpu[$1]+="$(awk -v a="${C[on]}" -v b="${C[off]}" 'BEGIN{printf "%.4f", a / b}') "
  # wrk's own figures, for comparison: each over its own run (their starts and ends differ).
  local r_on r_off
  r_off=$(awk '/Requests\/sec/{print $2}' "$work/wrk-off.out"); r_on=$(awk '/Requests\/sec/{print $2}' "$work/wrk-on.out")
  [ "$1" = arrival ] && wrk_ratios+="$(awk -v a="$r_on" -v b="$r_off" 'BEGIN{printf "%.4f", a / b}') "
  echo "  $1: off ${R[off]} req/s ${C[off]} µs CPU/req | on ${R[on]} req/s ${C[on]} µs CPU/req (wrk: off $r_off, on $r_on req/s)"
}
[ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)" = 1 ] ||
  echo "events-bench: autogroup scheduling is off: the core is shared per thread, which favours the 'on' node slightly" >&2
sent=0; dropped=0
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  if [ $((r % 2)) = 1 ]; then OFF=$(node off ""); ON=$(node on "$EVENTS")
  else ON=$(node on "$EVENTS"); OFF=$(node off ""); fi
  PASS_OFF=$(pass_for "$OFF"); PASS_ON=$(pass_for "$ON")
  pair pass /healthz
  pair arrival /products
  # Delivery lags by at most the linger time; give it a moment, then read the counters.
  sleep 0.5
  sent=$((sent + $(metric on flashgate_events_sent_total)))
  dropped=$((dropped + $(metric on flashgate_events_dropped_total)))
  stop_node on; stop_node off
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
range() { tr ' ' '\n' | grep -v '^$' | sort -g | awk 'NR==1{lo=$1} {hi=$1} END{printf "%s–%s", lo, hi}'; }
echo
echo "| request | off req/s | on req/s | on / off (range) | off µs CPU/req | on µs CPU/req | on / off (range) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for k in pass arrival; do
  echo "| $k | $(echo "${rps[${k}_off]}" | median) | $(echo "${rps[${k}_on]}" | median) | **$(echo "${ratio_rps[$k]}" | median)** ($(echo "${ratio_rps[$k]}" | range)) | $(echo "${cpu[${k}_off]}" | median) | $(echo "${cpu[${k}_on]}" | median) | **$(echo "${ratio_cpu[$k]}" | median)** ($(echo "${ratio_cpu[$k]}" | range)) |"
done
echo
echo "$SINK sink; medians of $ROUNDS rounds of ${DUR}s; ratios are per round (both nodes loaded together), then the median"
echo "events delivered by the 'on' nodes: $sent, dropped: $dropped"
echo "share of the 'on' node's CPU used by the events service's thread during arrivals: $(echo "$shares" | median | awk '{printf "%.1f %%", $1 * 100}')"
echo "the worker thread's own CPU/req during arrivals, on / off: $(echo "$workers" | median) ($(echo "$workers" | range)) — the request path's events code is the same for every sink"
echo "times a worker went idle (waited for requests) per 1000 arrivals: on $(echo "$sleeps_on" | median) ($(echo "$sleeps_on" | range)), off $(echo "$sleeps_off" | median) ($(echo "$sleeps_off" | range)) — more on the 'on' node means its load generator fell behind"
echo "CPU 0 (load generators, origin, Redis) idle during arrivals: $(echo "$idle0" | range)"
echo "arrivals on / off as wrk counts them (each over its own run): $(echo "$wrk_ratios" | median) ($(echo "$wrk_ratios" | range))"
echo "arrivals whose event was not yet delivered when the window closed: at most $(echo "$lags" | tr ' ' '\n' | grep -v '^$' | sort -g | tail -1 | awk '{printf "%.2f %%", $1 * 100}') of a window's"
if [ -n "${REDIS:-}" ]; then
  # Redis's own CPU (its whole life: start-up and idle ticks included) per event it stored.
  echo "redis-server CPU per event delivered: $(redis-cli -p "$REDIS" info cpu | tr -d '\r' |
    awk -F: -v n="$sent" '/^used_cpu_(user|sys):/{t += $2} END{printf "%.2f µs", n ? t * 1e6 / n : 0}')"
fi
echo "CPU 1 busy (both nodes, of one core): $(echo "$busy" | range) — below ~0.95 the load generator, not the nodes, was the limit"
