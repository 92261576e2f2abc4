#!/usr/bin/env bash
# One benchmark run, one machine, interleaved rounds. At saturation (wrk, closed loop):
#   origin direct, nginx proxy_pass (keepalive upstream), a bare Pingora pass-through,
#   Flashgate with a valid pass, Flashgate answering a waiting-room status poll,
#   Flashgate issuing a ticket to a new arrival (memory store, and Redis), and a cached catalog
#   page from Flashgate's origin shield against nginx proxy_cache.
# At a fixed rate (loadtests `rate`, open loop, latency from the scheduled send time so a stall
#   is not hidden): nginx, bare Pingora, Flashgate pass, status poll and new arrivals; and the
#   cached catalog page while the origin takes 2 s per request (Flashgate's shield and nginx
#   proxy_cache, each in front of its own slow origin).
# Prints req/s, p50/p99 latency and ratios, and writes loadtests/results/<date>.md.
#
#   loadtests/bench.sh [DURATION_SECONDS] [ROUNDS] [FIXED_RATE]   (default 10 s, 3 rounds, 2000/s)
#
# FLASHGATE_BIN_BASE=path/to/flashgate adds a node of that build (memory store, the same config
# and key) and its pass, status-poll and new-arrival rows (`base_*`), interleaved with this
# build's in every round: compare two builds in one run. ONLY="bare_pingora flashgate_pass ..."
# runs just those saturation rows (and no fixed-rate rows). SHOP_BIN_BASE=path/to/flashgate adds
# that build's demo shop as `base_origin` (the origin's direct row of two builds).
#
# Everything listens on 127.0.0.1 only; every proxy gets one worker thread; wrk uses one thread
# and 32 connections. With two or more cores the proxies (nginx, bare Pingora, the Flashgate
# nodes, with all their threads) are pinned to CPU 1 and the load generators, origins and Redis
# to CPU 0, so that every proxy gets one core of its own; compare the ratios measured in the same
# run, not absolute numbers across machines.
# With the defaults a run takes about 8 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-10}"
ROUNDS="${2:-3}"
FIXED="${3:-2000}"
CONNS=32

scripts/setup.sh bench
cargo build --release -q -p flashgate -p loadtests
BIN=target/release
source loadtests/lib.sh

load() { cut -d' ' -f1-3 /proc/loadavg; }
# "${on_load[@]}" CMD / "${on_proxy[@]}" CMD: run CMD on the load generators' CPU or on the
# proxies' CPU (taskset execs CMD, so `$!` is CMD's pid).
if [ "$(nproc)" -ge 2 ]; then
  on_load=(taskset -c 0); on_proxy=(taskset -c 1)
  pinning="proxies pinned to CPU 1; wrk, rate, origins and Redis to CPU 0"
else
  on_load=(); on_proxy=()
  pinning="one CPU: nothing pinned"
fi
load_start=$(load)

ORIGIN=$(port); NGINX=$(port); BARE=$(port); FG=$(port); ADMIN=$(port)
FGR=$(port); ADMINR=$(port); REDIS=$(port)
SLOW=$(port); NGINXS=$(port); FGS=$(port); ADMINS=$(port)
FGB=$(port); ADMINB=$(port)
SLOW_MS=2000

"${on_load[@]}" $BIN/flashgate shop --listen 127.0.0.1:$ORIGIN >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:$ORIGIN/healthz
# SHOP_BIN_BASE=path/to/flashgate: that build's demo shop too (`base_origin`, right after
# `origin` in every round): compare the benchmark origin of two builds.
if [ -n "${SHOP_BIN_BASE:-}" ]; then
  ORIGINB=$(port)
  "${on_load[@]}" "$SHOP_BIN_BASE" shop --listen 127.0.0.1:$ORIGINB >/dev/null 2>&1 & pids+=($!)
  wait_http http://127.0.0.1:$ORIGINB/healthz
