#!/usr/bin/env bash
# What a request from an admitted shopper costs, counted in instructions rather than timed: a
# Flashgate node forwarding requests that carry a valid pass, and a bare Pingora pass-through
# (loadtests `bare-pingora`), each under valgrind's callgrind while loadtests `rate` sends N
# requests to the demo shop's /healthz through it. Instruction counts do not move with the
# machine's load; they count user space only (the kernel's share of a request — accept, reads,
# writes — is the same for both proxies and is not in them).
#
#   loadtests/pass-callgrind.sh [REQUESTS] [RATE]     (default 6000 at 300/s)
#
# FLASHGATE_BIN=path/to/flashgate profiles another build. KIND=status profiles a waiting
# shopper's status poll instead (`/.flashgate/status` with a ticket; the room paused). Keeps
# the dumps in target/callgrind-<KIND>/ for `callgrind_annotate --inclusive=yes`.
# Needs valgrind (apt-get install valgrind). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtests/lib.sh
callgrind_setup "$@"
FG_BIN="${FLASHGATE_BIN:-$BIN/flashgate}"
KIND="${KIND:-pass}"
keep=target/callgrind-$KIND
mkdir -p "$keep"

# profile NAME PORT CMD...: callgrind around N requests (after a warm-up) to PORT/healthz.
profile() {
  local name=$1 p=$2; shift 2
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/cg-$name.out" "$@" \
    >"$work/$name.log" 2>&1 & local vp=$!; pids+=($vp)
  wait_http "http://127.0.0.1:$p/healthz" 800
  local hdr=() url="http://127.0.0.1:$p/healthz"
  [ -n "${PASS:-}" ] && [ "$name" = flashgate ] && hdr=(-H "Cookie: $PASS")
  if [ "$KIND" = status ] && [ "$name" = flashgate ]; then
    curl -s -o /dev/null -X PATCH -d '{"paused": true}' "http://127.0.0.1:$A/api/rooms/bench"
    local ticket
    ticket=$(curl -s -o /dev/null -D - -H 'Accept: application/json' "$url" | sed -n 's/^set-cookie: \(fg_t_bench=[^;]*\).*/\1/ip' | head -1)
    hdr=(-H "Cookie: $ticket"); url="http://127.0.0.1:$p/.flashgate/status?room=bench"
  fi
  $BIN/rate "$url" "${hdr[@]}" --rate "$RATE" --duration 3s --warmup 0s -c 8 >/dev/null
  callgrind_control -z $vp >/dev/null
  local secs; secs=$(awk -v n="$N" -v r="$RATE" 'BEGIN{printf "%d", n / r}')
  local got
  got=$($BIN/rate "$url" "${hdr[@]}" --rate "$RATE" --duration "${secs}s" --warmup 0s -c 8 | sed -n 's/.* ok=\([0-9]*\).*/\1/p')
  callgrind_control -d $vp >/dev/null
  # SIGINT: Pingora's fast shutdown (SIGTERM waits out the grace period, under valgrind long).
  kill -INT $vp; wait $vp 2>/dev/null || true
  cp "$work/cg-$name.out.1" "$keep/$name.out"
  local sum; sum=$(awk '/^summary:|^totals:/{print $2; exit}' "$work/cg-$name.out.1")
  per[$name]=$(awk -v s="$sum" -v n="$got" 'BEGIN{printf "%.0f", s / n}')
  echo "$name: $got requests, $sum instructions, ${per[$name]} per request"
}

declare -A per
B=$(port)
profile bare "$B" $BIN/bare-pingora --listen 127.0.0.1:$B --upstream 127.0.0.1:$ORIGIN --threads 1

F=$(port); A=$(port)
events_node_toml "$F" "$A" "$ORIGIN" > "$work/node.toml"
# A pass for room "bench" (on /healthz): taken from a node without valgrind with the same key.
F2=$(port); A2=$(port)
events_node_toml "$F2" "$A2" "$ORIGIN" > "$work/node2.toml"
"$FG_BIN" run -c "$work/node2.toml" >/dev/null 2>&1 & n2=$!; pids+=($n2)
wait_http http://127.0.0.1:$A2/healthz
PASS=$(curl -s -o /dev/null -D - http://127.0.0.1:$F2/healthz | sed -n 's/^set-cookie: \(fg_p_bench=[^;]*\).*/\1/ip' | head -1)
kill $n2
[ -n "$PASS" ] || { echo "pass-callgrind: could not obtain a pass" >&2; exit 1; }
profile flashgate "$F" "$FG_BIN" run -c "$work/node.toml"

echo
echo "instructions per request, Flashgate ($KIND) / bare Pingora pass-through: $(awk -v a="${per[flashgate]}" -v b="${per[bare]}" 'BEGIN{printf "%.3f", a / b}') (callgrind, $N requests at $RATE/s)"
echo "where: callgrind_annotate --inclusive=yes $keep/flashgate.out | head -60"
