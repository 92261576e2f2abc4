#!/usr/bin/env bash
# Rehearse a Redis Cluster failover under a crowd, as proxy/tests/redis_ha/cluster.rs does:
# six redis-servers (3 masters + 3 replicas, cluster-node-timeout 1 s) joined with
# `redis-cli --cluster create`, the demo shop, two Flashgate nodes on the Cluster, and the
# `cluster-failover` crowd. While it runs:
#   1. at +10 s, CLUSTER FAILOVER on the replica of the master that holds room "drop";
#   2. at +25 s, that room's (new) master is killed and the Cluster promotes its replica.
# Prints the timeline, each node's store breaker changes and re-seeds, and the crowd's verdict
# (its report: loadtests/results/tmp/crowd-cluster-failover-*/report.md). Exit code: the crowd's.
#
#   loadtests/cluster-failover.sh            # release build
#   PROFILE=debug loadtests/cluster-failover.sh
#
# Loopback only; takes about 2 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release -q -p flashgate -p loadtests
else
  cargo build -q -p flashgate -p loadtests
fi
BIN="${CARGO_TARGET_DIR:-target}/$PROFILE"
source loadtests/lib.sh
t0=$(date +%s.%N)
say() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $t0" | bc)" "$*"; }

# Six cluster nodes.
ports=()
for i in 1 2 3 4 5 6; do
  p=$(port); bus=$(port); mkdir -p "$work/r$p"
  redis-server --port "$p" --cluster-port "$bus" --bind 127.0.0.1 --save "" --appendonly no \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
    --dir "$work/r$p" --logfile "$work/r$p/redis.log" & pids+=($!)
  ports+=("$p")
done
for p in "${ports[@]}"; do
  for _ in $(seq 1 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 1 --cluster-yes >/dev/null
for _ in $(seq 1 200); do
  ok=1
  for p in "${ports[@]}"; do
    redis-cli -p "$p" cluster info | grep -q cluster_state:ok || ok=0
    redis-cli -p "$p" info replication | grep -Eq 'role:master|master_link_status:up' || ok=0
  done
  [ $ok = 1 ] && break; sleep 0.1
done
say "cluster up: ${ports[*]}"
seeds=$(printf 'redis://127.0.0.1:%s,' "${ports[@]}"); seeds=${seeds%,}

# Who serves room "drop" (its keys' slot), and its replica.
slot=$(redis-cli -p "${ports[0]}" cluster keyslot '{fg:drop}:issued')
owner() { # port of the master serving $slot, as a live node sees it
  for p in "${ports[@]}"; do
    out=$(redis-cli -p "$p" cluster nodes 2>/dev/null) || continue
    echo "$out" | awk -v s="$slot" '$3 ~ /master/ && $3 !~ /fail/ {
      for (i = 9; i <= NF; i++) { split($i, r, "-"); if (r[2] == "") r[2] = r[1];
        if (s >= r[1] && s <= r[2]) { split($2, a, "[:@]"); print a[2]; exit } } }'
    return
  done
}
replica_of() { # port of a replica of the master on port $1
  local id
  id=$(redis-cli -p "$1" cluster myid)
  redis-cli -p "$1" cluster nodes | awk -v id="$id" '$4 == id && $3 !~ /fail/ { split($2, a, "[:@]"); print a[2]; exit }'
}

# The shop and two nodes.
ORIGIN=$(port)
$BIN/flashgate shop --listen 127.0.0.1:$ORIGIN >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:$ORIGIN/healthz
targets=(); admins=()
for n in 1 2; do
  L=$(port); A=$(port)
  { node_head_toml "$L" "$A"; cat <<TOML
[store]
kind = "redis"
url = "$seeds"
cluster = true
snapshot_interval = "100ms"
[upstreams.shop]
servers = ["127.0.0.1:$ORIGIN"]
[[rooms]]
id = "drop"
paths = ["/"]
new_users_per_minute = 1800
total_active_users = 600
session_duration = "2m"
poll_interval = "1s"
abandon_after = "30s"
claim_window = "10s"
on_store_error = "queue"
queueing_status_code = 202
TOML
  } > "$work/node$n.toml"
  $BIN/flashgate run -c "$work/node$n.toml" > "$work/node$n.log" 2>&1 & pids+=($!)
  wait_http "http://127.0.0.1:$A/readyz"
  targets+=(--target "http://127.0.0.1:$L"); admins+=(--admin "http://127.0.0.1:$A")
done
say "nodes up; room drop is on slot $slot, master $(owner)"

$BIN/crowd loadtests/scenarios/cluster-failover.toml "${targets[@]}" "${admins[@]}" --quiet \
  > "$work/crowd.out" 2>&1 & crowd=$!
sleep 10
m=$(owner); r=$(replica_of "$m")
say "1. CLUSTER FAILOVER on $r (replica of master $m)"
redis-cli -p "$r" cluster failover >/dev/null
until [ "$(owner)" = "$r" ]; do sleep 0.05; done
say "   $r serves slot $slot"
sleep 15
m=$(owner); r=$(replica_of "$m")
for i in "${!ports[@]}"; do [ "${ports[$i]}" = "$m" ] && victim=$i; done
say "2. killing master $m (its replica is $r)"
redis-cli -p "$m" shutdown nosave >/dev/null 2>&1 || true
until [ "$(owner)" = "$r" ]; do sleep 0.05; done
say "   $r promoted, serves slot $slot"

status=0; wait $crowd || status=$?
say "crowd finished (exit $status)"
tail -n 25 "$work/crowd.out"
for n in 1 2; do
  A=$(sed -n 's/^admin_listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$work/node$n.toml")
  echo "node $n:"
  curl -s "http://127.0.0.1:$A/metrics" | grep -E '^flashgate_store_(mode_changes_total|reseeds_total|errors_total)' || true
  echo "  error lines: $(grep -cE ' ERROR |panicked' "$work/node$n.log" || true)"
done
exit $status