fi
# The slow origin: the same shop, every response delayed by SLOW_MS.
"${on_load[@]}" $BIN/flashgate shop --listen 127.0.0.1:$SLOW --latency-ms $SLOW_MS >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:$SLOW/healthz

# nginx: proxy_pass for the pass-through rows; proxy_cache on /products for the cache row,
# configured like Flashgate's shield (origin's max-age, one fetch per miss, stale while
# revalidating in the background).
# nginx's worker runs as an unprivileged user: let it into the scratch directory and the cache.
mkdir -p "$work/nginx-cache"
chmod 755 "$work"
chmod 777 "$work/nginx-cache"
# The cache directives shared by both cached locations.
NGINX_CACHE='proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache shop; proxy_cache_lock on; proxy_cache_use_stale updating error timeout;
      proxy_cache_background_update on; add_header X-Cache-Status $upstream_cache_status;'
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  proxy_cache_path $work/nginx-cache keys_zone=shop:10m max_size=256m;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location /products {
      proxy_pass http://origin;
      $NGINX_CACHE
    }
  }
  upstream slow { server 127.0.0.1:$SLOW; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINXS;
    location /products {
      proxy_pass http://slow;
      $NGINX_CACHE
    }
  }
}
NGINX
"${on_proxy[@]}" nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)
wait_http http://127.0.0.1:$NGINX/healthz

"${on_proxy[@]}" $BIN/bare-pingora --listen 127.0.0.1:$BARE --upstream 127.0.0.1:$ORIGIN --threads 1 >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:$BARE/healthz

"${on_load[@]}" redis-server --port $REDIS --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 100); do redis-cli -p $REDIS ping >/dev/null 2>&1 && break; sleep 0.05; done

# Two nodes, one thread each, the same room: one on the memory store, one on Redis.
fg_config() { # listen admin store-body origin room-paths
  node_head_toml "$1" "$2"
  cat <<TOML
[store]
$3
[cache]
[upstreams.shop]
servers = ["127.0.0.1:$4"]
[[routes]]
path = "/"
upstream = "shop"
[[routes]]
path = "/products"
upstream = "shop"
kind = "catalog"
[[rooms]]
id = "bench"
paths = $5
new_users_per_minute = 600
total_active_users = 100000
session_duration = "1h"
TOML
}
# The room covers /healthz only on the memory and slow-origin nodes, so that their catalog
# (/products) is compared with nginx like for like; on the Redis node it covers the whole shop,
# so that its catalog hit also verifies the shopper's pass (the \`flashgate_cache_pass\` row).
fg_config $FG $ADMIN 'kind = "memory"' $ORIGIN '["/healthz"]' > "$work/flashgate.toml"
fg_config $FGR $ADMINR "kind = \"redis\"
url = \"redis://127.0.0.1:$REDIS\"" $ORIGIN '["/"]' > "$work/flashgate-redis.toml"
fg_config $FGS $ADMINS 'kind = "memory"' $SLOW '["/healthz"]' > "$work/flashgate-slow.toml"
RUST_LOG=warn "${on_proxy[@]}" $BIN/flashgate run -c "$work/flashgate.toml" >/dev/null 2>"$work/flashgate.log" & pids+=($!)
RUST_LOG=warn "${on_proxy[@]}" $BIN/flashgate run -c "$work/flashgate-redis.toml" >/dev/null 2>"$work/flashgate-redis.log" & pids+=($!)
RUST_LOG=warn "${on_proxy[@]}" $BIN/flashgate run -c "$work/flashgate-slow.toml" >/dev/null 2>"$work/flashgate-slow.log" & pids+=($!)
admins=($ADMIN $ADMINR $ADMINS); listens=($FG $FGR $FGS)
if [ -n "${FLASHGATE_BIN_BASE:-}" ]; then
  fg_config $FGB $ADMINB 'kind = "memory"' $ORIGIN '["/healthz"]' > "$work/flashgate-base.toml"
  RUST_LOG=warn "${on_proxy[@]}" "$FLASHGATE_BIN_BASE" run -c "$work/flashgate-base.toml" >/dev/null 2>"$work/flashgate-base.log" & pids+=($!)
  admins+=($ADMINB); listens+=($FGB)
