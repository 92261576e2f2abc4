#!/usr/bin/env bash
# Installs what `make demo` / `make test` / `make bench` need and is missing.
# As root it uses apt-get; otherwise it prints the exact command to run and fails.
#
#   scripts/setup.sh demo    cmake (Pingora's zlib-ng build needs it)
#   scripts/setup.sh test    + redis-server, chromium, chromium-driver (browser test)
#   scripts/setup.sh bench   + wrk, nginx
set -euo pipefail

need=(cmake)
case "${1:-demo}" in
  demo) ;;
  test) need+=(redis-server chromium chromium-driver) ;;
  bench) need+=(redis-server wrk nginx) ;;
  *) echo "usage: $0 demo|test|bench" >&2; exit 2 ;;
esac

# Package -> a file it installs, to tell whether it is there.
probe() {
  case "$1" in
    cmake) echo /usr/bin/cmake ;;
    redis-server) echo /usr/bin/redis-server ;;
    chromium) echo /usr/bin/chromium ;;
    chromium-driver) echo /usr/bin/chromedriver ;;
    wrk) echo /usr/bin/wrk ;;
    nginx) echo /usr/sbin/nginx ;;
  esac
}

missing=()
for p in "${need[@]}"; do
  [ -x "$(probe "$p")" ] || missing+=("$p")
done
if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust from https://rustup.rs first" >&2
  exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  }
  # Debian's nginx package starts a server on :80; benchmarks run their own on free ports.
  if [[ " ${missing[*]} " == *" nginx "* ]]; then
    (nginx -s quit || service nginx stop) >/dev/null 2>&1 || true
  fi
else
  echo "setup: missing ${missing[*]}. Run:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
