#!/usr/bin/env bash
# The main job: installs what RSIO needs, builds it, and runs the server side of the seed
# walk-through on one machine — an appliance on file-backed storage (a 4 GiB sparse file in
# ./state/demo), two existing clients, then: list clients, register tux, create volume
# eisberg, grant it to tux, list grants. Then the client side of the seed on the same machine:
# rsclientd (FUSE + loop frontend) with node tux and server trainator (two loopback paths),
# rsconfig -q/-qvv/-a/-lvv, mkfs.ext4 on /dev/av0/eisberg, mount, write, df -h, while rsadmin
# shows the session and its paths; unmount and detach. Finally the appliance restarts and
# shows that everything persisted. Without root or FUSE the client part is replaced by
# rsio-load (the client library's load tool), with a SKIP line saying why.
#
# Environment: RSIO_DEMO_DIR (default ./state/demo) — removed and recreated on each run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ "$(id -u)" -eq 0 ]; then
  bash scripts/setup-deps.sh
else
  echo "demo: not root, skipping package installation (run scripts/setup-deps.sh as root once)"
fi
scripts/build.sh release

bin=$root/build/release
dir=${RSIO_DEMO_DIR:-$root/state/demo}
export RSIO_SOCKET=$dir/rsiod.sock
export PATH=$bin/appliance:$bin/cli:$bin/rsio:$bin/client:$PATH
port=${RSIO_DEMO_PORT:-5000}

rm -rf "$dir"
mkdir -p "$dir"
daemon_pid=
stop_daemon() {
  [ -n "$daemon_pid" ] || return 0
  kill -TERM "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=
}
client_pid=
cleanup() {
  if [ -n "$client_pid" ]; then
    mountpoint -q "$dir/mnt" 2>/dev/null && umount "$dir/mnt"
    kill "$client_pid" 2>/dev/null || true
    wait "$client_pid" 2>/dev/null || true
  fi
  stop_daemon
}
trap cleanup EXIT

start_daemon() {
  rsiod --state-dir "$dir/state" --socket "$RSIO_SOCKET" "$@" >>"$dir/rsiod.log" 2>&1 &
  daemon_pid=$!
  # Wait (up to 20 s) until the API answers.
  for _ in $(seq 200); do
    if smgr -P >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$daemon_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "demo: rsiod did not become ready; its log:" >&2
  cat "$dir/rsiod.log" >&2
  exit 1
}

show() {
  echo "srv# $*"
  "$@"
}

echo "== starting rsiod on a 4 GiB file-backed default pool in $dir/state"
start_daemon --init-pool-size 4g --listen "127.0.0.1:$port"
smgr -P
echo
echo "== the appliance already serves clients trainee and dummy:"
rsadmin -c trainee -k 0139dfX982 >/dev/null
rsadmin -c dummy -k 1234567890 >/dev/null
smgr -c testvol -S 256m
smgr -c probevol -S 512m
rsadmin -g testvol trainee >/dev/null
rsadmin -g probevol dummy >/dev/null
rsadmin -g probevol trainee >/dev/null
echo
echo "== the seed's server-side walk-through"
show rsadmin -q
echo
show rsadmin -qv
echo
show rsadmin -c tux -k Linuxtag
echo
show rsadmin -qv
echo
show smgr -c eisberg -S 1g
echo
show rsadmin -g eisberg tux
echo
show rsadmin -qa
echo
show smgr -qv
echo
show rsadmin -qA
echo
client_ok=yes
why=""
if [ "$(id -u)" -ne 0 ]; then client_ok=""; why="needs root"; fi
if [ ! -c /dev/fuse ]; then client_ok=""; why="no /dev/fuse"; fi
if [ ! -x "$bin/client/rsclientd" ]; then client_ok=""; why="rsclientd not built (libfuse3-dev)"; fi
if [ -n "$client_ok" ]; then
  echo "== the client side on this machine: rsclientd attaches eisberg as /dev/av0/eisberg"
  export RSCLIENT_SOCKET=$dir/rsclientd.sock
  rsclientd --config "$dir/rsclient.json" --run-dir "$dir/run" --state "$dir/attached.json" \
    >>"$dir/rsclientd.log" 2>&1 &
  client_pid=$!
  for _ in $(seq 200); do rsconfig --show-config >/dev/null 2>&1 && break; sleep 0.05; done
  clt() {
    echo "clt# $*"
    "$@"
  }
  clt rsconfig --set-node tux --key Linuxtag
  clt rsconfig --add-server trainator --address "127.0.0.1:$port" --address "127.0.0.1:$port"
  clt rsconfig -q
  clt rsconfig -qvv
  clt ls -l /dev/av0/eisberg || true
  clt rsconfig -a
  clt ls -l /dev/av0/eisberg
  clt rsconfig -lvv
  clt mkfs -t ext4 -q /dev/av0/eisberg
  mkdir -p "$dir/mnt"
  clt mount /dev/av0/eisberg "$dir/mnt"
  echo "clt# echo 'hello from tux' > $dir/mnt/hello.txt"
  echo "hello from tux" >"$dir/mnt/hello.txt"
  clt dd if=/dev/urandom of="$dir/mnt/data.bin" bs=1M count=64 status=none
  clt sync
  clt df -h "$dir/mnt"
  echo
  show rsadmin -lvvv
  echo
  show rsadmin -qA
  echo
  clt umount "$dir/mnt"
  clt rsconfig -d eisberg
  clt rsconfig -l
  kill "$client_pid"
  wait "$client_pid" || true
  client_pid=
else
  echo "SKIP: the block-device walk-through ($why); showing RSIO with the load tool instead"
  echo "== tux connects over RSIO (127.0.0.1:$port) and writes and verifies eisberg"
  rm -f "$dir/load.stop"
  rsio-load -s "127.0.0.1:$port" -s "127.0.0.1:$port" -n tux -k Linuxtag -V eisberg -m verify \
    -t 60 --stop-file "$dir/load.stop" >"$dir/load.out" 2>&1 &
  load_pid=$!
  for _ in $(seq 200); do
    rsadmin -qA | grep -q " tux " && break
    kill -0 "$load_pid" 2>/dev/null || break
    sleep 0.1
  done
  show rsadmin -lvvv
  echo
  show rsadmin -qA
  touch "$dir/load.stop"
  wait "$load_pid"
  cat "$dir/load.out"
fi
echo
echo "== restarting rsiod: everything above is persisted in $dir/state/rsio.db"
stop_daemon
start_daemon --listen "127.0.0.1:$port"
show rsadmin -qa
show smgr -q
stop_daemon
echo
echo "demo: done. Daemon log: $dir/rsiod.log"