fi
for a in "${admins[@]}"; do wait_http http://127.0.0.1:$a/healthz; done
for p in "${listens[@]}"; do wait_http http://127.0.0.1:$p/.flashgate/assets/waiting.css; done

# A pass: the room is idle, so the first request is admitted and gets one.
for _ in $(seq 1 100); do
  PASS=$(curl -s -o /dev/null -D - http://127.0.0.1:$FG/healthz | sed -n 's/^set-cookie: \(fg_p_bench=[^;]*\).*/\1/ip' | head -1)
  [ -n "$PASS" ] && break; sleep 0.05
done
[ -n "$PASS" ] || { echo "bench: could not obtain a pass" >&2; exit 1; }
# Pause both rooms: every request without a token now gets a new ticket (and waits), and a
# waiting ticket is kept for the status poll.
curl -s -o /dev/null -X PATCH -d '{"paused": true}' http://127.0.0.1:$ADMIN/api/rooms/bench
curl -s -o /dev/null -X PATCH -d '{"paused": true}' http://127.0.0.1:$ADMINR/api/rooms/bench
[ -n "${FLASHGATE_BIN_BASE:-}" ] && curl -s -o /dev/null -X PATCH -d '{"paused": true}' http://127.0.0.1:$ADMINB/api/rooms/bench
TICKET=$(curl -s -o /dev/null -D - -H 'Accept: application/json' http://127.0.0.1:$FG/healthz | sed -n 's/^set-cookie: \(fg_t_bench=[^;]*\).*/\1/ip' | head -1)
[ -n "$TICKET" ] || { echo "bench: could not obtain a ticket" >&2; exit 1; }
issued=$(curl -s -o /dev/null -D - http://127.0.0.1:$FGR/healthz | grep -ci '^set-cookie: fg_t_bench=' || true)
[ "$issued" = 1 ] || { echo "bench: the Redis node issued no ticket" >&2; cat "$work/flashgate-redis.log" >&2; exit 1; }

names=(origin nginx bare_pingora flashgate_pass flashgate_status flashgate_arrival_memory flashgate_arrival_redis)
declare -A url hdr rps p50 p99 reqs
url[origin]=http://127.0.0.1:$ORIGIN/healthz;            hdr[origin]=""
url[base_origin]=http://127.0.0.1:${ORIGINB:-0}/healthz;  hdr[base_origin]=""
url[nginx]=http://127.0.0.1:$NGINX/healthz;              hdr[nginx]=""
url[bare_pingora]=http://127.0.0.1:$BARE/healthz;        hdr[bare_pingora]=""
url[flashgate_pass]=http://127.0.0.1:$FG/healthz;        hdr[flashgate_pass]="Cookie: $PASS"
url[flashgate_status]="http://127.0.0.1:$FG/.flashgate/status?room=bench"; hdr[flashgate_status]="Cookie: $TICKET"
url[flashgate_arrival_memory]=http://127.0.0.1:$FG/healthz;  hdr[flashgate_arrival_memory]=""
url[flashgate_arrival_redis]=http://127.0.0.1:$FGR/healthz;  hdr[flashgate_arrival_redis]=""
url[nginx_cache]=http://127.0.0.1:$NGINX/products;       hdr[nginx_cache]=""
url[flashgate_cache]=http://127.0.0.1:$FG/products;      hdr[flashgate_cache]=""
url[flashgate_cache_pass]=http://127.0.0.1:$FGR/products; hdr[flashgate_cache_pass]="Cookie: $PASS"
url[nginx_cache_slow]=http://127.0.0.1:$NGINXS/products;  hdr[nginx_cache_slow]=""
url[flashgate_cache_slow]=http://127.0.0.1:$FGS/products; hdr[flashgate_cache_slow]=""
url[base_flashgate_pass]=http://127.0.0.1:$FGB/healthz;   hdr[base_flashgate_pass]="Cookie: $PASS"
url[base_flashgate_status]="http://127.0.0.1:$FGB/.flashgate/status?room=bench"; hdr[base_flashgate_status]="Cookie: $TICKET"
url[base_flashgate_arrival_memory]=http://127.0.0.1:$FGB/healthz; hdr[base_flashgate_arrival_memory]=""
if [ -n "${FLASHGATE_BIN_BASE:-}" ]; then
  # Each base row right after this build's, so the two see the same machine.
  names=(origin nginx bare_pingora flashgate_pass base_flashgate_pass flashgate_status base_flashgate_status
         flashgate_arrival_memory base_flashgate_arrival_memory flashgate_arrival_redis)
fi

# The cache rows only when both caches answer hits after a warm-up.
cache_note=""
for _ in 1 2 3; do
  curl -s -o /dev/null "${url[flashgate_cache]}"; curl -s -o /dev/null -H "Cookie: $PASS" "${url[flashgate_cache_pass]}"
  curl -s -o /dev/null "${url[nginx_cache]}"; sleep 0.2
done
fg_hit=$(curl -s -o /dev/null -D - "${url[flashgate_cache]}" | grep -ci '^x-flashgate-cache: hit' || true)
fg_hit_pass=$(curl -s -o /dev/null -D - -H "Cookie: $PASS" "${url[flashgate_cache_pass]}" | grep -ci '^x-flashgate-cache: hit' || true)
ng_hit=$(curl -s -o /dev/null -D - "${url[nginx_cache]}" | grep -ci '^x-cache-status: hit' || true)
if [ "$fg_hit" = 1 ] && [ "$ng_hit" = 1 ]; then
  names+=(nginx_cache flashgate_cache)
  if [ "$fg_hit_pass" = 1 ]; then names+=(flashgate_cache_pass); fi
elif [ "$fg_hit" != 1 ]; then
  cache_note="cache not wired yet: no \`X-Flashgate-Cache: hit\` on /products after a warm-up; the cache rows were skipped."
  echo "bench: $cache_note"
else
  cache_note="nginx proxy_cache gave no HIT on /products after a warm-up; the cache rows were skipped."
  echo "bench: $cache_note"
fi

# Open-loop rows at $FIXED req/s.
fixed_names=(nginx bare_pingora flashgate_pass flashgate_status flashgate_arrival_memory flashgate_arrival_redis)

# The slow-origin rows once both caches hold /products (each first fetch takes SLOW_MS). The
# origin says max-age=5: during every run both caches go stale several times and must refresh
# in the background while answering from the stale copy.
slow_note=""
for _ in 1 2 3; do
  curl -s -o /dev/null "${url[flashgate_cache_slow]}" & c=$!
  curl -s -o /dev/null "${url[nginx_cache_slow]}"; wait $c
done
fg_hit=$(curl -s -o /dev/null -D - "${url[flashgate_cache_slow]}" | grep -ci '^x-flashgate-cache: \(hit\|stale\)' || true)
ng_hit=$(curl -s -o /dev/null -D - "${url[nginx_cache_slow]}" | grep -ci '^x-cache-status: \(hit\|updating\|stale\)' || true)
if [ "$fg_hit" = 1 ] && [ "$ng_hit" = 1 ]; then
  fixed_names+=(nginx_cache_slow flashgate_cache_slow)
else
  slow_note="the slow-origin cache rows were skipped: no cached answer after a warm-up (flashgate $fg_hit, nginx $ng_hit)."
  echo "bench: $slow_note"
fi
if [ -n "${SHOP_BIN_BASE:-}" ]; then names=(origin base_origin "${names[@]:1}"); fi
if [ -n "${ONLY:-}" ]; then read -r -a names <<<"$ONLY"; fixed_names=(); fi
declare -A f50 f99 f999 fmax fach slow_bad slow_stale

# Converts wrk's latency ("812.00us", "1.20ms", "2.1s") to microseconds.
to_us() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us/,"",v); print v+0} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000000} else print v }'; }
kv() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
redis_scripts() { redis-cli -p $REDIS info commandstats | awk -F'[:,=]' '/^cmdstat_(evalsha|eval|script)/ {n += $3} END {print n+0}'; }
redis_calls=0; redis_arrivals=0

