# Shared by the scripts in loadtests/ (source it from the project root): a scratch directory,
# child processes killed on exit, free loopback ports, waiting for a server to answer.
work=$(mktemp -d)
pids=()
# SIGINT: a fast shutdown (Pingora and nginx both stop at once; on SIGTERM Pingora waits out its
# grace period, and a bare Pingora was seen still running, spinning, minutes after a run).
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# A free TCP port on 127.0.0.1.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_http URL [TRIES]: polls every 50 ms (default 200 tries, 10 s); exits the script if none answers.
wait_http() {
  local _
  for _ in $(seq 1 "${2:-200}"); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "$(basename "$0" .sh): $1 did not come up" >&2
  exit 1
}
# callgrind_setup [COUNT] [RATE]: what the callgrind scripts need before they profile: N
# requests (default 6000) at RATE a second (default 300), valgrind, the demo's build
# dependencies, a release build of flashgate and loadtests (in BIN), and the demo shop on a
# free port (ORIGIN). Source this file from the project root first.
callgrind_setup() {
  N="${1:-6000}"
  RATE="${2:-300}"
  local me
  me=$(basename "$0" .sh)
  command -v valgrind >/dev/null || { echo "$me: needs valgrind (sudo apt-get install -y valgrind)" >&2; exit 1; }
  scripts/setup.sh demo
  cargo build --release -q -p flashgate -p loadtests
  BIN=target/release
  ORIGIN=$(port)
  $BIN/flashgate shop --listen 127.0.0.1:$ORIGIN >/dev/null 2>&1 & pids+=($!)
  wait_http http://127.0.0.1:$ORIGIN/healthz
}
# node_head_toml LISTEN_PORT ADMIN_PORT: the [server] and [keys] of every benchmark node — one
# worker thread and no access log (like nginx's 'access_log off': compare proxying, not log
# formatting), one shared signing key.
node_head_toml() {
  cat <<TOML
[server]
listen = ["127.0.0.1:$1"]
admin_listen = "127.0.0.1:$2"
threads = 1
access_log = false
[keys]
active = 1
[[keys.key]]
id = 1
secret = "benchmark-secret-benchmark-secret-0123456789"
TOML
}
# events_node_toml LISTEN_PORT ADMIN_PORT ORIGIN_PORT [EVENTS_TABLE]: the node config of the
# events benchmarks — one worker thread, no access log; room "bench" on /healthz (pass-through)
# and room "join" on /products (pause it: every request is a new arrival).
events_node_toml() {
  node_head_toml "$1" "$2"
  cat <<TOML
[upstreams.shop]
servers = ["127.0.0.1:$3"]
${4:-}
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
}