for r in $(seq 1 "$ROUNDS"); do
  for n in "${names[@]}"; do
    args=(-t1 -c$CONNS -d${DUR}s --latency)
    [ -n "${hdr[$n]}" ] && args+=(-H "${hdr[$n]}")
    [ "$n" = flashgate_arrival_redis ] && before=$(redis_scripts)
    out=$("${on_load[@]}" wrk "${args[@]}" "${url[$n]}")
    if echo "$out" | grep -q "Non-2xx"; then echo "bench: $n answered non-2xx:"; echo "$out"; exit 1; fi
    if [ "$n" = flashgate_arrival_redis ]; then
      redis_calls=$((redis_calls + $(redis_scripts) - before))
      redis_arrivals=$((redis_arrivals + $(echo "$out" | awk '/requests in/{print $1}')))
    fi
    rps[$n]+="$(echo "$out" | awk '/Requests\/sec/{print $2}') "
    p50[$n]+="$(to_us "$(echo "$out" | awk '$1=="50%"{print $2}')") "
    p99[$n]+="$(to_us "$(echo "$out" | awk '$1=="99%"{print $2}')") "
    echo "round $r  $n: $(echo "$out" | awk '/Requests\/sec/{print $2}') req/s"
  done
  for n in "${fixed_names[@]}"; do
    args=(--rate "$FIXED" --duration ${DUR}s --warmup 1s -c $CONNS --label "$n")
    [ -n "${hdr[$n]}" ] && args+=(-H "${hdr[$n]}")
    # A hot catalog: fill the cache right before the run (the run outlasts max-age, so it
    # crosses expiries and background refreshes; a cold miss would wait for the origin). The
    # fill is made by `rate` itself: the shop's pages say `Vary: Accept`, and a request with
    # other headers (curl sends `Accept: */*`) would fill another variant, leaving the run to
    # start with a cold miss (a ~1 s stall in the first round, in both caches).
    case "$n" in *_slow)
      warm=(--rate 10 --duration 3s --warmup 0s -c 1)
      [ -n "${hdr[$n]}" ] && warm+=(-H "${hdr[$n]}")
      "${on_load[@]}" $BIN/rate "${url[$n]}" "${warm[@]}" >/dev/null ;;
    esac
    case "$n" in
      flashgate_cache_slow) args+=(--count-header "X-Flashgate-Cache: stale") ;;
      nginx_cache_slow) args+=(--count-header "X-Cache-Status: UPDATING") ;;
    esac
    out=$("${on_load[@]}" $BIN/rate "${url[$n]}" "${args[@]}")
    case "$n" in *_slow)
      slow_bad[$n]=$(( ${slow_bad[$n]:-0} + $(kv "$out" errors) + $(kv "$out" non_2xx_3xx) ))
      slow_stale[$n]=$(( ${slow_stale[$n]:-0} + $(kv "$out" header_hits) )) ;;
    esac
    f50[$n]+="$(kv "$out" p50_us) "; f99[$n]+="$(kv "$out" p99_us) "; f999[$n]+="$(kv "$out" p999_us) "
    fmax[$n]+="$(kv "$out" max_us) "; fach[$n]+="$(kv "$out" achieved_rps) "
    echo "round $r  $n at $FIXED/s: p50 $(kv "$out" p50_us) µs, p99 $(kv "$out" p99_us) µs"
  done
done
load_end=$(load)

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
declare -A m50 m99 mr
for n in "${names[@]}"; do
  mr[$n]=$(echo "${rps[$n]}" | median); m50[$n]=$(echo "${p50[$n]}" | median); m99[$n]=$(echo "${p99[$n]}" | median)
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "" || b == "" || b == 0) print "–"; else printf "%.2f", a/b }'; }
# round_ratios A B: the ratio of A's to B's req/s in each round, and their median (rows measured
# back to back in a round see the same machine; a median of ratios resists one noisy round).
round_ratios() {
  local a=(${rps[$1]}) b=(${rps[$2]}) r=() i
  for i in "${!a[@]}"; do r+=("$(ratio "${a[$i]}" "${b[$i]:-}")"); done
  echo "$(printf '%s ' "${r[@]}" | median) (rounds: ${r[*]})"
}
has() { [[ " ${names[*]} " == *" $1 "* ]]; }

date=$(date -u +%Y-%m-%d)
report=loadtests/results/$date.md
n=2; while [ -e "$report" ]; do report=loadtests/results/$date-$n.md; n=$((n + 1)); done
mkdir -p loadtests/results
{
  echo "# Benchmark $date"
  echo
  echo "\`loadtests/bench.sh $DUR $ROUNDS $FIXED\` on $(nproc) cores ($(uname -m)); $ROUNDS interleaved rounds,"
  echo "medians shown. Every proxy has one worker thread; $pinning."
  echo "Load average $load_start at the start, $load_end at the end."
  echo
  echo "## At saturation (wrk -t1 -c$CONNS, ${DUR} s a run)"
  echo
  echo "| target | req/s | p50 µs | p99 µs |"
  echo "|---|---:|---:|---:|"
  for n in "${names[@]}"; do echo "| $n | ${mr[$n]} | ${m50[$n]} | ${m99[$n]} |"; done
  echo
  echo "- \`flashgate_pass\`: a request with a valid pass, forwarded to the origin (\`/healthz\`)."
  echo "- \`flashgate_status\`: \`GET /.flashgate/status\` with a waiting ticket (answered by the node)."
  echo "- \`flashgate_arrival_*\`: a request without cookies to a paused room: a ticket is issued"
  echo "  (store call, batched on Redis) and the waiting page (HTML) is sent."
  if has flashgate_cache; then
    echo "- \`*_cache\`: \`/products\` (a catalog page, \`Cache-Control: max-age=5\`) from the proxy's cache;"
    echo "  on Flashgate outside any room, like nginx (no token to check)."
    echo "- \`flashgate_cache_pass\`: the same page inside a room: a cache hit that also verifies the"
    echo "  shopper's pass (HMAC) on every request."
  fi
  [ -n "$cache_note" ] && echo "- $cache_note"
  if [ "$redis_arrivals" -gt 0 ]; then
    echo
    echo "Redis script calls during \`flashgate_arrival_redis\`: $redis_calls for $redis_arrivals arrivals"
    echo "($(awk -v a="$redis_calls" -v b="$redis_arrivals" 'BEGIN{printf "%.4f", a/b}') per arrival, $CONNS arrivals in flight; background refreshes included)."
    echo "With a closed loop of $CONNS connections, each arrival waits for its batch (\`batch_window\`,"
    echo "2 ms) and one Redis round trip, so this row is latency-bound: $CONNS ÷ latency."
  fi
  echo
  echo "| ratio | value | target |"
  echo "|---|---:|---|"
  echo "| flashgate_pass / bare_pingora | $(ratio "${mr[flashgate_pass]}" "${mr[bare_pingora]}") | ≥ 0.90 |"
  echo "| flashgate_pass / nginx | $(ratio "${mr[flashgate_pass]}" "${mr[nginx]}") | ≥ 1.0 (moonshot) |"
  echo "| flashgate_status / flashgate_pass | $(ratio "${mr[flashgate_status]}" "${mr[flashgate_pass]}") | ≥ 2 |"
  echo "| flashgate_arrival_memory / flashgate_pass | $(ratio "${mr[flashgate_arrival_memory]}" "${mr[flashgate_pass]}") | |"
  echo "| flashgate_arrival_redis / flashgate_arrival_memory | $(ratio "${mr[flashgate_arrival_redis]}" "${mr[flashgate_arrival_memory]}") | |"
  if has base_origin; then
    echo "| origin / base_origin (the demo shop of SHOP_BIN_BASE; median of per-round ratios) | $(round_ratios origin base_origin) | ≥ 1 |"
  fi
  if has base_flashgate_pass; then
    echo
    echo "This build against FLASHGATE_BIN_BASE, the median of the per-round ratios:"
    echo
    echo "| ratio | median of rounds | target |"
    echo "|---|---|---|"
    echo "| flashgate_pass / bare_pingora | $(round_ratios flashgate_pass bare_pingora) | ≥ 0.90 |"
    echo "| base_flashgate_pass / bare_pingora | $(round_ratios base_flashgate_pass bare_pingora) | |"
    echo "| flashgate_pass / base_flashgate_pass | $(round_ratios flashgate_pass base_flashgate_pass) | |"
    echo "| flashgate_status / base_flashgate_status | $(round_ratios flashgate_status base_flashgate_status) | ≥ 1 |"
    echo "| flashgate_arrival_memory / base_flashgate_arrival_memory | $(round_ratios flashgate_arrival_memory base_flashgate_arrival_memory) | ≥ 1 |"
  fi
  if has flashgate_cache; then
    echo "| flashgate_cache / nginx_cache | $(ratio "${mr[flashgate_cache]}" "${mr[nginx_cache]}") | ≥ 1.0 |"
    if has flashgate_cache_pass; then
      echo "| flashgate_cache_pass / nginx_cache | $(ratio "${mr[flashgate_cache_pass]}" "${mr[nginx_cache]}") | |"
    fi
  fi
  echo
  echo "## At a fixed rate ($FIXED req/s, open loop, $CONNS connections, ${DUR} s a run)"
  echo
  echo "Latency from each request's scheduled send time (loadtests \`rate\`), so queueing behind"
  echo "a stall is counted. Medians of the rounds, microseconds."
  echo
  echo "| target | achieved req/s | p50 | p99 | p99.9 | max |"
  echo "|---|---:|---:|---:|---:|---:|"
  for n in "${fixed_names[@]}"; do
    echo "| $n | $(echo "${fach[$n]}" | median) | $(echo "${f50[$n]}" | median) | $(echo "${f99[$n]}" | median) | $(echo "${f999[$n]}" | median) | $(echo "${fmax[$n]}" | median) |"
  done
  if [[ " ${fixed_names[*]} " == *" flashgate_cache_slow "* ]]; then
    echo
    echo "- \`*_cache_slow\`: \`/products\` through a cache whose origin takes $SLOW_MS ms per request"
    echo "  (\`max-age=5\`, so every run crosses several expiries and background refreshes)."
    echo "  Answers served stale while a refresh was in flight, all rounds: Flashgate"
    echo "  ${slow_stale[flashgate_cache_slow]}, nginx ${slow_stale[nginx_cache_slow]} (\`UPDATING\`). Failed or non-2xx answers:"
    echo "  Flashgate ${slow_bad[flashgate_cache_slow]}, nginx ${slow_bad[nginx_cache_slow]}."
    echo
    echo "| slow origin | value | target |"
    echo "|---|---:|---|"
    echo "| flashgate_cache_slow p99 µs | $(echo "${f99[flashgate_cache_slow]}" | median) | < 10000 |"
    echo "| flashgate_cache_slow p99 / nginx_cache_slow p99 | $(ratio "$(echo "${f99[flashgate_cache_slow]}" | median)" "$(echo "${f99[nginx_cache_slow]}" | median)") | |"
  fi
  [ -n "$slow_note" ] && echo "- $slow_note"
} > "$report"
cat "$report"
